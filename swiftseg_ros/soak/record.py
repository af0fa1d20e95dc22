"""The soak's measurements and its verdict.

Latency is the time from sending a frame to receiving its label output, matched by header
stamp (so stamps that jump do not distort it); "steady" latency leaves out frames sent
during a fault or within `faults.SETTLE_S` after it (a new size's preparation is not a
drift). Memory is the process's resident set (the node runs in it), sampled every second,
and the device memory where CUDA is in use.

The verdict, after the first window (warm-up: plans, caches, the allocator's first
growth): memory's floor may not rise more than `MEMORY_BOUND_MB` (`memory_growth`: the
lowest sample of the later half of the time after the warm-up against the lowest of the
earlier half). Resident memory moves in steps as the plan cache swaps input sizes (a
size fault prepares a plan and evicts another: up and down by up to 200 MB), so two
samples compare like with like only in the same cache state; each half of a 60-minute
soak goes through every state of the size rotation, so a step that comes back down
leaves both floors equal, while a leak raises every level, the floor too. The steady p99 of the last window may not be more than
`P99_DRIFT_BOUND` above the second window's; every frame the node received must be
published, dropped, rejected or failed; no frame may fail; every fault must be followed by
a published frame.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from swiftseg_ros.ros.frames import FrameCounters

MEMORY_BOUND_MB = 20.0
P99_DRIFT_BOUND = 0.20
# Sent frames whose output never came are forgotten after this long (dropped ones).
PENDING_S = 120.0


def cuda_mb() -> float | None:
    """Memory PyTorch holds on the current CUDA device (MB), None without CUDA in use."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.memory_reserved() / 2**20


@dataclass
class Window:
    start_s: float
    frames: int
    p50_ms: float | None
    p99_ms: float | None
    steady_frames: int
    steady_p50_ms: float | None
    steady_p99_ms: float | None
    rss_median_mb: float | None
    rss_max_mb: float | None
    cuda_max_mb: float | None


@dataclass
class Recorder:
    window_s: float
    sent: int = 0
    corrupt_sent: int = 0
    outputs: int = 0
    latencies: list[tuple[float, float, bool]] = field(default_factory=list)
    memory: list[tuple[float, float, float | None]] = field(default_factory=list)
    events: deque = field(default_factory=lambda: deque(maxlen=400))

    def __post_init__(self):
        self._lock = threading.Lock()
        self._pending: dict[tuple, tuple[float, float, bool]] = {}  # key -> (t, mono, dist.)
        self._clock = None

    def use_clock(self, clock) -> None:
        """`clock()`: seconds since the soak began (monotonic)."""
        self._clock = clock

    def reset(self) -> None:
        """Forget the outputs and latencies so far (those before the soak's start); the
        frames sent stay counted (the node's counters have them too)."""
        with self._lock:
            self.outputs = 0
            self._pending.clear()
            self.latencies.clear()

    def frame_sent(self, key: tuple, t: float, disturbed: bool, corrupt: bool) -> None:
        with self._lock:
            self.sent += 1
            self.corrupt_sent += corrupt
            self._pending[key] = (t, disturbed)
            if len(self._pending) > 4096:
                old = [k for k, (sent_t, _) in self._pending.items() if sent_t < t - PENDING_S]
                for k in old:
                    del self._pending[k]

    def output(self, key: tuple) -> None:
        """A label output arrived (any thread)."""
        now = self._clock()
        with self._lock:
            self.outputs += 1
            sent = self._pending.pop(key, None)
            if sent is not None:
                self.latencies.append((sent[0], (now - sent[0]) * 1000.0, sent[1]))

    def sample_memory(self, t: float, rss: float, cuda: float | None) -> None:
        self.memory.append((t, rss, cuda))

    def event(self, t: float, text: str) -> None:
        with self._lock:
            self.events.append((t, text))

    def first_output_after(self, t: float) -> float | None:
        """The send time of the first frame sent at or after `t` that was published."""
        with self._lock:
            times = [sent for sent, _, _ in self.latencies if sent >= t]
        return min(times) if times else None

    def windows(self, total_s: float) -> list[Window]:
        count = max(int(np.ceil(total_s / self.window_s - 1e-9)), 1)
        with self._lock:
            latencies = np.array([(t, ms, d) for t, ms, d in self.latencies],
                                 dtype=np.float64).reshape(-1, 3)
        memory = self.memory
        result = []
        for index in range(count):
            start, end = index * self.window_s, (index + 1) * self.window_s
            rows = latencies[(latencies[:, 0] >= start) & (latencies[:, 0] < end)]
            steady = rows[rows[:, 2] == 0]
            rss = [m for t, m, _ in memory if start <= t < end]
            cuda = [c for t, _, c in memory if start <= t < end and c is not None]
            result.append(Window(
                start_s=start, frames=len(rows),
                p50_ms=_percentile(rows[:, 1], 50), p99_ms=_percentile(rows[:, 1], 99),
                steady_frames=len(steady),
                steady_p50_ms=_percentile(steady[:, 1], 50),
                steady_p99_ms=_percentile(steady[:, 1], 99),
                rss_median_mb=float(np.median(rss)) if rss else None,
                rss_max_mb=float(max(rss)) if rss else None,
                cuda_max_mb=float(max(cuda)) if cuda else None))
        return result


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


