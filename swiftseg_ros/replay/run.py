"""The replay loop: a bag's camera images through the node's frame path, scored and timed.

Each image goes through what the node's worker does with a frame, in the same code: the
node's `SegmentationPipeline` (`swiftseg_ros.ros.pipeline`) decodes it, segments it with
the `SegmentationEngine` and makes the output messages with the input header unchanged.
A frame's processing time is that whole job (decode + engine + output messages), as the
node's worker spends it. Buffers for a new input size are prepared before the frame is
timed, as the node does in configure when its `input_size` parameter is set.

Modes:
- `all`: every frame, as fast as possible (accuracy and throughput).
- `realtime`: frames arrive at the bag's own receive times and the node's latest-frame
  policy (`swiftseg_ros.ros.frames.simulate_latest_frame`) decides, from the measured
  processing times, which frames are processed and which are dropped. Only processed
  frames are computed. `ReplayOptions.processing_time` can replace the measured times
  (tests pin the policy with it).

Pipelined (`ReplayOptions.pipelined`, the node's default: on CUDA only): frames go through
the engine's pipelined path as in the node's worker. In `all` mode a frame is launched
before the previous one is finished, as the worker does while frames wait; in `realtime`
mode each frame is flushed at once (the worker's path when no frame waits), since the
policy needs a frame's time when it takes it.

Ground truth (mono8 class ids) is matched to images by header stamp and scored with
`swiftseg_ros.metrics.ConfusionMatrix`. A first pass over the bag reads the stamps (and
arrival times), so that only predictions and labels that will meet are held in memory.

Output messages keep the input's header and are written at the input message's bag
timestamp in both modes, so the output bag lines up with the input bag when both are
played together; the delay a robot would see is in the image ages of the report and of
the /diagnostics messages, which are written at the (simulated) publish times.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from swiftseg_ros import interrupts
from swiftseg_ros.engine.timing import StageWindow
from swiftseg_ros.errors import ConfigError, Terminated
from swiftseg_ros.metrics import ConfusionMatrix
from swiftseg_ros.progress import progress as progress_display
from swiftseg_ros.replay.bagio import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    IMAGE_TYPES,
    BagDamaged,
    BagError,
    BagMessage,
    InputBag,
    MalformedMessage,
    OutputBag,
    deserialize,
    msg_class,
)
from swiftseg_ros.ros.conversions import ImageRejected, decode_compressed, decode_image
from swiftseg_ros.ros.diagnostics import DiagnosticsReporter, rosbags_diagnostic_array
from swiftseg_ros.ros.frames import FrameCounters, simulate_latest_frame
from swiftseg_ros.ros.pipeline import REJECTED, SegmentationPipeline

MODES = ("all", "realtime")
DIAGNOSTICS_TOPIC = "/diagnostics"
# Two frames kept for the pictures (worst, most doubtful) are at least this far apart on
# the bag clock: neighbouring frames of a video look alike and would fill the montage.
SPREAD_S = 1.0
# candidates kept per frame shown (worst, doubtful): the lowest frame of each of this many
# times `worst_frames` spans of SPREAD_S, so that a low stretch cannot crowd out the rest
POOL = 4


@dataclass
class ReplayOptions:
    """What to replay and how; the node's settings come from its parameters."""

    image_topic: str
    label_topic: str | None = None
    mode: str = "all"
    node_name: str = "swiftseg"
    diagnostics_period_s: float = 1.0
    latency_budget_ms: float = 0.0
    min_output_hz: float = 0.0
    montage_frames: int = 4
    worst_frames: int = 3  # the lowest per-frame mIoU, kept for the montage
    progress: bool = True
    # realtime mode: (image index in the bag, measured seconds) -> the seconds the policy
    # uses for that frame; None uses the measured time (tests pin the policy with it)
    processing_time: Callable[[int, float], float] | None = None
    # frames through the engine's pipelined path as the node's worker runs them; None:
    # the node's default (on CUDA only)
    pipelined: bool | None = None
    # called with (record, input RGB, class ids, confidence or None) for every processed
    # frame, outside its timed span (footage replay writes its overlay video with it)
    frame_sink: Callable[[FrameRecord, np.ndarray, np.ndarray, np.ndarray | None], None] \
        | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.diagnostics_period_s <= 0:
            raise ConfigError(f"diagnostics period {self.diagnostics_period_s} s, expected > 0")

    @classmethod
    def for_node(cls, params, **fields) -> ReplayOptions:
        """Options whose diagnostics settings are the node's validated parameters'."""
        return cls(diagnostics_period_s=params.diagnostics_period,
                   latency_budget_ms=params.latency_budget_ms,
                   min_output_hz=params.min_output_hz, **fields)

    def output_topic(self, output: str) -> str:
        return f"/{self.node_name}/{output}"


