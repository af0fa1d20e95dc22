"""Several cameras through one engine: decode, batch by size, segment, deliver per camera,
and account for every frame per camera; the same code path for the node and replay.

`MultiCameraPipeline` puts a `MultiCameraWorker` (`scheduler.py`: a latest-frame slot per
camera, round robin, batches) in front of the single-camera `SegmentationPipeline`
(`pipeline.py`: decoding, the engine and its lock, output and overlay requests, output
messages). A batch the worker takes is decoded frame by frame (a malformed image is
rejected for its camera only), grouped by image size, and each group goes through the
network in one forward pass (`engine.infer_batch`), or frame by frame where that measured
faster when the engine was prepared for that batch (on a GPU the batch wins; on a CPU it
may not); each frame's outputs keep its own camera's header. Replay calls `process_batch`
itself, with a `deliver` of its own.

A camera's image size and encoding are fixed by its first frame after `start()`: a frame
of another size or encoding is rejected for that camera (a new size would stall every
camera while the engine prepares for it); deactivating and activating the node again
accepts a new size.

Diagnostics: one status per camera (its input and output rates, frames lost before the
node, dropped, rejected, failed, and the latency from the image stamp to publish, p50,
p95 and p99) and one for the engine (frames of all cameras, stage latencies, the batch
sizes seen and the time per batch of each size, memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from swiftseg_ros.engine import SegmentationEngine
from swiftseg_ros.engine.frames import channels_of
from swiftseg_ros.memory import resident_mb
from swiftseg_ros.ros.conversions import ImageRejected
from swiftseg_ros.ros.diagnostics import (
    WARN,
    DiagnosticsReporter,
    DiagnosticStatusContent,
    RateMeter,
    build_status,
)
from swiftseg_ros.ros.frames import FrameCounters
from swiftseg_ros.ros.pipeline import REJECTED, SegmentationPipeline, SegmentedFrame
from swiftseg_ros.ros.scheduler import MultiCameraWorker, group_by_size

_LOG = logging.getLogger(__name__)

# How many recent frames a camera's latency percentiles, and a batch size's times, cover.
LATENCY_WINDOW = 500
LATENCY_PERCENTILES = (50, 95, 99)
# Timed runs of a batch and of one frame (alternated, the fastest of each kept) when
# choosing how to run batches of a size.
BATCHING_REPEATS = 5

# deliver(index in the batch, camera, segmented frame): called while the frame's arrays
# are valid (before the next engine call)
Deliver = Callable[[int, str, SegmentedFrame], None]


class BatchStats:
    """Batches by size: how many, and their time (ms) over a recent window, whole batch
    (decoded frames in, results out) and forward pass. Thread-safe."""

    def __init__(self, window: int = LATENCY_WINDOW):
        self._window = window
        self._lock = threading.Lock()
        self._count: dict[int, int] = {}
        self._total_ms: dict[int, deque] = {}
        self._forward_ms: dict[int, deque] = {}

    def record(self, size: int, total_ms: float, forward_ms: float | None) -> None:
        with self._lock:
            self._count[size] = self._count.get(size, 0) + 1
            self._total_ms.setdefault(size, deque(maxlen=self._window)).append(total_ms)
            if forward_ms is not None and np.isfinite(forward_ms):
                self._forward_ms.setdefault(size, deque(maxlen=self._window)).append(
                    forward_ms)

    def summary(self) -> dict[int, dict[str, float]]:
        """{batch size: {"batches": n, "total_p50": ms, "total_p95": ms, "forward_p50": ms,
        "forward_p95": ms}} (forward left out where the engine did not time it)."""
        with self._lock:
            out = {}
            for size in sorted(self._count):
                entry: dict[str, float] = {"batches": self._count[size]}
                for name, times in (("total", self._total_ms.get(size)),
                                    ("forward", self._forward_ms.get(size))):
                    if times:
                        p50, p95 = np.percentile(np.asarray(times), (50, 95))
                        entry[f"{name}_p50"] = float(p50)
                        entry[f"{name}_p95"] = float(p95)
                out[size] = entry
            return out

    def values(self) -> list[tuple[str, str]]:
        """Diagnostics key/values: the sizes seen, then the times per size."""
        summary = self.summary()
        values = [("batch sizes seen", ", ".join(f"{size} ({entry['batches']:g} batches)"
                                                   for size, entry in summary.items())
                   or "none yet")]
        for size, entry in summary.items():
            for name in ("forward", "total"):
                if f"{name}_p50" in entry:
                    values.append((f"batch {size} {name} p50 / p95 (ms)",
                                   f"{entry[f'{name}_p50']:.2f} / {entry[f'{name}_p95']:.2f}"))
        return values


class MultiCameraPipeline:
    """The cameras' frames through one engine (see the module docstring).

    `publish(camera, frame, messages)` is called on the worker thread with each segmented
    frame and its output messages by name. `on_rejected(camera, reason)` and
    `on_failed(camera, exc)` are called on the worker thread for every rejected or failed
    frame (the node logs them through a `diagnostics.FrameLogGate`). `now_s()` is the
    clock of rates and latencies (the node's ROS clock). `lost_frames_hint` goes into a
    camera's status when many of its frames are lost before the node.
    """

    def __init__(
        self,
        engine: SegmentationEngine,
        image_cls: type,
        cameras: Sequence[str],
        *,
        compressed: bool = False,
        publish: Callable[[str, SegmentedFrame, dict[str, Any]], None] | None = None,
        now_s: Callable[[], float] = time.monotonic,
        on_rejected: Callable[[str, str], None] | None = None,
        on_failed: Callable[[str, BaseException], None] | None = None,
        node_name: str = "swiftseg",
        hardware_id: str = "",
        max_batch: int | None = None,
        batch_wait_s: float = 0.0,
        lost_frames_hint: str = "",
    ):
        self.engine = engine
        self.cameras = tuple(cameras)
        self.frames = SegmentationPipeline(engine, image_cls, compressed=compressed,
                                           now_s=now_s, pipelined=False)
        self._publish = publish
        self._now_s = now_s
        self._on_rejected = on_rejected
        self._hardware_id = hardware_id
        self._engine_name = f"{node_name}: engine"
        self._streams: dict[str, tuple[int, int, str]] = {}
        self._streams_lock = threading.Lock()
        self._sizes: dict[str, tuple[int, int]] = {}  # camera -> (width, height) it sends
        self._prepared: set[tuple[int, int, int]] = set()  # (width, height, batch size)
        # (width, height, batch size) -> whether such batches run one frame at a time,
        # measured when the batch was prepared; the choices as diagnostics show them
        self._one_by_one: dict[tuple[int, int, int], bool] = {}
        self.batching_choices: dict[str, str] = {}
        self.batches = BatchStats()
        self._reporters = {camera: DiagnosticsReporter(name=f"{node_name}: camera {camera}",
                                                       hardware_id=hardware_id,
                                                       lost_frames_hint=lost_frames_hint)
                           for camera in self.cameras}
        self._latencies = {camera: deque(maxlen=LATENCY_WINDOW) for camera in self.cameras}
        self._latency_lock = threading.Lock()
        self._input = RateMeter()
        self._output = RateMeter()
        self._previous_total: FrameCounters | None = None
        self.worker = MultiCameraWorker(
            self.cameras, self._process_offered, max_batch=max_batch,
            batch_wait_s=batch_wait_s,
            on_error=(lambda camera, _frame, exc: on_failed(camera, exc)) if on_failed else None,
            reject_types=REJECTED)

    # ---------------------------------------------------------------- preparing

    def prepare(self, width: int, height: int, pixel_format: str) -> bool:
        """Prepare for every camera sending frames of this size (the node's `input_size`):
        `prepare_camera` for each; True if anything was prepared now."""
        prepared = False
        for camera in self.cameras:
            prepared = self.prepare_camera(camera, width, height, pixel_format) or prepared
        return prepared

    def prepare_camera(self, camera: str, width: int, height: int, pixel_format: str) -> bool:
        """Note that `camera` sends frames of this size, and allocate and warm up the
        engine for it and for batches of every camera of that size, unless done already,
        so that no batch of a new size stalls the worker later (the node calls it from each
        camera's first camera_info, the worker from each camera's first frame). True if it
        prepared now."""
        size = (width, height)
        with self._streams_lock:
            self._sizes[camera] = size
            count = sum(1 for seen in self._sizes.values() if seen == size)
        prepared = False
        for batch in range(1, count + 1):
            if (width, height, batch) in self._prepared:
                continue
            if batch == 1:
                self.frames.prepare(width, height, pixel_format)
            else:
                self._choose_batching(width, height, pixel_format, batch)
            self._prepared.add((width, height, batch))
            prepared = True
        return prepared

    def _choose_batching(self, width: int, height: int, pixel_format: str, batch: int) -> None:
        """Prepare the plan of `batch` frames of this size (with blank frames) and measure
        it against as many frames one by one: whichever is faster on this machine runs
        such batches (on a GPU one forward over the stack wins; on a CPU core it may not)."""
        blank = np.zeros((height, width, channels_of(pixel_format)), np.uint8)
        frames = [(None, blank, pixel_format)] * batch
        self.frames.segment_batch(frames)  # prepares and warms the batch's plan

        times: dict[int, list[float]] = {batch: [], 1: []}
        for _ in range(BATCHING_REPEATS):  # alternated, so that drift hits both alike
            for size in (batch, 1):
                started = time.perf_counter()
                self.frames.segment_batch(frames[:size])
                times[size].append((time.perf_counter() - started) * 1000.0)
        together, alone = min(times[batch]), min(times[1])
        one_by_one = together > batch * alone
        self._one_by_one[(width, height, batch)] = one_by_one
        choice = "one by one" if one_by_one else "batched"
        self.batching_choices[f"batching {batch} x {width}x{height}"] = (
            f"{choice} (a batch {together:.1f} ms, one by one {batch} x {alone:.1f} ms)")
        _LOG.info("cameras at %dx%d: a batch of %d takes %.1f ms, one frame %.1f ms: %s",
                  width, height, batch, together, alone, choice)

    # ----------------------------------------------------------------- batches

    def process_batch(self, items: Sequence[tuple[str, Any]], deliver: Deliver
                      ) -> list[BaseException | None]:
        """Segment `(camera, message)` pairs: decode each, one forward per image size,
        `deliver` each segmented frame. Returns one outcome per pair: None (delivered) or
        the exception that rejected or failed it (REJECTED types mean bad input)."""
        outcomes: list[BaseException | None] = [None] * len(items)
        decoded = []
        for index, (camera, msg) in enumerate(items):
            try:
                frame, pixel_format = self.frames.decode(msg)
                if self._check_stream(camera, frame, pixel_format):
                    self.prepare_camera(camera, frame.shape[1], frame.shape[0], pixel_format)
            except REJECTED as exc:
                outcomes[index] = exc
                self._rejected(camera, exc)
                continue
            decoded.append((index, camera, msg.header, frame, pixel_format))
        groups = []
        for group in group_by_size(decoded, lambda item: item[3].shape[:2]):
            height, width = group[0][3].shape[:2]
            if self._one_by_one.get((width, height, len(group))):
                groups.extend([item] for item in group)
            else:
                groups.append(group)
        for group in groups:
            started = time.perf_counter()
            try:
                segmented = self.frames.segment_batch([item[2:] for item in group])
            except Exception as exc:  # the group's frames only; the other sizes go on
                for index, camera, *_ in group:
                    outcomes[index] = exc
                    if isinstance(exc, REJECTED):
                        self._rejected(camera, exc)
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self.batches.record(len(group), elapsed_ms,
                                segmented[0].result.timings.get("forward"))
            for (index, camera, *_), frame in zip(group, segmented, strict=True):
                try:
                    deliver(index, camera, frame)
                except Exception as exc:  # e.g. a publisher gone: this frame failed
                    outcomes[index] = exc
        return outcomes

    def _check_stream(self, camera: str, frame: np.ndarray, pixel_format: str) -> bool:
        """True at the camera's first frame; ImageRejected when it differs from that."""
        height, width = frame.shape[:2]
        seen = (width, height, pixel_format)
        with self._streams_lock:
            new = camera not in self._streams
            first = self._streams.setdefault(camera, seen)
        if first != seen:
            raise ImageRejected(
                f"camera {camera}: image {width}x{height} {pixel_format} differs from its "
                f"stream's {first[0]}x{first[1]} {first[2]}; a camera keeps the size and "
                "encoding of its first frame until the node is deactivated and activated "
                "again")
        return new

    def _rejected(self, camera: str, exc: BaseException) -> None:
        if self._on_rejected is not None:
            self._on_rejected(camera, str(exc))

    # ------------------------------------------------------------- worker mode

    def start(self) -> None:
        """Start the worker: `offer()`ed frames are segmented and published from now on;
        each camera's size and encoding are learned anew from its next frame."""
        if self._publish is None:
            raise RuntimeError("MultiCameraPipeline was made without a publish callback; "
                               "call process_batch() directly instead")
        with self._streams_lock:
            self._streams.clear()
        now = self._now_s()
        for reporter in self._reporters.values():
            reporter.subscribed(now)  # frames stamped from now on and never received: lost
        self.worker.start()

    def offer(self, camera: str, msg) -> None:
        """Hand a camera's message to the worker without waiting (that camera's frame still
        waiting is replaced and counted as dropped)."""
        now = self._now_s()
        self._reporters[camera].frame_received(now, msg.header.stamp)
        self._input.tick(now)
        self.worker.offer(camera, msg)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking frames and wait for the batch in progress to be published."""
        return self.worker.stop(timeout)

    def set_batch_wait(self, seconds: float) -> None:
        self.worker.set_batch_wait(seconds)

    def counters(self) -> dict[str, FrameCounters]:
        return self.worker.counters()

    def request_outputs(self, outputs: Iterable[str]) -> None:
        self.frames.request_outputs(outputs)

    def request_overlay_alpha(self, alpha: float) -> None:
        self.frames.request_overlay_alpha(alpha)

    def output_messages(self, frame: SegmentedFrame) -> dict[str, Any]:
        return self.frames.output_messages(frame)

    def _process_offered(self, items: list[tuple[str, Any]]) -> list[BaseException | None]:
        return self.process_batch(items, self._publish_one)

    def _publish_one(self, _index: int, camera: str, frame: SegmentedFrame) -> None:
        self._publish(camera, frame, self.frames.output_messages(frame))
        now = self._now_s()
        age_ms = self._reporters[camera].frame_published(now, frame.header.stamp)
        self._output.tick(now)
        with self._latency_lock:
            self._latencies[camera].append(age_ms)

    # ------------------------------------------------------------- diagnostics

    def reports(self, *, latency_budget_ms: float = 0.0, min_output_hz: float = 0.0
                ) -> list[DiagnosticStatusContent]:
        """One status per camera, then the engine's, for the period since the last call."""
        now = self._now_s()
        counters = self.worker.counters()
        statuses = []
        for camera in self.cameras:
            status = self._reporters[camera].report(now, counters[camera], None,
                                                    min_output_hz=min_output_hz)
            with self._latency_lock:
                latencies = list(self._latencies[camera])
            add_latency(status, latencies, latency_budget_ms)
            statuses.append(status)
        stats = self.frames.engine_stats()
        total = sum_counters(counters.values())
        previous, self._previous_total = self._previous_total, total
        engine = build_status(
            counters=total, previous_counters=previous, engine_stats=stats,
            input_rate_hz=self._input.rate(now), output_rate_hz=self._output.rate(now),
            latency_budget_ms=latency_budget_ms, name=self._engine_name,
            hardware_id=self._hardware_id)
        engine.values.append(("cameras", ", ".join(self.cameras)))
        engine.values.extend(self.batches.values())
        engine.values.extend(self.batching_choices.items())
        resident = resident_mb()
        if resident is not None:
            engine.values.append(("process resident memory (MB)", f"{resident:.1f}"))
        statuses.append(engine)
        return statuses


def add_latency(status: DiagnosticStatusContent, latencies_ms: Sequence[float],
                budget_ms: float) -> None:
    """Put a camera's stamp-to-publish latency percentiles over its recent frames in its
    status (in place of the report period's, which a slow camera may have none of), and
    WARN when its p95 is over `budget_ms` (0: no check)."""
    status.values = [(key, value) for key, value in status.values
                     if not key.startswith("latency stamp to publish")]
    if not latencies_ms:
        status.values.append(("latency stamp to publish (ms)", "n/a"))
        return
    values = np.percentile(np.asarray(latencies_ms), LATENCY_PERCENTILES)
    for percentile, value in zip(LATENCY_PERCENTILES, values, strict=True):
        status.values.append((f"latency stamp to publish p{percentile} (ms)", f"{value:.2f}"))
    p95 = float(values[1])
    if budget_ms > 0 and p95 > budget_ms:
        note = f"p95 latency from stamp to publish {p95:.1f} ms is over the {budget_ms:g} ms budget"
        status.level = max(status.level, WARN)
        if status.message.startswith("segmenting"):  # the rates give way to the warning,
            _, sep, rest = status.message.partition("; ")  # what follows them stays
            status.message = note + sep + rest
        else:
            status.message = f"{status.message}; {note}"


def sum_counters(counters: Iterable[FrameCounters]) -> FrameCounters:
    """The cameras' counters added up (for the engine's status)."""
    totals = dict.fromkeys(("received", "processed", "dropped", "rejected", "failed",
                            "pending", "in_flight"), 0)
    last_rejection = last_failure = ""
    for counter in counters:
        for key in totals:
            totals[key] += getattr(counter, key)
        last_rejection = counter.last_rejection or last_rejection
        last_failure = counter.last_failure or last_failure
    return FrameCounters(**totals, last_rejection=last_rejection, last_failure=last_failure)
