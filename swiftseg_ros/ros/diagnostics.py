"""The content of the node's /diagnostics status, built without rclpy.

`build_status()` turns engine statistics, frame counters, rates and image ages into a
`DiagnosticStatusContent` (name, level, message, hardware id, key/values);
`to_diagnostic_array()` fills any DiagnosticArray/DiagnosticStatus/KeyValue classes with
it (rclpy's, whose `level` is a 1-byte `bytes`, or rosbags', whose `level` is an int).
`DiagnosticsReporter` keeps the state between two reports (rates, ages, the previous
counters) for the node and for replay; every time it takes comes from the caller, so the
node passes its own clock (`use_sim_time` works) and replay the bag's.

Engine statistics, as `SegmentationEngine.stats()` returns them; the keys this module
reads (a missing key or a None value is left out of the status):

    {
      "frames": int,                    # frames the engine has run
      "stages": {                       # per stage, over the engine's bounded window
        "total": {"p50": ms, "p90": ms, "p95": ms, "p99": ms, "max": ms},
        "host_copy": {...}, "upload": {...}, "preprocess": {...}, "forward": {...},
        "postprocess": {...}, "download": {...},
      },
      "network": str, "device": str, "precision": str, "cuda_graph": bool,
      "backend": "torch" | "onnxruntime",
      "choices": {what: {"picked": str, "times_ms": {name: ms}, "notes": {name: why}}},
      "cpu": {"model": str, "native_bf16": bool, "bf16_reason": str, ...},
      "input_size": (width, height), "inference_size": (width, height),
      "memory": {"allocated_mb": float, "peak_mb": float, "reserved_mb": float} | None,
      "math_mode": str, "cuda_graph_note": str,
      "plans": {"cached": int, "prepares": int, "last_prepare_ms": float,
                "total_prepare_ms": float, ...},   # engine/plans.py
    }

Frame counters, what each means (the key as shown in /diagnostics):

    frames received            images that reached the node's subscription
    frames processed           segmented and published
    frames dropped             received, then replaced in the one-frame slot by a newer image
                               while the worker was busy (never segmented: stale)
    frames rejected            unusable images (encoding, size, data), counted and logged
    frames failed              images whose processing raised an error
    frames lost before the node (estimated)
                               published by the camera but never received (transport
                               losses, the subscription queue overwritten), estimated from
                               gaps in the header stamps (`stamps.CameraStampTracker`)
    camera frames not segmented (estimated)
                               lost before the node + dropped + rejected + failed
    camera rate from stamps (Hz)
                               the camera's rate as its stamps show it, beside "input rate
                               (Hz)", the rate at which images arrive at the node (lower
                               by the frames lost before the node)
    latency stamp to publish p50/p95 (ms)
                               clock now at publish - header stamp, over the report period:
                               what a subscriber sees (transport, the wait for the worker,
                               decoding and message building on top of the engine's
                               "latency total"); needs the camera to stamp with the node's
                               clock

Levels (diagnostic_msgs values): ERROR when a frame failed since the previous report (not
sticky: the next report without failures clears it, the total stays in the values);
WARN when the p95 total latency in the engine exceeds `latency_budget_ms` (0 turns it
off), when the output rate is under `min_output_hz` (0 turns it off) while images arrive,
or when images were rejected since the previous report (a camera sending an unusable encoding must not
look healthy); OK otherwise. The message says which of these, in words; where frames
lost before the node are 10% or more of a period's camera frames (those stamped before
the camera's first arrival aside: a late start), it adds what to change in the
middleware (`transport_hint`, given by the node; replay has no transport).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from swiftseg_ros.ros.frames import FrameCounters
from swiftseg_ros.ros.stamps import CameraStampTracker
from swiftseg_ros.ros.transport_hint import hint_applies

OK = 0
WARN = 1
ERROR = 2
STALE = 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}

STAGES = ("host_copy", "upload", "preprocess", "forward", "postprocess", "download", "total")
PERCENTILES = ("p50", "p90", "p95", "p99", "max")
DEFAULT_NAME = "swiftseg: segmentation"


@dataclass
class DiagnosticStatusContent:
    """One diagnostic_msgs/DiagnosticStatus as plain data."""

    name: str
    level: int
    message: str
    hardware_id: str = ""
    values: list[tuple[str, str]] = field(default_factory=list)


class RateMeter:
    """Events per second over a sliding time window, on the caller's clock.

    The rate is (events in the window - 1) / (now - oldest event in the window), so it is
    exact for a steady stream, decays when events stop and is 0 with fewer than two
    events in the window (streams slower than 2 / window_s read as 0). A clock that goes
    back (a replayed bag looping under use_sim_time) restarts the meter.
    """

    def __init__(self, window_s: float = 5.0, max_events: int = 10_000):
        if window_s <= 0:
            raise ValueError(f"window_s is {window_s}, expected > 0")
        self.window_s = float(window_s)
        self._times: deque[float] = deque(maxlen=max_events)

    def tick(self, now_s: float) -> None:
        if self._times and now_s < self._times[-1]:
            self._times.clear()
        self._times.append(float(now_s))

    def rate(self, now_s: float) -> float:
        if self._times and now_s < self._times[-1]:
            self._times.clear()
        while self._times and self._times[0] <= now_s - self.window_s:
            self._times.popleft()
        span = now_s - self._times[0] if self._times else 0.0
        if len(self._times) < 2 or span <= 0:
            return 0.0
        return (len(self._times) - 1) / span


def stamp_seconds(stamp) -> float:
    """A builtin_interfaces/Time (sec, nanosec; rclpy or rosbags) or float, in seconds."""
    if isinstance(stamp, (int, float)):
        return float(stamp)
    return stamp.sec + stamp.nanosec * 1e-9


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(round(q / 100.0 * (len(ordered) - 1))), len(ordered) - 1)]


def _ms(value) -> str:
    return f"{float(value):.2f}"


def _size(value) -> str:
    """(width, height) as the parameters write sizes, WxH."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{int(value[0])}x{int(value[1])}"
    return str(value)