@dataclass
class FrameRecord:
    """One image message of the bag and what became of it.

    Times are seconds on the bag clock from the first image's receive time: `arrival`
    (its receive time), `start`/`finish` of its processing (in `all` mode the processing
    is placed at its arrival, as if the worker were always free).
    """

    index: int
    bag_ns: int
    stamp_ns: int | None
    arrival: float
    outcome: str = "pending"  # processed, dropped, rejected, failed
    reason: str = ""
    start: float | None = None
    finish: float | None = None
    timings: dict[str, float] | None = None  # ms per stage, with decode/messages/processing
    miou: float | None = None  # this frame's own mIoU, when it was scored against ground truth
    confidence: float | None = None  # mean winning-class probability, when it was computed

    @property
    def age_ms(self) -> float | None:
        """Publish time minus header stamp (ms), the image age a subscriber would see."""
        if self.finish is None or self.stamp_ns is None or self.outcome != "processed":
            return None
        stamp = self.arrival + (self.stamp_ns - self.bag_ns) / 1e9  # on the same clock
        return (self.finish - stamp) * 1000.0


# decodable image messages with their records, in bag order (Replay._decoded_images)
DecodedImages = Iterator[tuple[FrameRecord, object]]


@dataclass
class Sample:
    """A frame kept for the pictures: input RGB, the predicted class ids, the ground-truth
    ids and the confidence (uint8, 255 = certain) where there are, its arrival on the bag
    clock (s), its own mIoU and mean confidence (0-1) where known."""

    index: int
    image: np.ndarray
    label: np.ndarray
    ground_truth: np.ndarray | None = None
    confidence: np.ndarray | None = None
    arrival: float = 0.0
    miou: float | None = None
    mean_confidence: float | None = None


@dataclass
class GroundTruthCounts:
    messages: int = 0
    matched: int = 0            # scored against a processed frame's prediction
    without_image: int = 0      # no image message with its header stamp
    image_not_processed: int = 0  # its image was dropped, rejected or failed
    rejected: int = 0           # undecodable, not mono8, or class ids out of range
    reasons: Counter = field(default_factory=Counter)


@dataclass
class ReplayResult:
    options: ReplayOptions
    image_type: str
    records: list[FrameRecord]
    messages_read: int
    damage: str | None
    wall_s: float
    prepare_ms: float
    confusion: ConfusionMatrix | None
    ground_truth: GroundTruthCounts | None
    samples: list[Sample]
    output_counts: dict[str, int]
    class_names: list[str]
    palette: np.ndarray
    # Ctrl-C or SIGTERM stopped the run: the records are the frames finished before it
    interrupted: bool = False
    interrupted_by: str | None = None  # "SIGINT" or "SIGTERM"
    expected_frames: int = 0    # image messages the bag holds (what a full run would read)
    worst: list[Sample] = field(default_factory=list)  # lowest per-frame mIoU first
    doubtful: list[Sample] = field(default_factory=list)  # lowest mean confidence first
    # pixels of each predicted class over the processed frames
    class_pixels: np.ndarray | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.records if r.outcome == outcome)

    @property
    def rejection_reasons(self) -> Counter:
        return Counter(r.reason for r in self.records if r.outcome == "rejected")

    @property
    def failure_reasons(self) -> Counter:
        return Counter(r.reason for r in self.records if r.outcome == "failed")


def check_topics(bag: InputBag, image_topic: str, label_topic: str | None) -> str:
    """The image topic's message type, or BagError naming what the bag holds instead."""
    images = bag.image_topics()
    listing = ", ".join(f"{t} ({bag.topics[t].msgtype.rsplit('/', 1)[-1]})" for t in images) \
        or "none"
    info = bag.topics.get(image_topic)
    if info is None:
        raise BagError(f"{bag.path}: no topic {image_topic!r}; image topics in the bag: "
                       f"{listing}")
    if info.msgtype not in IMAGE_TYPES:
        raise BagError(f"{bag.path}: topic {image_topic} holds {info.msgtype}, expected "
                       f"{IMAGE_TYPE} or {COMPRESSED_IMAGE_TYPE}; image topics in the bag: "
                       f"{listing}")
    if label_topic is not None:
        label = bag.topics.get(label_topic)
        if label is None:
            raise BagError(f"{bag.path}: no ground-truth topic {label_topic!r}; image topics "
                           f"in the bag: {listing}")
        if label.msgtype != IMAGE_TYPE:
            raise BagError(f"{bag.path}: ground-truth topic {label_topic} holds "
                           f"{label.msgtype}, expected {IMAGE_TYPE} (mono8 class ids)")
        if label_topic == image_topic:
            raise BagError(f"the ground-truth topic and the image topic are both "
                           f"{image_topic}; give the label topic of the bag")
    return info.msgtype


