"""One camera frame through the engine, the same code path for the ROS node and replay.

`SegmentationPipeline` glues the ROS-free parts: an image message is decoded
(`conversions`), segmented by the `SegmentationEngine`, and turned into output Image
messages that carry the input header unchanged; a `LatestFrameWorker` (`frames`) sits in
front for the node, and a `DiagnosticsReporter` (`diagnostics`) collects rates, ages and
counters for /diagnostics. Message classes are passed in (rclpy's in the node, rosbags'
in replay and tests), so nothing here imports rclpy.

Pipelining (`pipelined`, on by default on CUDA): while a frame waits behind the one in
progress, the worker launches it (`engine.infer_pipelined`) before publishing the one in
progress, so the device computes the next frame while this thread builds and publishes
messages and copies the next frame in. With no frame waiting, the frame in progress is
flushed and published at once, so an idle camera sees no extra latency; the latest-frame
policy is unchanged (one slot, stale frames dropped).

Threads: the engine is not thread-safe, so every engine call happens on the thread that
runs `segment` (the worker in the node), except `report()`, which takes the engine lock
for the short `stats()` read. Output and overlay changes requested from other threads
(`request_outputs`, `request_overlay_alpha`: the node's timers and parameter callback)
are applied by the segmenting thread before its next frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from swiftseg_ros.engine import FrameError, SegmentationEngine, SegResult
from swiftseg_ros.engine.config import check_outputs
from swiftseg_ros.ros.conversions import (
    OUTPUT_ENCODINGS,
    ImageRejected,
    build_image,
    decode_compressed,
    decode_image,
)
from swiftseg_ros.ros.diagnostics import DiagnosticsReporter, DiagnosticStatusContent
from swiftseg_ros.ros.frames import FrameCounters, LatestFrameWorker

# How long report() waits for the engine before reporting its last statistics.
STATS_WAIT_S = 0.05
# A frame that is bad input (not a processing failure): counted as rejected.
REJECTED = (ImageRejected, FrameError)


@dataclass
class SegmentedFrame:
    """One segmented input: its header (unchanged), the engine's result (views of reused
    buffers, valid until the next frame) and the pixel format it was decoded to."""

    header: Any
    result: SegResult
    pixel_format: str

    def arrays(self) -> dict[str, np.ndarray]:
        """The outputs the engine computed for this frame, by name."""
        result = self.result
        named = {"label": result.label, "color": result.color,
                 "confidence": result.confidence, "overlay": result.overlay}
        return {name: array for name, array in named.items() if array is not None}

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the published masks."""
        height, width = next(iter(self.arrays().values())).shape[:2]
        return width, height