def build_status(
    *,
    counters: FrameCounters,
    previous_counters: FrameCounters | None = None,
    engine_stats: Mapping | None = None,
    input_rate_hz: float = 0.0,
    output_rate_hz: float = 0.0,
    image_ages_ms: Sequence[float] = (),
    latency_budget_ms: float = 0.0,
    min_output_hz: float = 0.0,
    name: str = DEFAULT_NAME,
    hardware_id: str = "",
    camera_rate_hz: float = 0.0,
    lost_before_node: int | None = None,
    lost_before_node_now: int = 0,
    lost_frames_hint: str = "",
) -> DiagnosticStatusContent:
    """The status for one report period (see the module docstring for the rules).

    `previous_counters` are those of the previous report (None: the first report);
    `image_ages_ms` the ages (clock now - header stamp) of the images published since.
    `camera_rate_hz` and `lost_before_node` (total; None: not estimated yet) come from the
    input stamps, `lost_before_node_now` is the part of it since the previous report.
    `lost_frames_hint` (`transport_hint.lost_frames_hint`), when given, follows the losses
    in the message (the reporter gives it when they are a large share of the period's
    frames).
    """
    stats = engine_stats or {}
    before = previous_counters or FrameCounters()
    stages = stats.get("stages", {}) or {}
    total = stages.get("total", {}) or {}

    failed_now = counters.failed - before.failed
    rejected_now = counters.rejected - before.rejected
    errors: list[str] = []
    warnings: list[str] = []
    if failed_now > 0:
        errors.append(
            f"{failed_now} frame{'s' if failed_now != 1 else ''} failed since the last report"
            + (f" (last: {counters.last_failure})" if counters.last_failure else "")
        )
    p95 = total.get("p95")
    if latency_budget_ms > 0 and p95 is not None and p95 > latency_budget_ms:
        warnings.append(
            f"p95 total latency {p95:.1f} ms is over the {latency_budget_ms:g} ms budget"
        )
    if min_output_hz > 0 and input_rate_hz > 0 and output_rate_hz < min_output_hz:
        slow_input = " (the input itself is slower)" if input_rate_hz < min_output_hz else ""
        warnings.append(
            f"output rate {output_rate_hz:.1f} Hz is under the minimum {min_output_hz:g} Hz "
            f"with input at {input_rate_hz:.1f} Hz{slow_input}"
        )
    if rejected_now > 0:
        warnings.append(
            f"{rejected_now} image{'s' if rejected_now != 1 else ''} rejected since the last "
            "report" + (f" (last: {counters.last_rejection})" if counters.last_rejection else "")
        )

    if errors:
        level = ERROR
    elif warnings:
        level = WARN
    else:
        level = OK
    if errors or warnings:
        message = "; ".join(errors + warnings)
    elif input_rate_hz <= 0:
        message = "no input images arriving"
    else:
        # the engine's time per frame, and what a subscriber sees: from the camera's stamp
        # to the publish (transport, waiting for the worker, conversions on top)
        message = f"segmenting {input_rate_hz:.1f} Hz in, {output_rate_hz:.1f} Hz out" + (
            f", p95 total latency {p95:.1f} ms in the engine" if p95 is not None else ""
        ) + (f", {_percentile(image_ages_ms, 95):.1f} ms from stamp to publish"
             if image_ages_ms else "")
    if lost_before_node_now > 0:
        message += (f"; ~{lost_before_node_now} camera frame"
                    f"{'s' if lost_before_node_now != 1 else ''} lost before the node since "
                    f"the last report (camera at {camera_rate_hz:.1f} Hz by its stamps)")
        if lost_frames_hint:
            message += f": {lost_frames_hint}"

    values: list[tuple[str, str]] = [
        ("input rate (Hz)", f"{input_rate_hz:.2f}"),
        ("output rate (Hz)", f"{output_rate_hz:.2f}"),
        ("frames received", str(counters.received)),
        ("frames processed", str(counters.processed)),
        ("frames dropped", str(counters.dropped)),
        ("frames rejected", str(counters.rejected)),
        ("frames failed", str(counters.failed)),
        ("camera rate from stamps (Hz)", f"{camera_rate_hz:.2f}" if camera_rate_hz else "n/a"),
        ("frames lost before the node (estimated)",
         "n/a" if lost_before_node is None else str(lost_before_node)),
        ("camera frames not segmented (estimated)",
         "n/a" if lost_before_node is None else str(
             lost_before_node + counters.dropped + counters.rejected + counters.failed)),
        ("image age last (ms)", _ms(image_ages_ms[-1]) if image_ages_ms else "n/a"),
        ("image age max (ms)", _ms(max(image_ages_ms)) if image_ages_ms else "n/a"),
        *((f"latency stamp to publish {name} (ms)",
           _ms(_percentile(image_ages_ms, q)) if image_ages_ms else "n/a")
          for name, q in (("p50", 50), ("p95", 95))),
    ]
    for stage in STAGES:
        numbers = stages.get(stage)
        if numbers:
            values.extend(
                (f"latency {stage} {p} (ms)", _ms(numbers[p])) for p in PERCENTILES if p in numbers
            )
    for key in ("network", "device", "precision", "backend"):
        if stats.get(key) is not None:
            values.append((key, str(stats[key])))
    for what, choice in (stats.get("choices") or {}).items():
        values.append((f"choice {what}", describe_choice(choice)))
    cpu = stats.get("cpu")
    if cpu:
        values.append(("cpu", f"{cpu.get('model')}; native bf16: "
                              f"{'yes' if cpu.get('native_bf16') else 'no'}"))
    if stats.get("cuda_graph") is not None:
        values.append(("cuda graph", "yes" if stats["cuda_graph"] else "no"))
    for key, label in (("cuda_graph_note", "cuda graph note"), ("math_mode", "math mode")):
        if stats.get(key):
            values.append((label, str(stats[key])))
    values.extend(_plan_values(stats.get("plans") or {}))
    for key, label in (("input_size", "input size"), ("inference_size", "inference size")):
        if stats.get(key) is not None:
            values.append((label, _size(stats[key])))
    memory = stats.get("memory") or {}
    for key, label in (("allocated_mb", "allocated"), ("peak_mb", "peak"),
                       ("reserved_mb", "reserved")):
        if memory.get(key) is not None:
            values.append((f"device memory {label} (MB)", f"{float(memory[key]):.1f}"))
    if stats.get("frames") is not None:
        values.append(("engine frames", str(stats["frames"])))
    values.append(("latency budget (ms)", f"{latency_budget_ms:g}"))
    values.append(("min output rate (Hz)", f"{min_output_hz:g}"))
    if counters.last_failure:
        values.append(("last failure", counters.last_failure))
    if counters.last_rejection:
        values.append(("last rejection", counters.last_rejection))

    return DiagnosticStatusContent(
        name=name,
        level=level,
        message=message,
        hardware_id=hardware_id or str(stats.get("device", "")),
        values=values,
    )