def stamp_ns(msg) -> int:
    """A message header's stamp in nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def read_ground_truth(message) -> tuple[int, np.ndarray]:
    """A ground-truth message's stamp and class ids, or MalformedMessage / ImageRejected
    when it is not a mono8 image."""
    msg = deserialize(message)
    if str(msg.encoding).lower() != "mono8":
        raise ImageRejected(f"encoding {msg.encoding!r}, expected mono8 class ids")
    # a copy: the decoded view is read-only (message bytes) and often kept waiting
    return stamp_ns(msg), decode_image(msg)[0].copy()


def at_label_size(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The prediction at its ground truth's resolution (output_size "network" publishes
    labels at the network's)."""
    if prediction.shape == label.shape:
        return prediction
    return cv2.resize(prediction, (label.shape[1], label.shape[0]),
                      interpolation=cv2.INTER_NEAREST)


def _as_rgb(frame: np.ndarray, pixel_format: str) -> np.ndarray:
    """A decoded frame as RGB for the montage (display only; the engine does its own)."""
    if pixel_format == "mono8":
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_GRAY2RGB)
    codes = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
             "bgra8": cv2.COLOR_BGRA2RGB}
    if pixel_format in codes:
        return cv2.cvtColor(np.ascontiguousarray(frame), codes[pixel_format])
    return np.array(frame, copy=True)


@dataclass
class _Index:
    """What the first pass learns: image receive times and stamps, ground-truth stamps."""

    image_bag_ns: list[int] = field(default_factory=list)
    image_stamps: list[int | None] = field(default_factory=list)  # None: undecodable
    label_stamps: set[int] = field(default_factory=set)


