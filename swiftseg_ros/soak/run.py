"""The soak loop: the camera's frames at their rate, the faults at their times, memory
every second, and at the end the windows, the fault reports and the verdict.

Everything happens on the calling thread (the camera, the fault actions, spinning the
node's executor), except the node's worker, which segments and publishes on its own, as
in the node. A fault action that raises (a transition that failed) ends the soak there:
the failure names the minute and carries the log lines around it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.memory import resident_mb
from swiftseg_ros.soak.camera import (
    COMPRESSED_CORRUPTIONS,
    RAW_CORRUPTIONS,
    Shot,
    SyntheticCamera,
)
from swiftseg_ros.soak.faults import FAULTS, Fault, disturbed, schedule
from swiftseg_ros.soak.record import Recorder, cuda_mb, judge
from swiftseg_ros.soak.targets import SoakFailure, make_target, stamp_key

# Size faults rotate through the base size scaled by these (width, height) factors: five
# sizes besides the camera's own, more than the default plan cache (4) holds, so plans are
# evicted and prepared again over a long soak.
SIZE_FACTORS = ((0.5, 0.5), (0.75, 0.75), (1.25, 1.25), (0.625, 0.5), (1.0, 0.75))
RAW_ENCODINGS = (("rgb8", "bgr8"), ("rgb8", "mono8"))
COMPRESSED_CODECS = (("png", "bgr8"), ("jpeg", "mono8"))
STAMP_OFFSETS = {"stamp_back": -30.0, "stamp_ahead": 3600.0}
BURST_FACTOR = 3.0
# A fault not followed by a published frame within this long (and before the end) was
# not survived.
RECOVER_S = 90.0
# "max" rate: the next frame goes when the previous one's output came, or after this.
MAX_RATE_WAIT_S = 1.0
MEMORY_EVERY_S = 1.0
# How long the first frame may take to be published (the first preparation).
FIRST_OUTPUT_WAIT_S = 300.0


@dataclass
class SoakOptions:
    minutes: float
    rate_hz: float | None  # None: as fast as the node takes them
    width: int = 640
    height: int = 480
    params: dict[str, Any] = field(default_factory=dict)
    faults: bool = True
    fault_every_s: float = 20.0
    window_s: float = 60.0
    ros: bool | None = None  # None: rclpy where it imports


class _LogLines(logging.Handler):
    """The package's Python log lines (engine, pipeline, node) into the soak's events."""

    def __init__(self, recorder: Recorder, clock):
        super().__init__(level=logging.INFO)
        self._recorder, self._clock = recorder, clock

    def emit(self, record: logging.LogRecord) -> None:
        self._recorder.event(self._clock(), f"{record.levelname} {record.getMessage()}")


def run_soak(options: SoakOptions, say=print) -> dict:
    """Run the soak; the result is what soak.json holds."""
    if resident_mb() is None:
        raise ConfigError("the soak reads its memory from /proc/self/status (Linux only)")
    total_s = options.minutes * 60.0
    recorder = Recorder(window_s=options.window_s)
    t0 = [time.monotonic()]

    def clock() -> float:
        return time.monotonic() - t0[0]

    recorder.use_clock(clock)
    package_log = logging.getLogger("swiftseg_ros")
    handler = _LogLines(recorder, clock)
    package_log.addHandler(handler)
    target = None
    try:
        target = make_target(options.params, recorder.output, ros=options.ros)
        rate = f"{options.rate_hz:g} Hz" if options.rate_hz else "max rate"
        every = f"every {options.fault_every_s:g} s" if options.faults else "off"
        say(f"soak: {target.kind}, {options.width}x{options.height} "
            f"{'compressed' if target.compressed else 'raw'} at {rate} for "
            f"{options.minutes:g} min, faults {every}")
        # the faults begin after 5 s of a clean camera, or within the first window
        faults = (schedule(total_s, options.fault_every_s, quiet_s=min(5.0, options.window_s),
                           tour_sizes=len(SIZE_FACTORS), warmup_s=options.window_s)
                  if options.faults else [])
        camera = SyntheticCamera(compressed=target.compressed, image_cls=target.image_cls,
                                 compressed_cls=target.compressed_cls,
                                 header_factory=target.header)
        target.start()
        _until_first_output(options, target, camera, recorder)
        t0[0] = time.monotonic()
        failures = _loop(options, target, camera, faults, recorder, clock, total_s)
        end_s = clock()
        target.deactivate()
        counters = target.counters()
    finally:
        package_log.removeHandler(handler)
        if target is not None:
            target.close()
    windows = recorder.windows(min(end_s, total_s) if not failures else end_s)
    fault_reports = [_fault_report(fault, recorder, end_s) for fault in faults
                     if fault.start_s < end_s]
    verdict = judge(windows, counters, fault_reports, failures,
                    [(t, rss) for t, rss, _ in recorder.memory])
    return {
        "options": {**asdict(options), "params": dict(options.params)},
        "target": target.kind,
        "transport": "compressed" if target.compressed else "raw",
        "duration_s": round(end_s, 3),
        "frames": {"soak_camera": {
            "sent": recorder.sent, "corrupt_sent": recorder.corrupt_sent,
            "received": counters.received, "published": counters.processed,
            "dropped": counters.dropped, "rejected": counters.rejected,
            "failed": counters.failed, "pending": counters.pending,
            "in_flight": counters.in_flight, "label_outputs_seen": recorder.outputs,
            "lost_before_the_node": recorder.sent - counters.received,
            "last_rejection": counters.last_rejection, "last_failure": counters.last_failure,
        }},
        "windows": [asdict(w) for w in windows],
        "memory": [{"t_s": round(t, 2), "rss_mb": round(m, 2),
                    "cuda_mb": None if c is None else round(c, 2)}
                   for t, m, c in recorder.memory],
        "faults": fault_reports,
        "failures": failures,
        "verdict": verdict.as_dict(),
    }


def _loop(options, target, camera, faults, recorder, clock, total_s) -> list[str]:
    """Frames, faults and memory samples until `total_s`; the failures on the way."""
    base = Shot(options.width, options.height,
                encoding="rgb8" if not target.compressed else "bgr8")
    pending_faults = list(faults)
    active: Fault | None = None
    period = 1.0 / options.rate_hz if options.rate_hz else None
    next_frame = next_memory = 0.0
    outputs_at_send = -1
    while (t := clock()) < total_s:
        try:
            if active is not None and t >= active.end_s:
                _end_fault(active, target)
                recorder.event(t, f"fault {active.kind} #{active.number} ends")
                active = None
            if active is None and pending_faults and t >= pending_faults[0].start_s:
                active = pending_faults.pop(0)
                recorder.event(t, f"fault {active.kind} #{active.number} starts: "
                                  f"{FAULTS[active.kind][1]}")
                _start_fault(active, target)
        except Exception as exc:
            recorder.event(t, f"FAILED {type(exc).__name__}: {exc}")
            return [_failure_text(f"{active.kind if active else 'soak'} fault", t, exc,
                                  recorder)]
        if t >= next_memory:
            recorder.sample_memory(t, resident_mb(), cuda_mb())
            next_memory += MEMORY_EVERY_S
        # max rate: the next frame as soon as the previous one's output came, or after
        # the wait (it was dropped or rejected)
        if t >= next_frame or (period is None and recorder.outputs > outputs_at_send):
            outputs_at_send = recorder.outputs
            shot = _shot(base, active, camera.index, target.compressed)
            if shot is not None:
                msg = camera.message(shot, time.time())
                recorder.frame_sent(stamp_key(msg.header.stamp), t, disturbed(faults, t),
                                    corrupt=shot.corruption is not None)
                target.send(msg)
            if period is not None:
                rate = BURST_FACTOR if active is not None and active.kind == "burst" else 1.0
                next_frame = max(next_frame + period / rate, t - period)
            else:
                next_frame = t + MAX_RATE_WAIT_S
        wait = (min(next_frame, next_memory) - clock()) if period else 0.005
        target.poll(min(max(wait, 0.0), 0.05))
    if active is not None:
        _end_fault(active, target)
    return []


def _until_first_output(options, target, camera, recorder) -> None:
    """Clean frames at the soak's rate until one is published: the engine prepares for the
    camera's size on the first (seconds, longer with an ONNX graph to export), which is
    the node starting, not the soak. Not counted in the soak's figures."""
    base = Shot(options.width, options.height,
                encoding="bgr8" if target.compressed else "rgb8")
    period = 1.0 / options.rate_hz if options.rate_hz else 0.1
    deadline = time.monotonic() + FIRST_OUTPUT_WAIT_S
    while recorder.outputs == 0:
        if time.monotonic() > deadline:
            raise SoakFailure(f"no frame published within {FIRST_OUTPUT_WAIT_S:g} s of "
                              "activate: the node does not segment the camera's frames")
        msg = camera.message(base, time.time())
        recorder.frame_sent(stamp_key(msg.header.stamp), 0.0, disturbed=True, corrupt=False)
        target.send(msg)
        target.poll(period)
    recorder.reset()