class FrameLogGate:
    """Which rejected or failed frames get a log line: every new kind of reason at once,
    others at most one line per `period_s` per key (a camera, so that one camera's stream
    of bad frames never hides another's lines), each line saying how many of its key were
    left out since the previous one. A plain throttle (one line per 5 s) showed one reason
    only of a camera sending truncated and 0x0 frames among bad encodings; rclpy's
    throttle is per call site, so it cannot tell cameras apart.

    A reason's kind is its text with the numbers taken out (sizes, byte counts); at most
    `limit` kinds are remembered (a reason quoting arbitrary text cannot grow it without
    bound), later ones count as seen."""

    def __init__(self, period_s: float, limit: int = 64,
                 clock: Callable[[], float] = time.monotonic):
        self.period_s = float(period_s)
        self._limit = limit
        self._clock = clock
        self._seen: set[tuple[str, str]] = set()
        self._last_s: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def line(self, text: str, reason: str | None = None, key: str = "") -> str | None:
        """`text` (with how many lines of `key` were left out since) if a line is due now,
        else None (counted). `reason` (default: the text) gives the kind."""
        kind = (key, re.sub(r"\d+(\.\d+)?", "#", text if reason is None else reason))
        now_s = self._clock()
        with self._lock:
            new = kind not in self._seen and len(self._seen) < self._limit
            if new:
                self._seen.add(kind)
            last_s = self._last_s.get(key)
            if not new and last_s is not None and now_s - last_s < self.period_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last_s[key] = now_s
            held = self._held.pop(key, 0)
        return text + (f" ({held} more since the last line)" if held else "")