class Replay:
    """One replay of one bag through one engine; `run()` returns a ReplayResult."""

    def __init__(self, bag: InputBag, engine, options: ReplayOptions,
                 output: OutputBag | None = None):
        self.bag = bag
        self.engine = engine
        self.options = options
        self.output = output
        self.image_type = check_topics(bag, options.image_topic, options.label_topic)
        compressed = self.image_type == COMPRESSED_IMAGE_TYPE
        self.pipeline = SegmentationPipeline(engine, msg_class(IMAGE_TYPE), compressed=compressed,
                                             pipelined=options.pipelined)
        # the pipeline's own decoder, called directly where replay needs the pixels
        self._decode = decode_compressed if compressed else decode_image
        self.records: list[FrameRecord] = []
        self.messages_read = 0
        self.damage: str | None = None
        self.prepare_ms = 0.0
        self._t0: int | None = None
        self._samples: list[Sample] = []
        self._sample_targets: list[int] = []
        self.confusion: ConfusionMatrix | None = None
        self.gt: GroundTruthCounts | None = None
        self._index: _Index | None = None
        self._image_stamps: set[int] = set()
        # stamps whose ground truth will come (first pass) -> prediction waiting for it
        self._waiting_predictions: dict[int, np.ndarray] = {}
        # stamps whose image will come -> ground truth waiting for it
        self._waiting_labels: dict[int, np.ndarray] = {}
        self._settled_stamps: set[int] = set()  # images already processed or not
        # candidates of lowest per-frame mIoU and of lowest mean confidence, by time span
        self._worst: dict[int, Sample] = {}
        self._doubtful: dict[int, Sample] = {}
        self._class_pixels = np.zeros(max(1, int(engine.num_classes)), dtype=np.int64)
        self._unbilled_s = 0.0  # pipelined: worker time not yet charged to a finished frame

    # ------------------------------------------------------------------ driver

    def run(self) -> ReplayResult:
        opts = self.options
        started = time.perf_counter()
        if opts.label_topic is not None:
            self.confusion = ConfusionMatrix(self.engine.num_classes)
            self.gt = GroundTruthCounts()
        if opts.label_topic is not None or opts.mode == "realtime":
            self._index = self._first_pass()
            self._image_stamps = {s for s in self._index.image_stamps if s is not None}
        total = len(self._index.image_bag_ns) if self._index else \
            self.bag.topics[opts.image_topic].count
        if total and opts.montage_frames > 0:
            count = min(opts.montage_frames, total)
            self._sample_targets = sorted({int(i * total / count) for i in range(count)})
        interrupted_by = None
        try:
            self._prepare_first()
        except KeyboardInterrupt as exc:  # during the warm-up: a report of no frame
            interrupted_by = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        with progress_display(total=total, unit="frame", desc="replay",
                              enabled=opts.progress and interrupted_by is None) as bar:
            self._bar = bar
            images = self._decoded_images(self._stream())
            try:
                if interrupted_by is None:
                    if opts.mode == "all":
                        self._run_all(images)
                    else:
                        self._run_realtime(images)
                    self._drain(images)
            except KeyboardInterrupt as exc:
                interrupted_by = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
                # Ctrl-C or SIGTERM: what was finished is reported (marked incomplete); the
                # frame in the engine when it came has no outcome and is left out (in
                # realtime mode a pipelined one too: `all` mode has finished it already)
                self.pipeline.flush()
                self.records = [r for r in self.records if r.outcome != "pending"]
        interrupted = interrupted_by is not None
        self._finish_ground_truth()
        self._write_diagnostics()
        wall_s = time.perf_counter() - started
        return ReplayResult(
            options=opts,
            image_type=self.image_type,
            records=self.records,
            messages_read=self.messages_read,
            damage=self.damage,
            wall_s=wall_s,
            prepare_ms=self.prepare_ms,
            confusion=self.confusion,
            ground_truth=self.gt,
            samples=self._samples,
            output_counts=dict(self.output.counts) if self.output else {},
            class_names=list(self.engine.class_names),
            palette=np.asarray(self.engine.palette, dtype=np.uint8),
            interrupted=interrupted,
            interrupted_by=interrupted_by,
            expected_frames=total,
            worst=self._spread_lowest(self._worst, "miou"),
            doubtful=self._spread_lowest(self._doubtful, "mean_confidence"),
            class_pixels=self._class_pixels,
        )

    def _topics(self) -> list[str]:
        topics = [self.options.image_topic]
        if self.options.label_topic is not None:
            topics.append(self.options.label_topic)
        return topics

    def _stream(self) -> Iterator[BagMessage]:
        """The bag's image and label messages; stops (keeping `damage`) where storage fails."""
        if self.bag.damage and self.damage is None:
            self.damage = self.bag.damage
        try:
            for message in self.bag.messages(self._topics()):
                self.messages_read += 1
                yield message
        except BagDamaged as exc:
            self.damage = str(exc)

    def _first_pass(self) -> _Index:
        """Stamps and receive times, read up to where the bag is readable (the second pass
        stops at the same place and records the damage)."""
        index = _Index()
        try:
            for message in self.bag.messages(self._topics()):
                try:
                    stamp = stamp_ns(deserialize(message))
                except MalformedMessage:
                    stamp = None
                if message.topic == self.options.image_topic:
                    index.image_bag_ns.append(message.timestamp)
                    index.image_stamps.append(stamp)
                elif stamp is not None:
                    index.label_stamps.add(stamp)
        except BagDamaged:
            pass
        return index

    # ------------------------------------------------------------------ modes

    def _decoded_images(self, stream: Iterator[BagMessage]) -> DecodedImages:
        """The stream's decodable images as (record, message), in bag order; ground truth
        is taken and undecodable images are recorded on the way."""
        for message in stream:
            interrupts.raise_pending()  # a signal a C callback swallowed while preparing
            if message.topic != self.options.image_topic:
                self._ground_truth(message)
                continue
            record, msg = self._new_record(message)
            if msg is not None:
                yield record, msg

    def _run_all(self, images: DecodedImages) -> None:
        if self.pipeline.pipelined:
            self._run_all_pipelined(images)
            return
        for record, msg in images:
            duration = self._process(record, msg)
            record.start, record.finish = record.arrival, record.arrival + duration
            self._settle(record)

    def _run_all_pipelined(self, images: DecodedImages) -> None:
        """`all` mode as the pipelined worker runs with a frame always waiting: each frame
        is launched before the one in flight is finished; the last one is flushed at the
        end of the bag, or at Ctrl-C (it was launched, so it is finished and kept)."""
        try:
            for record, msg in images:
                self._launch(record, msg)
        finally:
            self._flush()

    def _run_realtime(self, images: DecodedImages) -> None:
        index = self._index
        # Undecodable messages never reach a node (its middleware drops them): no arrivals.
        frames = [i for i, stamp in enumerate(index.image_stamps) if stamp is not None]
        t0 = index.image_bag_ns[0] if index.image_bag_ns else 0
        arrivals = [(index.image_bag_ns[i] - t0) / 1e9 for i in frames]
        taken: list[FrameRecord] = []

        def next_image() -> tuple[FrameRecord, object]:
            image = next(images, None)
            if image is not None:
                return image
            raise BagError(f"{self.bag.path}: the bag held fewer images on the second read "
                           f"than on the first ({len(self.records)}); is it being written?")

        def process(position: int) -> float:
            """The policy's worker takes frame `position`; the frames skipped were dropped."""
            record, msg = next_image()
            while record.index != frames[position]:
                record.outcome = "dropped"
                self._settle(record)
                record, msg = next_image()
            measured = (self._process_flushed if self.pipeline.pipelined
                        else self._process)(record, msg)
            self._settle(record)
            taken.append(record)
            if self.options.processing_time is not None:
                return float(self.options.processing_time(record.index, measured))
            return measured

        try:
            outcomes = simulate_latest_frame(arrivals, process)
        except KeyboardInterrupt:
            # the policy places frames only when it returns: place the finished ones as
            # `all` mode does, on arrival
            for record in taken:
                record.start = record.arrival
                record.finish = record.arrival + record.timings["processing"] / 1000.0
            raise
        placed = [outcome for outcome in outcomes if outcome.processed]
        for record, outcome in zip(taken, placed, strict=True):
            record.start, record.finish = outcome.start, outcome.finish

    def _drain(self, images: DecodedImages) -> None:
        """What follows the last frame the policy took: dropped (ground truth and
        undecodable images are recorded by `_decoded_images`)."""
        for record, _ in images:
            record.outcome = "dropped"
            self._settle(record)

    # ------------------------------------------------------------------ one frame

    def _new_record(self, message: BagMessage):
        """A record for an image message, and the decoded message (None: undecodable)."""
        if self._t0 is None:
            self._t0 = message.timestamp
        record = FrameRecord(len(self.records), message.timestamp, None,
                             (message.timestamp - self._t0) / 1e9)
        self.records.append(record)
        self._bar.update(1)
        try:
            msg = deserialize(message)
        except MalformedMessage as exc:
            record.outcome, record.reason = "rejected", str(exc)
            return record, None
        record.stamp_ns = stamp_ns(msg)
        return record, msg

    def _prepare_first(self) -> None:
        """Prepare the engine for the first image before the progress display starts, with
        a line saying so: the warm-up (seconds to a minute while the engine times its
        candidates) is then not read as a slow first frame."""
        try:
            for message in self.bag.messages([self.options.image_topic]):
                try:
                    msg = deserialize(message)
                except MalformedMessage:
                    continue
                if self.options.progress:
                    size = f" {msg.width}x{msg.height}" if self.image_type == IMAGE_TYPE else ""
                    print(f"replay: preparing the engine for the{size} images (buffers, and "
                          "timing its candidates the first time)", file=sys.stderr, flush=True)
                self._prepare_for(msg)
                return
        except BagDamaged:
            return

    def _prepare_for(self, msg) -> None:
        """Prepare the engine for this frame's size if it is new, outside the timed span.

        An Image says its size; a CompressedImage is decoded to learn it, on the first
        frame only (a later size change is prepared inside the frame, as in the node).
        """
        if self.image_type == IMAGE_TYPE:
            if self.engine.input_size == (msg.width, msg.height):
                return
        elif self.engine.input_size is not None:
            return
        try:
            frame, pixel_format = self._decode(msg)
        except ImageRejected:
            return  # rejected, with its reason, by the timed attempt
        height, width = frame.shape[:2]
        if self.pipeline.pipelined:
            self._flush()  # preparing drops a frame still in flight
        started = time.perf_counter()
        try:
            self.pipeline.prepare(width, height, pixel_format)
        except (*REJECTED, ConfigError):
            return  # a size the engine refuses: the timed attempt rejects the frame
        self.prepare_ms += (time.perf_counter() - started) * 1000.0

    def _process(self, record: FrameRecord, msg) -> float:
        """The node worker's job on one frame; returns its duration in seconds."""
        self._prepare_for(msg)
        started = time.perf_counter()
        try:
            segmented = self.pipeline.segment(msg)
            segmented_at = time.perf_counter()
            messages = self.pipeline.output_messages(segmented)
        except REJECTED as exc:
            record.outcome, record.reason = "rejected", str(exc)
            return time.perf_counter() - started
        except Exception as exc:  # as in the node's worker: a failed frame does not stop it
            record.outcome, record.reason = "failed", f"{type(exc).__name__}: {exc}"
            return time.perf_counter() - started
        finished = time.perf_counter()
        timings = dict(segmented.result.timings)
        timings["decode"] = (segmented_at - started) * 1000.0 - timings["total"]
        timings["messages"] = (finished - segmented_at) * 1000.0
        timings["processing"] = (finished - started) * 1000.0
        self._processed(record, msg, segmented, messages, timings)
        return finished - started

    def _processed(self, record: FrameRecord, msg, segmented, messages, timings) -> None:
        """Record a segmented frame: its timings, output messages and prediction."""
        record.outcome, record.timings = "processed", timings
        if self.output is not None:
            for name, out in messages.items():
                self.output.write(self.options.output_topic(name), record.bag_ns, out)
        self._prediction(record, segmented.result.label, msg, segmented.pixel_format,
                         segmented.result.confidence)

    # ------------------------------------------------------------------ pipelined

    # A pipelined frame is finished one call late (the frame after it is launched first),
    # so its record and message travel with it as the engine's tag. Its `processing` time
    # is the worker time since the previous frame finished (the interval between outputs,
    # whose sum is the run's processing time); its engine `total` spans launch to collect.

    def _launch(self, record: FrameRecord, msg) -> float:
        """Launch this frame and finish the one in flight; returns the seconds spent. A
        rejected frame flushes the one in flight first, as the node's worker does."""
        self._prepare_for(msg)
        started = time.perf_counter()
        try:
            done = self.pipeline.launch(msg, tag=(record, msg))
        except REJECTED as exc:
            record.outcome, record.reason = "rejected", str(exc)
        except Exception as exc:  # as in the node's worker: a failed frame does not stop it
            record.outcome, record.reason = "failed", f"{type(exc).__name__}: {exc}"
        else:
            self._unbilled_s += time.perf_counter() - started
            self._finish(done)
            return time.perf_counter() - started
        elapsed = time.perf_counter() - started
        record.start, record.finish = record.arrival, record.arrival + elapsed
        if record.outcome == "rejected":
            self._flush()
        self._settle(record)
        return elapsed

    def _flush(self) -> None:
        """Finish the frame in flight, if any."""
        started = time.perf_counter()
        done = self.pipeline.flush()
        self._unbilled_s += time.perf_counter() - started
        self._finish(done)

    def _process_flushed(self, record: FrameRecord, msg) -> float:
        """Realtime mode's pipelined job: the policy needs each frame's time when it takes
        the frame, so the frame is flushed at once (the worker's path with no frame
        waiting). Returns its processing time in seconds."""
        elapsed = self._launch(record, msg)
        if record.outcome == "pending":
            self._flush()
        return record.timings["processing"] / 1000.0 if record.outcome == "processed" \
            else elapsed

    def _finish(self, done) -> None:
        """Record a pipelined frame whose result has come (None: no frame was in flight)."""
        if done is None:
            return
        (record, msg), segmented = done
        started = time.perf_counter()
        try:
            messages = self.pipeline.output_messages(segmented)
        except Exception as exc:
            record.outcome, record.reason = "failed", f"{type(exc).__name__}: {exc}"
            messages = None
        finished = time.perf_counter()
        processing, self._unbilled_s = self._unbilled_s + finished - started, 0.0
        record.start, record.finish = record.arrival, record.arrival + processing
        if messages is not None:
            timings = dict(segmented.result.timings)
            timings["messages"] = (finished - started) * 1000.0
            timings["processing"] = processing * 1000.0
            self._processed(record, msg, segmented, messages, timings)
        self._settle(record)

    def _prediction(self, record: FrameRecord, label: np.ndarray, msg, pixel_format,
                    confidence: np.ndarray | None = None) -> None:
        stamp = record.stamp_ns
        counts = np.bincount(label.ravel(), minlength=len(self._class_pixels))
        self._class_pixels += counts[:len(self._class_pixels)]
        if confidence is not None:
            record.confidence = float(confidence.mean()) / 255.0
        if self.options.frame_sink is not None:
            frame, _ = self._decode(msg)  # again, for display only
            self.options.frame_sink(record, _as_rgb(frame, pixel_format), label, confidence)
        waiting = self._waiting_labels.pop(stamp, None)
        if waiting is not None:
            self._score(label, waiting, record.index, msg, pixel_format)
        elif self._index is not None and stamp in self._index.label_stamps:
            # the message too: should the frame score among the worst, the montage shows it
            self._waiting_predictions[stamp] = (label.copy(), record.index, msg, pixel_format)
        elif confidence is not None and self.options.label_topic is None:
            self._keep_lowest(self._doubtful, "mean_confidence", record.confidence,
                              record.index, lambda: self._sample(record.index, label, msg,
                                                                 pixel_format, None, confidence))
        targets = self._sample_targets
        if targets and record.index >= targets[0]:
            while targets and record.index >= targets[0]:
                targets.pop(0)
            self._samples.append(self._sample(record.index, label, msg, pixel_format, waiting,
                                              confidence))
            self._samples[-1].miou = record.miou

    def _sample(self, index: int, label: np.ndarray, msg, pixel_format,
                ground_truth: np.ndarray | None, confidence: np.ndarray | None = None
                ) -> Sample:
        frame, _ = self._decode(msg)  # again, for display only
        record = self.records[index]
        return Sample(index, _as_rgb(frame, pixel_format), label.copy(),
                      None if ground_truth is None else ground_truth.copy(),
                      None if confidence is None else confidence.copy(), record.arrival,
                      record.miou, record.confidence)

    def _keep_lowest(self, kept: dict[int, Sample], key: str, score: float, index: int,
                     make: Callable[[], Sample]) -> None:
        """Keep frame `index` as a candidate of lowest `key`: the lowest frame of each
        SPREAD_S span of bag time, in at most POOL x `worst_frames` spans (the highest
        candidate goes first). `_spread_lowest` picks the frames shown from them."""
        limit = self.options.worst_frames
        if limit <= 0:
            return
        span = int(self.records[index].arrival // SPREAD_S)
        current = kept.get(span)
        if current is not None and getattr(current, key) <= score:
            return
        if current is None and len(kept) >= POOL * limit:
            highest = max(kept, key=lambda s: getattr(kept[s], key))
            if getattr(kept[highest], key) <= score:
                return
            del kept[highest]
        kept[span] = make()

    def _spread_lowest(self, kept: dict[int, Sample], key: str) -> list[Sample]:
        """The `worst_frames` candidates of lowest `key`, lowest first, no two within
        SPREAD_S of bag time."""
        chosen: list[Sample] = []
        for sample in sorted(kept.values(), key=lambda s: getattr(s, key)):
            if len(chosen) < self.options.worst_frames and all(
                    abs(sample.arrival - c.arrival) >= SPREAD_S for c in chosen):
                chosen.append(sample)
        return chosen

    def _settle(self, record: FrameRecord) -> None:
        """The frame's fate is known: ground truth waiting for an unprocessed frame is done."""
        if record.stamp_ns is None:
            return
        self._settled_stamps.add(record.stamp_ns)
        if record.outcome != "processed" and self.gt is not None:
            if self._waiting_labels.pop(record.stamp_ns, None) is not None:
                self.gt.image_not_processed += 1

    # ------------------------------------------------------------------ ground truth

    def _ground_truth(self, message: BagMessage) -> None:
        gt = self.gt
        gt.messages += 1
        try:
            stamp, label = read_ground_truth(message)
        except (MalformedMessage, ImageRejected) as exc:
            gt.rejected += 1
            gt.reasons[str(exc)] += 1
            return
        if stamp not in self._image_stamps:
            gt.without_image += 1
            return
        waiting = self._waiting_predictions.pop(stamp, None)
        if waiting is not None:
            prediction, index, image_msg, pixel_format = waiting
            self._score(prediction, label, index, image_msg, pixel_format)
            self._attach_sample_ground_truth(stamp, label)
        elif stamp in self._settled_stamps:
            gt.image_not_processed += 1
        else:
            self._waiting_labels[stamp] = label

    def _score(self, prediction: np.ndarray, label: np.ndarray, index: int, msg,
               pixel_format) -> None:
        """Count a prediction against its ground truth, in the run's matrix and in the
        frame's own (its mIoU places it among the worst frames or not)."""
        prediction = at_label_size(prediction, label)
        frame = ConfusionMatrix(self.confusion.num_classes, self.confusion.ignore_index)
        try:
            frame.update(prediction, label)
        except ValueError as exc:
            self.gt.rejected += 1
            self.gt.reasons[str(exc)] += 1
            return
        self.confusion.merge(frame)
        self.gt.matched += 1
        miou = frame.miou()
        if np.isnan(miou):
            return
        record = self.records[index]
        record.miou = miou
        for sample in self._samples:
            if sample.index == index:
                sample.miou = miou
        self._keep_lowest(self._worst, "miou", miou, index,
                          lambda: self._sample(index, prediction, msg, pixel_format, label))

    def _attach_sample_ground_truth(self, stamp: int, label: np.ndarray) -> None:
        for sample in self._samples:
            record = self.records[sample.index]
            if record.stamp_ns == stamp and sample.ground_truth is None:
                sample.ground_truth = label.copy()

    def _finish_ground_truth(self) -> None:
        if self.gt is None:
            return
        # labels whose image never came (the bag ended or was damaged first)
        self.gt.without_image += len(self._waiting_labels)
        self._waiting_labels.clear()
        self._waiting_predictions.clear()

    # ------------------------------------------------------------------ diagnostics

    def _write_diagnostics(self) -> None:
        """/diagnostics as the node would have published them, on the bag clock.

        Rebuilt from the frame records after the run, because in realtime mode a frame's
        publish time is known only once the policy has placed it.
        """
        if self.output is None or not self.records or self._t0 is None:
            return
        opts = self.options
        reporter = DiagnosticsReporter(name=f"{opts.node_name}: segmentation",
                                       hardware_id=str(self.engine.stats().get("device", "")))
        window = StageWindow()
        events = []  # (time s, order, kind, record)
        for record in self.records:
            events.append((record.arrival, 0, "arrive", record))
            if record.outcome == "dropped":
                events.append((self._drop_time(record), 1, "drop", record))
            elif record.finish is not None or record.outcome in ("rejected", "failed"):
                events.append((record.finish if record.finish is not None else record.arrival,
                               1, "done", record))
        events.sort(key=lambda e: (e[0], e[1], e[3].index))
        end = events[-1][0]
        period = opts.diagnostics_period_s
        ticks = [period * (k + 1) for k in range(int(end // period) + 1)]
        static = self._static_engine_stats()
        counts = Counter()
        position = 0
        for tick in ticks:
            while position < len(events) and events[position][0] <= tick:
                when, _, kind, record = events[position]
                position += 1
                if kind == "arrive":
                    counts["received"] += 1
                    reporter.frame_received(when, None if record.stamp_ns is None
                                            else (record.stamp_ns - self._t0) / 1e9)
                elif kind == "drop":
                    counts["dropped"] += 1
                else:
                    counts[record.outcome] += 1
                    if record.outcome == "processed":
                        reporter.frame_published(when, (record.stamp_ns - self._t0) / 1e9)
                        window.add({k: record.timings[k] for k in _ENGINE_STAGES}, when)
            counters = FrameCounters(
                received=counts["received"], processed=counts["processed"],
                dropped=counts["dropped"], rejected=counts["rejected"],
                failed=counts["failed"],
                in_flight=counts["received"] - counts["processed"] - counts["dropped"]
                - counts["rejected"] - counts["failed"])
            stats = {**window.summary(), **static}
            status = reporter.report(tick, counters, stats,
                                     latency_budget_ms=opts.latency_budget_ms,
                                     min_output_hz=opts.min_output_hz)
            stamp_ns = self._t0 + round(tick * 1e9)
            self.output.write(DIAGNOSTICS_TOPIC, stamp_ns,
                              rosbags_diagnostic_array(status, stamp_ns))

    def _drop_time(self, record: FrameRecord) -> float:
        """A dropped frame is replaced in the slot when the next decodable frame arrives."""
        for index in range(record.index + 1, len(self.records)):
            if self.records[index].stamp_ns is not None:
                return self.records[index].arrival
        return record.arrival

    def _static_engine_stats(self) -> dict:
        """The engine's settings as diagnostics reads them (the engine's own stats shape)."""
        stats = self.engine.stats()
        return {key: stats[key] for key in ("network", "device", "precision", "cuda_graph",
                                            "backend", "choices", "input_size",
                                            "inference_size", "memory")
                if key in stats}

_ENGINE_STAGES = ("host_copy", "upload", "preprocess", "forward", "postprocess", "download",
                  "total")