def _shot(base: Shot, fault: Fault | None, index: int, compressed: bool) -> Shot | None:
    """What the camera sends at this moment; None: nothing (paused, publisher gone)."""
    if fault is None:
        return base
    kind, number = fault.kind, fault.number
    if kind in ("pause", "restart"):
        return None
    if kind == "size":
        fx, fy = SIZE_FACTORS[number % len(SIZE_FACTORS)]
        return base.but(width=max(int(base.width * fx) // 2 * 2, 16),
                        height=max(int(base.height * fy) // 2 * 2, 16))
    if kind == "encoding":
        if compressed:
            codec, encoding = COMPRESSED_CODECS[number % len(COMPRESSED_CODECS)]
            return base.but(codec=codec, encoding=encoding)
        return base.but(encoding=RAW_ENCODINGS[number % len(RAW_ENCODINGS)][1])
    if kind == "corrupt":
        kinds = COMPRESSED_CORRUPTIONS if compressed else RAW_CORRUPTIONS
        return base.but(corruption=kinds[index % len(kinds)])
    if kind in STAMP_OFFSETS:
        return base.but(stamp_offset_s=STAMP_OFFSETS[kind])
    return base


def _start_fault(fault: Fault, target) -> None:
    if fault.kind == "restart":
        target.camera_down()
    elif fault.kind == "outputs":
        target.set_outputs(color=False, overlay=True)
    elif fault.kind == "lifecycle":
        target.deactivate()


def _end_fault(fault: Fault, target) -> None:
    if fault.kind == "restart":
        target.camera_up()
    elif fault.kind == "outputs":
        target.set_outputs(color=True, overlay=False)
    elif fault.kind == "lifecycle":
        target.activate()


def _fault_report(fault: Fault, recorder: Recorder, end_s: float) -> dict:
    first = recorder.first_output_after(fault.end_s)
    recovered = None if first is None else round(first - fault.end_s, 3)
    # a fault too close to the end to judge counts as survived unless the soak failed
    survived = first is not None and first - fault.end_s <= RECOVER_S \
        or (first is None and end_s - fault.end_s < RECOVER_S)
    return {"kind": fault.kind, "number": fault.number, "start_s": round(fault.start_s, 3),
            "duration_s": fault.duration_s, "survived": bool(survived),
            "first_published_frame_sent_after_s": recovered}


def _failure_text(what: str, t: float, exc: BaseException, recorder: Recorder) -> str:
    around = [f"  [{when:8.2f} s] {text}" for when, text in recorder.events
              if t - 30.0 <= when <= t + 1.0][-20:]
    return (f"{what} not survived at minute {t / 60:.2f}: {type(exc).__name__}: {exc}\n"
            + "\n".join(around))