def describe_choice(choice: Mapping) -> str:
    """'onednn (onednn 12.10 ms, torch 15.30 ms)' from a Choice.as_dict()."""
    times = sorted((choice.get("times_ms") or {}).items(), key=lambda item: item[1])
    seen = [f"{name} {ms:.2f} ms" for name, ms in times]
    seen += [f"{name}: {why}" for name, why in (choice.get("notes") or {}).items()]
    return str(choice.get("picked")) + (f" ({', '.join(seen)})" if seen else "")


class DiagnosticsReporter:
    """The state between two reports: input and output rates, the camera's stamps, image
    ages at publish, the counters of the previous report. Thread-safe: the subscription,
    the worker and the diagnostics timer call it from different threads."""

    def __init__(self, *, name: str = DEFAULT_NAME, hardware_id: str = "",
                 window_s: float = 5.0, lost_frames_hint: str = ""):
        self.name = name
        self.hardware_id = hardware_id
        self.lost_frames_hint = lost_frames_hint
        self._lock = threading.Lock()
        self._input = RateMeter(window_s)
        self._output = RateMeter(window_s)
        self._ages_ms: list[float] = []
        self._previous: FrameCounters | None = None
        self._stamps = CameraStampTracker()
        self._previous_lost = 0
        self._previous_late_start = 0

    def frame_received(self, now_s: float, stamp=None) -> None:
        """Record one received frame; `stamp`, its header stamp, feeds the estimate of the
        camera's rate and of the frames lost before the node (None: not estimated)."""
        with self._lock:
            self._input.tick(now_s)
            if stamp is not None:
                self._stamps.add(stamp_seconds(stamp))

    def subscribed(self, now_s: float) -> None:
        """The node (re)started listening for images at `now_s` (activate): frames the
        camera stamped after this and never received count as lost before the node."""
        with self._lock:
            self._stamps.subscribed(now_s)

    def frame_published(self, now_s: float, stamp) -> float:
        """Record one published frame; returns its age (now - header stamp) in ms."""
        age_ms = (now_s - stamp_seconds(stamp)) * 1000.0
        with self._lock:
            self._output.tick(now_s)
            self._ages_ms.append(age_ms)
        return age_ms

    def report(self, now_s: float, counters: FrameCounters, engine_stats: Mapping | None, *,
               latency_budget_ms: float = 0.0, min_output_hz: float = 0.0
               ) -> DiagnosticStatusContent:
        """The status for the period since the previous `report()`; starts a new period."""
        with self._lock:
            ages, self._ages_ms = self._ages_ms, []
            previous, self._previous = self._previous, counters
            input_rate = self._input.rate(now_s)
            output_rate = self._output.rate(now_s)
            camera_rate = self._stamps.camera_rate_hz()
            lost = self._stamps.lost if camera_rate else None
            lost_now = (lost or 0) - self._previous_lost
            self._previous_lost = lost or 0
            late_start = self._stamps.late_start_lost
            late_start_now = late_start - self._previous_late_start
            self._previous_late_start = late_start
        # frames stamped before the camera's first arrival are a late start, not the
        # transport's: they do not count towards the hint
        received_now = counters.received - (previous.received if previous else 0)
        hint = self.lost_frames_hint if self.lost_frames_hint and hint_applies(
            lost_now - late_start_now, received_now) else ""
        return build_status(
            counters=counters,
            previous_counters=previous,
            engine_stats=engine_stats,
            input_rate_hz=input_rate,
            output_rate_hz=output_rate,
            image_ages_ms=ages,
            latency_budget_ms=latency_budget_ms,
            min_output_hz=min_output_hz,
            name=self.name,
            hardware_id=self.hardware_id,
            camera_rate_hz=camera_rate,
            lost_before_node=lost,
            lost_before_node_now=lost_now,
            lost_frames_hint=hint,
        )


