"""The benchmark's runners, each timed from outside the same way, and steady-state memory.

Every runner is a callable returning `(ms, timings or None)`: `ms` is the host clock
around the whole step plus a device synchronization, so the engine's frame checks,
event reads and bookkeeping count like any runner's work, and device work still
queued counts too. The engine's own `timings["total"]` leaves those out and is not
used for comparisons.

- `engine_runner`: `SegmentationEngine.infer`, one frame.
- `pipelined_runner`: a burst of frames through `infer_pipelined` and a final flush;
  ms per frame, so it compares with the serial runner as throughput.
- `BareRunner`: the engine's own chosen forward on its pre-processed device input
  (`engine.run_forward`) + `max(1)`, eager or replayed from a CUDA graph captured like
  the engine's (the floor for a graphed engine is a graphed network, not an eager one).

Runners hold the engine (and its model) only until `close()`, so that `engine.release()`
frees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from swiftseg_ros.engine.cuda_support import capture_graph, math_mode


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for all work on `device` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(step: Callable[[], object], sync: Callable[[], None],
          clock: Callable[[], float] = time.perf_counter, frames: int = 1):
    """A runner: ms per frame of `step()` plus `sync()` (the step's result is dropped)."""
    def run():
        started = clock()
        step()
        sync()
        return (clock() - started) * 1000.0 / frames, None

    return run


def engine_runner(engine, frame: np.ndarray, pixel_format: str = "rgb8",
                  clock: Callable[[], float] = time.perf_counter):
    """A runner of one `engine.infer`, also returning the frame's stage timings."""
    sync = device_sync(engine.device)

    def run():
        started = clock()
        timings = engine.infer(frame, pixel_format).timings
        sync()
        return (clock() - started) * 1000.0, timings

    return run


def pipelined_runner(engine, frame: np.ndarray, burst: int, pixel_format: str = "rgb8"):
    """ms per frame over `burst` pipelined frames, the last one flushed."""
    if burst < 2:
        raise ValueError(f"burst {burst}, expected >= 2 (one frame cannot overlap another)")

    def step():
        for _ in range(burst):
            engine.infer_pipelined(frame, pixel_format)
        engine.flush_pipelined()

    return timed(step, device_sync(engine.device), frames=burst)


class BareRunner:
    """The engine's chosen forward + `max(1)` on its pre-processed input.

    With `graph=True` on CUDA the step is captured once (after a warm-up on the same
    side stream, into a graph of its own) and replayed; `note` says why not if the
    capture failed.
    """

    def __init__(self, engine, graph: bool = False, warmup: int = 2):
        self.device = engine.device
        self._tf32 = engine.config.tf32
        self._forward = engine.run_forward
        self._graph = None
        self.note = "eager"
        if graph and self.device.type == "cuda":
            self._capture(warmup)

    def _step(self):
        with math_mode(self._tf32):  # the engine's arithmetic, not the process default
            return self._forward().max(1)[1]

    def _capture(self, warmup: int) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(max(1, warmup)):
                self._step()
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        self._outputs = []  # the graph's output lives in its pool: keep it referenced
        try:
            with torch.inference_mode():
                capture_graph(graph, lambda: self._outputs.append(self._step()), stream)
        except Exception as exc:  # the eager runner then stands in, with the reason
            self.note = f"capture failed: {type(exc).__name__}: {exc}"
            return
        self._graph, self.note = graph, "graph"

    @property
    def graphed(self) -> bool:
        return self._graph is not None

    def runner(self):
        if self._graph is None:
            return timed(self._step, device_sync(self.device))
        # replayed on the current stream, like the engine's frames are waited for
        return timed(self._graph.replay, device_sync(self.device))

    def close(self) -> None:
        """Drop the engine's forward and the graph, so the engine's release frees them."""
        if self._graph is not None:
            self._graph.reset()
        self._graph = self._forward = None
        self._outputs = []


def steady_memory(engine, frame: np.ndarray, baseline: dict, frames: int = 3) -> dict:
    """Device memory (MiB) the engine holds in steady state, beyond `baseline`.

    Call `memory_baseline()` before the engine is built and this after its first
    frame: cached blocks (cuDNN autotune workspaces included) are returned first and
    the peak is reset, so `peak_mb` is the allocated peak over `frames` steady frames
    and `reserved_mb` what stays reserved (CUDA graph pools are reserved, not
    allocated, between replays).
    """
    if engine.device.type != "cuda":
        return {"peak_mb": None, "reserved_mb": None}
    device = engine.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(frames):
        engine.infer(frame, "rgb8")
    torch.cuda.synchronize(device)
    mib = float(2 ** 20)
    return {
        "peak_mb": (torch.cuda.max_memory_allocated(device) - baseline["allocated"]) / mib,
        "reserved_mb": (torch.cuda.memory_reserved(device) - baseline["reserved"]) / mib,
    }


def memory_baseline(device: torch.device) -> dict:
    """Allocated and reserved bytes on `device` now, after returning cached blocks."""
    if device.type != "cuda":
        return {"allocated": 0, "reserved": 0}
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    return {"allocated": torch.cuda.memory_allocated(device),
            "reserved": torch.cuda.memory_reserved(device)}
