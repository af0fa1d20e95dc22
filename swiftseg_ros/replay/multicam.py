"""Replay of a bag with several cameras through the node's multi-camera path.

The same code as the node with its `cameras` parameter: the `MultiCameraPipeline`
(`swiftseg_ros.ros.multicamera`) decodes each batch frame by frame, runs one forward pass
per image size (`engine.infer_batch`) and builds each camera's output messages with that
camera's header. Which frames make up a batch is decided as in the node:

- `realtime`: frames arrive at their bag receive times and the node's scheduler
  (`swiftseg_ros.ros.scheduler.simulate_cameras`: a latest-frame slot per camera, round
  robin, every waiting frame in one batch) decides from the measured batch times which
  frames are processed together and which are dropped.
- `all`: every frame, as fast as possible: consecutive frames of different cameras in bag
  order form a batch (a camera's next frame starts the next batch), as a worker that
  always finds every camera's frame waiting would take them.

Per camera: the frame counts, the processing time of the batches its frames were in, the
image ages (realtime), and accuracy against that camera's ground truth (mono8 class ids
with the image's header stamp) where a label topic is given. The output bag holds each
camera's topics `/<node>/<camera>/label` etc., every message with its own image's header,
written at the image's bag time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swiftseg_ros import interrupts
from swiftseg_ros.cli import write_json
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.metrics import ConfusionMatrix
from swiftseg_ros.progress import progress as progress_display
from swiftseg_ros.replay.bagio import (
    IMAGE_TYPE,
    BagDamaged,
    BagError,
    InputBag,
    MalformedMessage,
    OutputBag,
    deserialize,
    msg_class,
    open_bag,
)
from swiftseg_ros.replay.plots import write_cameras_timeline
from swiftseg_ros.replay.run import (
    MODES,
    at_label_size,
    check_topics,
    read_ground_truth,
    stamp_ns,
)
from swiftseg_ros.replay.session import BAG_DIR, engine_summary, prepare_out_dir
from swiftseg_ros.ros.cameras import camera_topics, check_camera_name, check_camera_names
from swiftseg_ros.ros.conversions import ImageRejected
from swiftseg_ros.ros.multicamera import MultiCameraPipeline
from swiftseg_ros.ros.pipeline import REJECTED
from swiftseg_ros.ros.scheduler import simulate_cameras

_IMAGE_SUFFIX = re.compile(r"(/image(_raw|_rect(_color)?)?)?(/compressed)?$")


@dataclass(frozen=True)
class CameraStream:
    """One camera of the bag: its name (the node's camera name), image and label topics."""

    camera: str
    image_topic: str
    label_topic: str | None = None


def camera_name_of(topic: str) -> str:
    """The camera name a topic suggests: /drone/front/image_raw -> drone/front."""
    name = _IMAGE_SUFFIX.sub("", topic.strip("/")).strip("/")
    return name


def streams_from_topics(image_topics: Sequence[str],
                        label_topics: Sequence[str] = ()) -> list[CameraStream]:
    """Streams for `--image-topic` given several times, each camera named after its topic
    (`camera_name_of`); `--label-topic`s pair with the image topics in order."""
    if label_topics and len(label_topics) != len(image_topics):
        raise ConfigError(f"--label-topic given {len(label_topics)} times for "
                          f"{len(image_topics)} --image-topic: give one per image topic, in "
                          "the same order")
    names = []
    for topic in image_topics:
        name = camera_name_of(topic)
        try:
            names.append(check_camera_name(name))
        except ConfigError:
            raise ConfigError(f"--image-topic {topic}: no camera name can be made of it "
                              f"({name!r}); use --cameras with the node's topic names") from None
    try:
        check_camera_names(names, max_cameras=None)
    except ConfigError:
        raise ConfigError(f"--image-topic: topics {', '.join(image_topics)} give camera names "
                          f"{', '.join(names)}, which repeat; give distinct topics") from None
    labels = list(label_topics) or [None] * len(image_topics)
    return [CameraStream(name, topic, label)
            for name, topic, label in zip(names, image_topics, labels, strict=True)]


def streams_from_cameras(bag: InputBag, cameras: Sequence[str],
                         label_topics: Sequence[str] = ()) -> list[CameraStream]:
    """Streams for `--cameras`: each camera's image topic derived the node's way, /C/image,
    or /C/image/compressed where the bag holds that instead."""
    names = check_camera_names(list(cameras), max_cameras=None)
    if label_topics and len(label_topics) != len(names):
        raise ConfigError(f"--label-topic given {len(label_topics)} times for {len(names)} "
                          "cameras: give one per camera, in the order of --cameras")
    streams = []
    for index, name in enumerate(names):
        raw = "/" + camera_topics(name).image
        compressed = "/" + camera_topics(name, compressed=True).image
        topic = compressed if raw not in bag.topics and compressed in bag.topics else raw
        streams.append(CameraStream(name, topic,
                                    label_topics[index] if label_topics else None))
    return streams


@dataclass
class MultiReplayOptions:
    streams: list[CameraStream]
    mode: str = "all"
    node_name: str = "swiftseg"
    progress: bool = True
    # realtime mode: (camera frame indices of a batch, measured seconds) -> the seconds the
    # policy uses for that batch; None uses the measured time (tests pin the policy)
    batch_time: object = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not self.streams:
            raise ConfigError("no cameras to replay")

    def output_topic(self, camera: str, output: str) -> str:
        return f"/{self.node_name}/{camera}/{output}"


@dataclass
class CameraFrame:
    """One image message of a camera and what became of it (times in seconds on the bag
    clock from the first image's receive time)."""

    index: int            # among all cameras' image messages, in bag order
    camera: str
    bag_ns: int
    stamp_ns: int | None
    arrival: float
    outcome: str = "pending"  # processed, dropped, rejected, failed
    reason: str = ""
    start: float | None = None
    finish: float | None = None
    batch_size: int = 0

    @property
    def age_ms(self) -> float | None:
        if self.finish is None or self.stamp_ns is None or self.outcome != "processed":
            return None
        stamp = self.arrival + (self.stamp_ns - self.bag_ns) / 1e9
        return (self.finish - stamp) * 1000.0


@dataclass
class CameraScore:
    """A camera's ground truth: the matrix and the matching counts."""

    confusion: ConfusionMatrix
    messages: int = 0
    matched: int = 0
    rejected: int = 0


@dataclass
class MultiReplayResult:
    options: MultiReplayOptions
    frames: list[CameraFrame]
    scores: dict[str, CameraScore]
    batches: dict[int, dict[str, float]]
    output_counts: dict[str, int]
    messages_read: int
    damage: str | None
    wall_s: float
    prepare_ms: float = 0.0
    interrupted: bool = False
    class_names: list[str] = field(default_factory=list)


class MultiReplay:
    """One replay of a multi-camera bag through one engine; `run()` returns the result."""

    def __init__(self, bag: InputBag, engine, options: MultiReplayOptions,
                 output: OutputBag | None = None):
        self.bag = bag
        self.engine = engine
        self.options = options
        self.output = output
        types = {stream.camera: check_topics(bag, stream.image_topic, stream.label_topic)
                 for stream in options.streams}
        if len(set(types.values())) > 1:
            raise BagError(f"{bag.path}: the cameras' topics mix Image and CompressedImage "
                           f"({', '.join(f'{c}: {t}' for c, t in types.items())}); the node "
                           "takes one transport for all its cameras")
        self._camera_of = {stream.image_topic: stream.camera for stream in options.streams}
        self._label_camera = {stream.label_topic: stream.camera for stream in options.streams
                              if stream.label_topic}
        self.pipeline = MultiCameraPipeline(
            engine, msg_class(IMAGE_TYPE), [s.camera for s in options.streams],
            compressed=next(iter(types.values())) != IMAGE_TYPE,
            node_name=options.node_name)
        self.frames: list[CameraFrame] = []
        self.scores = {stream.camera: CameraScore(ConfusionMatrix(engine.num_classes))
                       for stream in options.streams if stream.label_topic}
        self.messages_read = 0
        self.damage: str | None = None
        self._t0: int | None = None
        self._labels: dict[tuple[str, int], np.ndarray] = {}
        self._predictions: dict[tuple[str, int], np.ndarray] = {}
        self._prepared_cameras: set[str] = set()
        self.prepare_ms = 0.0

    def _topics(self) -> list[str]:
        return [*self._camera_of, *self._label_camera]

    def run(self) -> MultiReplayResult:
        started = time.perf_counter()
        total = sum(self.bag.topics[topic].count for topic in self._camera_of)
        interrupted = False
        with progress_display(total=total, unit="frame", desc="replay",
                              enabled=self.options.progress) as bar:
            self._bar = bar
            try:
                if self.options.mode == "all":
                    self._run_all(self._images())
                else:
                    self._run_realtime()
            except KeyboardInterrupt:
                interrupted = True
                self.frames = [f for f in self.frames if f.outcome != "pending"]
        for frame in self.frames:
            if frame.outcome == "pending":
                frame.outcome = "dropped"
        return MultiReplayResult(
            options=self.options, frames=self.frames, scores=self.scores,
            batches=self.pipeline.batches.summary(),
            output_counts=dict(self.output.counts) if self.output else {},
            messages_read=self.messages_read, damage=self.damage or self.bag.damage,
            wall_s=time.perf_counter() - started, prepare_ms=self.prepare_ms,
            interrupted=interrupted,
            class_names=list(self.engine.class_names))

    # ---------------------------------------------------------------- the bag

    def _messages(self) -> Iterator:
        try:
            for message in self.bag.messages(self._topics()):
                self.messages_read += 1
                yield message
        except BagDamaged as exc:
            self.damage = str(exc)

    def _images(self) -> Iterator[tuple[CameraFrame, object]]:
        """The decodable image messages as (frame record, message), in bag order; ground
        truth is taken on the way."""
        for message in self._messages():
            interrupts.raise_pending()  # a signal a C callback swallowed while preparing
            camera = self._camera_of.get(message.topic)
            if camera is None:
                self._ground_truth(message)
                continue
            if self._t0 is None:
                self._t0 = message.timestamp
            frame = CameraFrame(len(self.frames), camera, message.timestamp, None,
                                (message.timestamp - self._t0) / 1e9)
            self.frames.append(frame)
            self._bar.update(1)
            try:
                msg = deserialize(message)
            except MalformedMessage as exc:
                frame.outcome, frame.reason = "rejected", str(exc)
                continue
            frame.stamp_ns = stamp_ns(msg)
            yield frame, msg

    # ---------------------------------------------------------------- modes

    def _run_all(self, images) -> None:
        batch: list[tuple[CameraFrame, object]] = []
        for frame, msg in images:
            if any(waiting.camera == frame.camera for waiting, _ in batch):
                self._run_batch(batch)
                batch = []
            batch.append((frame, msg))
        if batch:
            self._run_batch(batch)

    def _run_realtime(self) -> None:
        """First pass: the arrival times of the decodable images (an undecodable message
        never reaches a node); then the scheduler's simulation asks for batches in time
        order, and the bag is read on as far as each batch needs."""
        decodable: list[int] = []  # image index (among all cameras' images) of each arrival
        arrivals: list[tuple[float, str]] = []
        first = None
        try:
            for index, message in enumerate(self.bag.messages(list(self._camera_of))):
                first = message.timestamp if first is None else first
                try:
                    deserialize(message)
                except MalformedMessage:
                    continue
                decodable.append(index)
                arrivals.append(((message.timestamp - first) / 1e9,
                                 self._camera_of[message.topic]))
        except BagDamaged:
            pass  # the second read stops at the same place and records the damage
        images = self._images()
        latest: dict[str, tuple[CameraFrame, object]] = {}

        def read_through(image_index: int) -> None:
            while len(self.frames) <= image_index:
                item = next(images, None)
                if item is None:
                    raise BagError(f"{self.bag.path}: the bag held fewer images on the second "
                                   "read than on the first; is it being written?")
                previous = latest.get(item[0].camera)
                if previous is not None:
                    previous[0].outcome = "dropped"  # replaced in its camera's slot
                latest[item[0].camera] = item

        def run(items: list[tuple[str, int]]) -> float:
            wanted = [(camera, decodable[position]) for camera, position in items]
            read_through(max(index for _, index in wanted))
            batch = []
            for camera, index in wanted:
                frame, msg = latest.pop(camera)
                if frame.index != index:
                    raise RuntimeError(f"replay lost track of camera {camera}: frame "
                                       f"{frame.index} waiting, the policy took {index}")
                batch.append((frame, msg))
            measured = self._run_batch(batch)
            if self.options.batch_time is not None:
                return float(self.options.batch_time([f.index for f, _ in batch], measured))
            return measured

        outcomes = simulate_cameras(arrivals, run, [s.camera for s in self.options.streams])
        for outcome in outcomes:
            if outcome.processed:
                frame = self.frames[decodable[outcome.index]]
                frame.start, frame.finish = outcome.start, outcome.finish
        for _ in images:  # what follows the last batch: ground truth, later images (dropped)
            pass

    # ---------------------------------------------------------------- one batch

    def _prepare_cameras(self, batch: list[tuple[CameraFrame, object]]) -> None:
        """Prepare the engine for a camera's size (and the batches of the cameras of that
        size) at its first frame, outside the timed span, as the node does from each
        camera's camera_info before its first image."""
        for frame, msg in batch:
            if frame.camera in self._prepared_cameras:
                continue
            try:
                pixels, pixel_format = self.pipeline.frames.decode(msg)
            except REJECTED:
                continue  # the timed attempt rejects it
            self._prepared_cameras.add(frame.camera)
            started = time.perf_counter()
            try:
                self.pipeline.prepare_camera(frame.camera, pixels.shape[1], pixels.shape[0],
                                             pixel_format)
            except (*REJECTED, ConfigError):
                continue  # a size the engine refuses: the timed attempt rejects the frame
            self.prepare_ms += (time.perf_counter() - started) * 1000.0

    def _run_batch(self, batch: list[tuple[CameraFrame, object]]) -> float:
        """The node worker's job on one batch; returns its duration in seconds."""
        self._prepare_cameras(batch)
        frames = [frame for frame, _ in batch]
        started = time.perf_counter()
        outcomes = self.pipeline.process_batch(
            [(frame.camera, msg) for frame, msg in batch],
            lambda index, camera, segmented: self._delivered(frames[index], segmented))
        duration = time.perf_counter() - started
        for frame, outcome in zip(frames, outcomes, strict=True):
            frame.batch_size = len(batch)
            if outcome is None:
                frame.outcome = "processed"
            elif isinstance(outcome, REJECTED):
                frame.outcome, frame.reason = "rejected", str(outcome)
            else:
                frame.outcome, frame.reason = "failed", f"{type(outcome).__name__}: {outcome}"
            if self.options.mode == "all":
                frame.start, frame.finish = frame.arrival, frame.arrival + duration
        return duration

    def _delivered(self, frame: CameraFrame, segmented) -> None:
        if self.output is not None:
            for name, message in self.pipeline.output_messages(segmented).items():
                self.output.write(self.options.output_topic(frame.camera, name), frame.bag_ns,
                                  message)
        if frame.camera in self.scores:
            key = (frame.camera, frame.stamp_ns)
            label = self._labels.pop(key, None)
            if label is not None:
                self._score(frame.camera, segmented.result.label, label)
            else:
                self._predictions[key] = segmented.result.label.copy()

    # ---------------------------------------------------------------- ground truth

    def _ground_truth(self, message) -> None:
        camera = self._label_camera[message.topic]
        score = self.scores[camera]
        score.messages += 1
        try:
            stamp, label = read_ground_truth(message)
        except (MalformedMessage, ImageRejected):
            score.rejected += 1
            return
        key = (camera, stamp)
        prediction = self._predictions.pop(key, None)
        if prediction is not None:
            self._score(camera, prediction, label)
        else:
            self._labels[key] = label

    def _score(self, camera: str, prediction: np.ndarray, label: np.ndarray) -> None:
        score = self.scores[camera]
        try:
            score.confusion.update(at_label_size(prediction, label), label)
        except ValueError:
            score.rejected += 1
            return
        score.matched += 1


# -------------------------------------------------------------------- the report


def _percentiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), (50, 95, 99))
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def build_multi_report(result: MultiReplayResult, *, bag: dict, engine: dict,
                       outputs: dict) -> dict:
    """The report of a multi-camera replay as plain data (report.json)."""
    cameras = {}
    for stream in result.options.streams:
        mine = [f for f in result.frames if f.camera == stream.camera]
        processed = [f for f in mine if f.outcome == "processed"]
        arrivals = [f.arrival for f in mine]
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
        entry = {
            "image_topic": stream.image_topic,
            "label_topic": stream.label_topic,
            "frames": {"read": len(mine),
                       **{outcome: sum(f.outcome == outcome for f in mine)
                          for outcome in ("processed", "dropped", "rejected", "failed")}},
            "input_hz": (len(arrivals) - 1) / span if span > 0 else None,
            "batch_ms": _percentiles([(f.finish - f.start) * 1000.0 for f in processed
                                      if f.start is not None]),
            "image_age_ms": _percentiles([f.age_ms for f in processed
                                          if f.age_ms is not None])
            if result.options.mode == "realtime" else None,
            "batch_sizes": {str(size): sum(f.batch_size == size for f in processed)
                            for size in sorted({f.batch_size for f in processed})},
            "outputs": {topic: count for topic, count in result.output_counts.items()
                        if topic.startswith(f"/{result.options.node_name}/{stream.camera}/")},
            "accuracy": None,
        }
        score = result.scores.get(stream.camera)
        if score is not None:
            miou = score.confusion.miou() if score.matched else None
            entry["accuracy"] = {
                "miou": None if miou is None or np.isnan(miou) else float(miou),
                "pixel_accuracy": float(score.confusion.pixel_accuracy())
                if score.matched else None,
                "ground_truth": {"messages": score.messages, "matched": score.matched,
                                 "rejected": score.rejected},
            }
        cameras[stream.camera] = entry
    return {
        "tool": "swiftseg-replay",
        "mode": result.options.mode,
        "cameras": cameras,
        "batches": {str(size): entry for size, entry in result.batches.items()},
        "bag": {**bag, "messages_read": result.messages_read, "damage": result.damage},
        "engine": engine,
        "outputs": outputs,
        "wall_s": result.wall_s,
        "prepare_ms": result.prepare_ms,
        "complete": result.damage is None and not result.interrupted,
        "interrupted": result.interrupted,
    }