def to_diagnostic_array(statuses, header, array_cls, status_cls, kv_cls):
    """A DiagnosticArray of `array_cls` holding `statuses` (one content or a list).

    Works with rclpy's diagnostic_msgs classes and with rosbags' dataclasses: every
    message is built with keyword arguments, and `level` takes the type of the class's
    own `OK` constant (bytes in rclpy, int in rosbags).
    """
    if isinstance(statuses, DiagnosticStatusContent):
        statuses = [statuses]
    as_bytes = isinstance(getattr(status_cls, "OK", 0), bytes)
    messages = [
        status_cls(
            level=bytes([status.level]) if as_bytes else int(status.level),
            name=status.name,
            message=status.message,
            hardware_id=status.hardware_id,
            values=[kv_cls(key=key, value=value) for key, value in status.values],
        )
        for status in statuses
    ]
    return array_cls(header=header, status=messages)


def rosbags_diagnostic_array(statuses, stamp_ns: int, typestore=None, frame_id: str = ""):
    """A rosbags diagnostic_msgs/msg/DiagnosticArray (ROS 2 Humble types unless a type
    store is given) stamped `stamp_ns` nanoseconds, for replay to write into a bag."""
    if typestore is None:
        from rosbags.typesys import Stores, get_typestore

        typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    stamp = types["builtin_interfaces/msg/Time"](
        sec=int(stamp_ns) // 1_000_000_000, nanosec=int(stamp_ns) % 1_000_000_000
    )
    header = types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)
    return to_diagnostic_array(
        statuses,
        header,
        types["diagnostic_msgs/msg/DiagnosticArray"],
        types["diagnostic_msgs/msg/DiagnosticStatus"],
        types["diagnostic_msgs/msg/KeyValue"],
    )


def _plan_values(plans: dict) -> list[tuple[str, str]]:
    """The engine's prepared plans: how many, and what preparing them cost (each prepare
    stalls the worker: autotuning, warm-up, CUDA graph capture)."""
    values = []
    for key, label in (("cached", "plans cached"), ("prepares", "plans prepared")):
        if plans.get(key) is not None:
            values.append((label, str(plans[key])))
    for key, label in (("last_prepare_ms", "last prepare (ms)"),
                       ("total_prepare_ms", "total prepare (ms)")):
        if plans.get(key) is not None:
            values.append((label, _ms(plans[key])))
    return values