class SegmentationPipeline:
    """Decode, segment and package frames; optionally through the latest-frame worker.

    `image_cls` builds the output messages. `publish(frame, messages)` (worker mode) is
    called on the worker thread with the `SegmentedFrame` and its output messages by
    name. `now_s()` is the clock for rates and image ages (the node passes its ROS clock,
    so `use_sim_time` works). `on_rejected(reason)` and `on_failed(exc)` are called on the
    worker thread for a frame that is bad input or that failed (the node logs them,
    throttled); the frame is counted either way. `lost_frames_hint` is what the status
    says to change when many frames are lost before the node (the node passes
    `transport_hint.lost_frames_hint`).
    """

    def __init__(
        self,
        engine: SegmentationEngine,
        image_cls: type,
        *,
        compressed: bool = False,
        publish: Callable[[SegmentedFrame, dict[str, Any]], None] | None = None,
        now_s: Callable[[], float] = time.monotonic,
        on_rejected: Callable[[str], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        diagnostics_name: str = "",
        hardware_id: str = "",
        pipelined: bool | None = None,
        lost_frames_hint: str = "",
    ):
        self.engine = engine
        self.pipelined = engine.on_cuda if pipelined is None else bool(pipelined)
        self.image_cls = image_cls
        self.compressed = compressed
        self._decode = decode_compressed if compressed else decode_image
        self._publish = publish
        self._now_s = now_s
        self._on_rejected = on_rejected
        self._engine_lock = threading.Lock()
        self._requests_lock = threading.Lock()
        self._requested_outputs: tuple[str, ...] | None = None
        self._requested_alpha: float | None = None
        self._last_format: str | None = None
        self._last_stats: dict | None = None
        reporter_args = {"hardware_id": hardware_id, "lost_frames_hint": lost_frames_hint}
        if diagnostics_name:
            reporter_args["name"] = diagnostics_name
        self.reporter = DiagnosticsReporter(**reporter_args)
        self.worker = LatestFrameWorker(
            self._process_pipelined if self.pipelined else self._process,
            on_error=(lambda _frame, exc: on_failed(exc)) if on_failed else None,
            reject_types=REJECTED,
        )

    # --------------------------------------------------------------- one frame

    def prepare(self, width: int, height: int, pixel_format: str) -> None:
        """Allocate and warm up for frames of this size and format before the first one."""
        with self._engine_lock:
            self.engine.prepare(height, width, pixel_format)
            self._last_format = pixel_format

    def prepare_unless_prepared(self, width: int, height: int, pixel_format: str) -> bool:
        """`prepare()` unless the engine is prepared for some input already (a frame came
        first): for the camera's camera_info, which may arrive before the first image.
        True if it prepared."""
        with self._engine_lock:
            if self.engine.input_size is not None:
                return False
            self.engine.prepare(height, width, pixel_format)
            self._last_format = pixel_format
            return True

    def segment(self, msg) -> SegmentedFrame:
        """Decode `msg` (Image, or CompressedImage when `compressed`) and segment it.

        Raises ImageRejected for a malformed message and FrameError for an image the
        engine refuses (larger than max_input_size); both mean "bad input".
        """
        frame, pixel_format = self._decode(msg)
        with self._engine_lock:
            self._apply_requests()
            result = self.engine.infer(frame, pixel_format)
            self._last_format = pixel_format
        return SegmentedFrame(msg.header, result, pixel_format)

    def decode(self, msg) -> tuple[np.ndarray, str]:
        """The message's pixels and pixel format as the engine takes them (ImageRejected
        for a malformed message), for a caller that segments decoded frames in batches."""
        return self._decode(msg)

    def segment_batch(self, frames: Sequence[tuple[Any, np.ndarray, str]]
                      ) -> list[SegmentedFrame]:
        """Decoded `(header, frame, pixel_format)` of one size (several cameras) through one
        forward pass (`engine.infer_batch`): one SegmentedFrame per frame, in order, valid
        until the next engine call. Raises as `segment()` for frames the engine refuses."""
        with self._engine_lock:
            self._apply_requests()
            results = self.engine.infer_batch([(frame, pixel_format)
                                               for _, frame, pixel_format in frames])
            self._last_format = frames[-1][2]
        return [SegmentedFrame(header, result, pixel_format) for (header, _, pixel_format),
                result in zip(frames, results, strict=True)]

    def launch(self, msg, tag: Any = None) -> tuple[Any, SegmentedFrame] | None:
        """`segment()` pipelined, for a caller that drives the frames itself (replay):
        decode `msg` and launch it; return the frame launched before it as `(tag,
        SegmentedFrame)`, or None. Its arrays stay valid until the next `launch`/`flush`.

        Raises as `segment()` (the frame in flight stays in flight). Output and overlay
        requests are not applied here: they re-plan, which drops the frame in flight, and
        only the worker (which flushes first) makes them.
        """
        frame, pixel_format = self._decode(msg)
        with self._engine_lock:
            done = self.engine.infer_pipelined(frame, pixel_format,
                                               tag=(tag, msg.header, pixel_format))
            self._last_format = pixel_format
        return _tagged(done)

    def flush(self) -> tuple[Any, SegmentedFrame] | None:
        """The last frame `launch`ed, waited for, as `(tag, SegmentedFrame)`, or None."""
        with self._engine_lock:
            return _tagged(self.engine.flush_pipelined())

    def output_messages(self, segmented: SegmentedFrame) -> dict[str, Any]:
        """An Image message per computed output, each with the input header unchanged
        (peers synchronize on stamp and frame_id); the data is copied out of the engine's
        buffers, so the messages stay valid after the next frame."""
        return {
            name: build_image(self.image_cls, array, OUTPUT_ENCODINGS[name], segmented.header)
            for name, array in segmented.arrays().items()
        }

    # ------------------------------------------------------------ worker mode

    def start(self) -> None:
        """Start the worker: from now on `offer()`ed frames are segmented and published."""
        if self._publish is None:
            raise RuntimeError("SegmentationPipeline was made without a publish callback; "
                               "call segment() directly instead")
        self.worker.start()

    def offer(self, msg) -> None:
        """Hand a received message to the worker without waiting (a frame still waiting
        is replaced and counted as dropped). Called from the subscription callback; the
        header stamp feeds the estimate of frames lost before the node."""
        self.reporter.frame_received(self._now_s(), msg.header.stamp)
        self.worker.offer(msg)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking frames and wait for the frame in progress to be published (a
        pipelined frame still on the device is published from this thread)."""
        stopped = self.worker.stop(timeout)
        if stopped and self.pipelined:
            with self._engine_lock:
                last = self.engine.flush_pipelined()
            self._publish_pipelined([last])
        return stopped

    def counters(self) -> FrameCounters:
        return self.worker.counters()

    def engine_stats(self) -> dict:
        """`engine.stats()`, read under the engine lock. While the engine is busy for
        longer than a frame (preparing a new input size: seconds), it returns the last
        statistics rather than waiting: the caller is the node's executor thread, which must keep
        serving ROS (and a Ctrl-C) meanwhile."""
        if self._engine_lock.acquire(timeout=STATS_WAIT_S):
            try:
                self._last_stats = self.engine.stats()
            finally:
                self._engine_lock.release()
        return self._last_stats

    def report(self, *, latency_budget_ms: float = 0.0,
               min_output_hz: float = 0.0) -> DiagnosticStatusContent:
        """The diagnostics status for the period since the previous report (the engine's
        statistics as `engine_stats` reads them)."""
        stats = self.engine_stats()
        return self.reporter.report(self._now_s(), self.worker.counters(), stats,
                                    latency_budget_ms=latency_budget_ms,
                                    min_output_hz=min_output_hz)

    def _process(self, msg) -> None:
        try:
            segmented = self.segment(msg)
        except REJECTED as exc:
            if self._on_rejected is not None:
                self._on_rejected(str(exc))
            raise
        self._publish(segmented, self.output_messages(segmented))
        self.reporter.frame_published(self._now_s(), segmented.header.stamp)

    def _process_pipelined(self, msg) -> None:
        """The worker's job in pipelined mode: launch this frame, then publish the one
        before it, and this one too unless another frame is already waiting."""
        done = []
        try:
            frame, pixel_format = self._decode(msg)
            with self._engine_lock:
                if self._has_requests():
                    done.append(self.engine.flush_pipelined())  # before a re-plan
                    self._apply_requests()
                done.append(self.engine.infer_pipelined(frame, pixel_format,
                                                        tag=(msg.header, pixel_format)))
                self._last_format = pixel_format
                if not self.worker.has_waiting_frame():
                    done.append(self.engine.flush_pipelined())
        except REJECTED as exc:
            with self._engine_lock:
                done.append(self.engine.flush_pipelined())
            self._publish_pipelined(done)
            if self._on_rejected is not None:
                self._on_rejected(str(exc))
            raise
        self._publish_pipelined(done)

    def _publish_pipelined(self, done) -> None:
        for item in done:
            if item is None:
                continue
            (header, pixel_format), result = item
            segmented = SegmentedFrame(header, result, pixel_format)
            self._publish(segmented, self.output_messages(segmented))
            self.reporter.frame_published(self._now_s(), header.stamp)

    # ------------------------------------------------------- changes at run time

    def request_outputs(self, outputs: Iterable[str]) -> None:
        """Ask for these outputs from the next frame on (checked now, applied by the
        segmenting thread; re-plans the engine once if they differ)."""
        checked = check_outputs(tuple(outputs))
        with self._requests_lock:
            self._requested_outputs = checked

    def request_overlay_alpha(self, alpha: float) -> None:
        """Blend the overlay with this alpha from the next frame on."""
        with self._requests_lock:
            self._requested_alpha = float(alpha)

    def _has_requests(self) -> bool:
        with self._requests_lock:
            return self._requested_outputs is not None or self._requested_alpha is not None

    def _apply_requests(self) -> None:
        with self._requests_lock:
            outputs, self._requested_outputs = self._requested_outputs, None
            alpha, self._requested_alpha = self._requested_alpha, None
        engine = self.engine
        if alpha is not None and alpha != engine.config.overlay_alpha:
            # the alpha is baked into the post-processing plan (and its CUDA graph), so a
            # new alpha means a new plan for the current input, as set_outputs does
            engine.config = engine.config.replace(overlay_alpha=alpha)
            if engine.input_size is not None and "overlay" in engine.outputs \
                    and (outputs is None or outputs == engine.outputs):
                width, height = engine.input_size
                engine.prepare(height, width, self._last_format)
        if outputs is not None:
            engine.set_outputs(outputs)


def _tagged(done) -> tuple[Any, SegmentedFrame] | None:
    """An engine's pipelined `((tag, header, pixel_format), result)` as `(tag, frame)`."""
    if done is None:
        return None
    (tag, header, pixel_format), result = done
    return tag, SegmentedFrame(header, result, pixel_format)


def camera_info_fields(info, header, width: int, height: int) -> dict[str, Any]:
    """The fields of a CameraInfo for outputs of `width` x `height`: `info` with `header`
    and, when the size differs, the intrinsics scaled as image_proc's resize does (fx, cx
    and P's x terms by width / info.width, fy, cy and P's y terms by height / info.height;
    the region of interest likewise). An uncalibrated info (size 0) is passed unscaled.
    """
    scale_x = width / info.width if info.width else 1.0
    scale_y = height / info.height if info.height else 1.0
    k = np.array(info.k, dtype=np.float64).reshape(9)
    p = np.array(info.p, dtype=np.float64).reshape(12)
    k[[0, 2]] *= scale_x
    k[[4, 5]] *= scale_y
    p[[0, 2, 3]] *= scale_x
    p[[5, 6]] *= scale_y
    roi = info.roi
    scaled_roi = type(roi)(
        x_offset=int(round(roi.x_offset * scale_x)),
        y_offset=int(round(roi.y_offset * scale_y)),
        height=int(round(roi.height * scale_y)),
        width=int(round(roi.width * scale_x)),
        do_rectify=roi.do_rectify,
    )
    return {
        "header": header,
        "height": int(height),
        "width": int(width),
        "distortion_model": info.distortion_model,
        "d": info.d,
        "k": k,
        "r": np.array(info.r, dtype=np.float64).reshape(9),
        "p": p,
        "binning_x": info.binning_x,
        "binning_y": info.binning_y,
        "roi": scaled_roi,
    }


def camera_info_topic(image_topic: str, compressed: bool = False) -> str:
    """Where the camera_info of an image topic is, by the image_transport convention: next
    to the image, e.g. /cam/image_raw (or /cam/image_raw/compressed) -> /cam/camera_info."""
    topic = image_topic.rstrip("/")
    if compressed and topic.endswith("/compressed"):
        topic = topic[: -len("/compressed")]
    parent = topic.rsplit("/", 1)[0] if "/" in topic else ""
    return f"{parent}/camera_info" if parent or topic.startswith("/") else "camera_info"


def wanted_outputs(switched_on: Iterable[str], subscribers: Mapping[str, int]) -> tuple[str, ...]:
    """The outputs worth computing: those switched on that someone subscribes to.

    The label mask is the floor: it is the cheapest output, the one every other is
    derived from, and it keeps the engine's latency statistics alive while nobody
    listens.
    """
    wanted = [name for name in switched_on if subscribers.get(name, 0) > 0]
    return check_outputs(wanted or ["label"])