def _ms(entry, key: str = "p95") -> str:
    return "n/a" if not entry else f"{entry[key]:.1f}"


def render_multi_markdown(report: dict) -> str:
    """report.md of a multi-camera replay: a table per camera, the batches, the outputs."""
    lines = [f"# Replay of {len(report['cameras'])} cameras ({report['mode']} mode)", "",
             f"Bag: `{report['bag']['path']}`; engine: {report['engine'].get('network')} on "
             f"{report['engine'].get('device')} ({report['engine'].get('precision')}).", "",
             "| Camera | Image topic | Input Hz | Read | Processed | Dropped | Rejected | "
             "Failed | Batch p50 / p95 (ms) | Image age p95 (ms) | mIoU |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for camera, entry in report["cameras"].items():
        frames = entry["frames"]
        accuracy = entry["accuracy"]
        miou = "n/a" if not accuracy or accuracy["miou"] is None else \
            f"{100 * accuracy['miou']:.1f} %"
        hz = "n/a" if entry["input_hz"] is None else f"{entry['input_hz']:.1f}"
        lines.append(
            f"| {camera} | `{entry['image_topic']}` | {hz} | {frames['read']} | "
            f"{frames['processed']} | {frames['dropped']} | {frames['rejected']} | "
            f"{frames['failed']} | {_ms(entry['batch_ms'], 'p50')} / {_ms(entry['batch_ms'])} | "
            f"{_ms(entry['image_age_ms'])} | {miou} |")
    lines += ["", "## Batches", "", "| Batch size | Batches | Forward p50 (ms) | "
              "Whole batch p50 / p95 (ms) |", "|---|---|---|---|"]
    for size, entry in report["batches"].items():
        forward = entry.get("forward_p50")
        lines.append(f"| {size} | {entry['batches']:g} | "
                     f"{'n/a' if forward is None else f'{forward:.1f}'} | "
                     f"{entry.get('total_p50', 0):.1f} / {entry.get('total_p95', 0):.1f} |")
    if report["outputs"].get("cameras_png"):
        lines += ["", "## Every frame of every camera", "",
                  "![each camera's frames over the bag's time, by batch size, with the "
                  "dropped, rejected and failed ones marked](cameras.png)"]
    lines += ["", "## Output bag", "", f"`{report['outputs'].get('bag')}` "
              f"({report['outputs'].get('storage')}):", ""]
    for topic, count in report["outputs"].get("topics", {}).items():
        lines.append(f"- `{topic}`: {count} messages")
    if not report["complete"]:
        lines += ["", "**Partial**: " + ("interrupted" if report["interrupted"]
                                         else f"bag damaged ({report['bag']['damage']})")]
    return "\n".join(lines) + "\n"


def multi_summary_lines(report: dict) -> list[str]:
    lines = []
    for camera, entry in report["cameras"].items():
        frames = entry["frames"]
        accuracy = entry["accuracy"]
        text = (f"{camera}: {frames['read']} frames, {frames['processed']} processed, "
                f"{frames['dropped']} dropped, {frames['rejected']} rejected, "
                f"{frames['failed']} failed")
        if accuracy and accuracy["miou"] is not None:
            text += f"; mIoU {100 * accuracy['miou']:.1f} %"
        if entry["image_age_ms"]:
            text += f"; image age p95 {entry['image_age_ms']['p95']:.1f} ms"
        lines.append(text)
    sizes = ", ".join(f"{size} x{entry['batches']:g}" for size, entry in report["batches"].items())
    lines.append(f"batches by size: {sizes or 'none'}")
    outputs = report["outputs"]
    lines.append(f"output bag: {outputs.get('bag')} ({len(outputs.get('topics', {}))} topics)")
    lines.append(f"report: {outputs.get('report_md')} and {outputs.get('report_json')}")
    if outputs.get("cameras_png"):
        lines.append(f"picture of every camera's frames: {outputs['cameras_png']}")
    return lines


def replay_cameras(bag_path, out, options: MultiReplayOptions, params, *,
                   force: bool = False, out_storage: str = "mcap") -> dict:
    """Open, check, replay the cameras, write the output bag (DIR/bag) and
    DIR/report.{json,md}; returns the report."""
    from swiftseg_ros.engine import SegmentationEngine
    from swiftseg_ros.ros.params import engine_config_from_params

    out = Path(out)
    with open_bag(bag_path) as bag:
        for stream in options.streams:
            check_topics(bag, stream.image_topic, stream.label_topic)
        engine = SegmentationEngine(engine_config_from_params(params))
        try:
            prepare_out_dir(out, force)
            with OutputBag(out / BAG_DIR, out_storage) as output:
                result = MultiReplay(bag, engine, options, output).run()
            report = build_multi_report(
                result, bag={"path": str(bag_path), "storage": bag.storage},
                engine=engine_summary(engine),
                outputs={"bag": str(out / BAG_DIR), "storage": out_storage,
                         "topics": dict(result.output_counts)})
        finally:
            engine.release()
    report["outputs"]["report_json"] = str(out / "report.json")
    report["outputs"]["report_md"] = str(out / "report.md")
    timeline = out / "cameras.png"
    if write_cameras_timeline(timeline, result.frames,
                              [stream.camera for stream in options.streams],
                              mode=options.mode):
        report["outputs"]["cameras_png"] = str(timeline)
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_multi_markdown(report))
    return report