@dataclass
class Verdict:
    ok: bool
    reasons: list[str]
    memory_growth_mb: float | None
    p99_drift: float | None
    unaccounted: int

    def as_dict(self) -> dict:
        return asdict(self)


def memory_growth(samples: list[tuple[float, float]], warmup_s: float) -> float | None:
    """How far the floor of resident memory rose after the warm-up (module docstring):
    `samples` are (seconds, MB); the lowest sample from the middle of the time between
    `warmup_s` and the last sample on, less the lowest before it. None without samples
    in both halves."""
    after = [(t, mb) for t, mb in samples if t >= warmup_s]
    if not after:
        return None
    middle = (warmup_s + after[-1][0]) / 2.0
    early = [mb for t, mb in after if t < middle]
    late = [mb for t, mb in after if t >= middle]
    return (min(late) - min(early)) if early and late else None


def judge(windows: list[Window], counters: FrameCounters, fault_reports: list[dict],
          failures: list[str], memory: list[tuple[float, float]]) -> Verdict:
    """The soak's verdict (module docstring); `failures` are what went wrong on the way,
    `memory` the (seconds, resident MB) samples."""
    reasons = list(failures)
    # two windows after the warm-up at least, as for the p99's drift
    growth = memory_growth(memory, windows[1].start_s) if len(windows) >= 3 else None
    if growth is not None and growth > MEMORY_BOUND_MB:
        reasons.append(f"memory's floor rose {growth:.1f} MB from the earlier half after "
                       f"the first window to the later half (bound {MEMORY_BOUND_MB:g} MB)")
    steady = [w for w in windows[1:] if w.steady_p99_ms]
    drift = ((steady[-1].steady_p99_ms - steady[0].steady_p99_ms) / steady[0].steady_p99_ms
             if len(steady) >= 2 else None)
    if drift is not None and drift > P99_DRIFT_BOUND:
        reasons.append(f"steady p99 drifted {drift * 100:+.0f} % from the second window to "
                       f"the last ({steady[0].steady_p99_ms:.1f} -> "
                       f"{steady[-1].steady_p99_ms:.1f} ms; bound "
                       f"{P99_DRIFT_BOUND * 100:.0f} %)")
    unaccounted = counters.received - (counters.processed + counters.dropped
                                       + counters.rejected + counters.failed)
    if unaccounted:
        reasons.append(f"{unaccounted} frames unaccounted for: received {counters.received}"
                       f" != published {counters.processed} + dropped {counters.dropped} + "
                       f"rejected {counters.rejected} + failed {counters.failed}")
    if counters.failed:
        reasons.append(f"{counters.failed} frames failed (last: {counters.last_failure})")
    for report in fault_reports:
        if not report["survived"]:
            reasons.append(f"no frame published after the {report['kind']} fault at minute "
                           f"{report['start_s'] / 60:.1f}")
    return Verdict(ok=not reasons, reasons=reasons, memory_growth_mb=growth, p99_drift=drift,
                   unaccounted=unaccounted)


# How judge()'s own reasons begin, the 20 MB median rule's included: the rest of a saved
# verdict's reasons are the failures on the way (files written before "failures" was kept).
_JUDGED = ("memory grew", "memory's floor", "steady p99", "no frame published after")


def rejudge(result: dict) -> Verdict:
    """The verdict of a saved soak.json under this module's rules (`swiftseg-soak
    --judge`): its windows, frame counts, faults and memory samples judged again."""
    frames = result["frames"]["soak_camera"]
    counters = FrameCounters(received=frames["received"], processed=frames["published"],
                             dropped=frames["dropped"], rejected=frames["rejected"],
                             failed=frames["failed"], last_failure=frames["last_failure"])
    failures = result.get("failures")
    if failures is None:
        failures = [reason for reason in result["verdict"]["reasons"]
                    if not reason.startswith(_JUDGED) and "frames unaccounted" not in reason
                    and "frames failed" not in reason]
    return judge([Window(**window) for window in result["windows"]], counters,
                 result["faults"], failures,
                 [(sample["t_s"], sample["rss_mb"]) for sample in result["memory"]])
