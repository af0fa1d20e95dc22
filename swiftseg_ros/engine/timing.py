"""Per-stage frame timing: stage clocks (perf counter on CPU, CUDA events on the GPU) and
a fixed-size window of recent frames for percentiles, so statistics never grow memory.
"""

from __future__ import annotations

import time

import numpy as np

STAGES = ("host_copy", "upload", "preprocess", "forward", "postprocess", "download", "total")
# The device stages, in order; their boundaries are what the clocks mark.
DEVICE_STAGES = STAGES[1:6]
PERCENTILES = (50, 90, 95, 99)
DEFAULT_WINDOW = 1000


class StageWindow:
    """The last `size` frames' stage times (ms) and end times, in a preallocated ring."""

    def __init__(self, size: int = DEFAULT_WINDOW):
        if size < 1:
            raise ValueError(f"window size {size}, expected >= 1")
        self.size = size
        self._ms = np.zeros((size, len(STAGES)), dtype=np.float64)
        self._ends = np.zeros(size, dtype=np.float64)
        self._next = 0
        self.frames = 0

    def add(self, timings: dict[str, float], end_time: float) -> None:
        row = self._ms[self._next]
        for i, stage in enumerate(STAGES):
            row[i] = timings[stage]
        self._ends[self._next] = end_time
        self._next = (self._next + 1) % self.size
        self.frames += 1

    def __len__(self) -> int:
        return min(self.frames, self.size)

    def summary(self) -> dict:
        """Per stage p50/p90/p95/p99/max/mean (ms) over the window, plus rates (Hz).

        A stage recorded as NaN (not timed: a CUDA graph timed from outside) is left out
        of its percentiles, and out of `stages` when no frame in the window timed it.

        `rate_hz` is frames finished per second of wall time across the window (what a
        subscriber sees); `throughput_hz` is 1000 / mean total time (what the engine
        could do if frames never waited).
        """
        count = len(self)
        out = {"frames": self.frames, "window": count, "stages": {}}
        if count == 0:
            out.update(rate_hz=None, throughput_hz=None)
            return out
        ms = self._ms[:count]
        for i, stage in enumerate(STAGES):
            column = ms[:, i]
            column = column[~np.isnan(column)]
            if column.size == 0:
                continue  # a stage no frame in the window could time (see CudaStageClock)
            values = np.percentile(column, PERCENTILES)
            entry = {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}
            entry["max"] = float(column.max())
            entry["mean"] = float(column.mean())
            out["stages"][stage] = entry
        ends = self._ends[:count]
        span = float(ends.max() - ends.min())
        out["rate_hz"] = (count - 1) / span if count > 1 and span > 0 else None
        mean_total = out["stages"]["total"]["mean"]
        out["throughput_hz"] = 1000.0 / mean_total if mean_total > 0 else None
        return out


class CpuStageClock:
    """Marks stage boundaries with time.perf_counter (CPU work runs in program order)."""

    def __init__(self):
        self._marks = [0.0] * (len(DEVICE_STAGES) + 1)

    def mark(self, index: int, stream=None) -> None:
        self._marks[index] = time.perf_counter()

    def read(self) -> dict[str, float]:
        return {stage: (self._marks[i + 1] - self._marks[i]) * 1000.0
                for i, stage in enumerate(DEVICE_STAGES)}


class CudaStageClock:
    """Marks stage boundaries with CUDA timing events recorded in the engine's stream.

    Where this torch has "external" events (`graph_safe`), marks recorded while a CUDA
    graph is captured become event-record nodes of the graph and time each replay's
    stages. Older torch (JetPack's) cannot put timing events in a graph: the graph is
    then captured without marks and timed from outside, by marking the first and last
    boundary around the replay (`outer`): the device stages' sum is known, not the split,
    and `read` gives NaN for each device stage plus their sum under "device". The events
    are read after the frame's synchronization, so reading them never waits. One clock
    per plan: the pipelined mode has two graphs in flight at once.
    """

    def __init__(self, torch_module, graph_safe: bool | None = None):
        from swiftseg_ros.engine.cuda_support import graph_timing_events_supported

        self.graph_safe = (graph_timing_events_supported() if graph_safe is None
                           else graph_safe)
        options = {"external": True} if self.graph_safe else {}
        self._events = [torch_module.cuda.Event(enable_timing=True, **options)
                        for _ in range(len(DEVICE_STAGES) + 1)]
        self.outer = False

    def mark(self, index: int, stream=None) -> None:
        self._events[index].record(stream)

    def read(self) -> dict[str, float]:
        events = self._events
        if self.outer:
            timings = dict.fromkeys(DEVICE_STAGES, float("nan"))
            timings["device"] = float(events[0].elapsed_time(events[-1]))
            return timings
        return {stage: float(events[i].elapsed_time(events[i + 1]))
                for i, stage in enumerate(DEVICE_STAGES)}
