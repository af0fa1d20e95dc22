"""How a plan's device pass is warmed up, finished and launched: eagerly on the CPU, or on
the engine's own CUDA stream as a captured CUDA graph.

The core (engine.py) builds a plan and calls its launcher; everything that knows of
streams, graph pools and capture lives here (and in cuda_support.py below it). On CUDA
the part from the upload to the download is captured once per plan on the engine's
stream and replayed per frame; the stage timing events are part of the graph, so
timing costs no extra synchronization. Every plan's graph is captured into one pool
(see plans.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch

from swiftseg_ros.engine.cuda_support import capture_graph, empty_host_cache, math_mode
from swiftseg_ros.engine.timing import DEVICE_STAGES, CpuStageClock, CudaStageClock

log = logging.getLogger("swiftseg_ros.engine")


class CpuLauncher:
    """The CPU: every pass runs eagerly, in program order, timed by perf counters."""

    stream = None

    def __init__(self, config):
        self.config = config

    def clock(self):
        return CpuStageClock()

    def pick(self, pick: Callable):
        """Run the candidates' timing (`pick(sync)`)."""
        return pick(None)

    def warm_up(self, plan, run: Callable) -> None:
        for _ in range(self.config.warmup_iters - 1):
            run(plan)

    def finish(self, plan, run: Callable) -> None:
        plan.note = "not on CUDA"

    def launch(self, plan, run: Callable) -> None:
        run(plan)

    def wait(self) -> None:
        """Nothing is asynchronous on the CPU."""

    def memory(self) -> None:
        """Host memory is not the engine's to report."""

    def release(self) -> None:
        """Nothing held."""


class CudaLauncher:
    """The engine's CUDA stream, its graph pool and the capture of each plan."""

    def __init__(self, config, device: torch.device):
        self.config = config
        self.device = device
        torch.backends.cudnn.benchmark = True  # autotuned once per shape, in warm-up
        self.stream = torch.cuda.Stream(device)
        # every plan's graph is captured into this one pool (see plans.py)
        self._pool = torch.cuda.graph_pool_handle()

    def clock(self):
        return CudaStageClock(torch)

    def pick(self, pick: Callable):
        """Run the candidates' timing on the engine's stream, where the pass will run."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            return pick(self.stream.synchronize)

    def warm_up(self, plan, run: Callable) -> None:
        """CUDA graph recipe: warm up on a side stream (ours), then capture on it; at
        least one full pass (with the copies) runs on it before the capture."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for _ in range(max(1, self.config.warmup_iters - 1)):
                run(plan)
        self.stream.synchronize()

    def finish(self, plan, run: Callable) -> None:
        plan.graph = self._capture(plan, run)
        plan.clock.outer = plan.graph is not None and not plan.clock.graph_safe
        plan.done = torch.cuda.Event()

    def launch(self, plan, run: Callable) -> None:
        """Start the device pass of `plan`, asynchronous, on the engine's stream."""
        stream = self.stream
        with torch.cuda.stream(stream):
            if plan.graph is None:
                with math_mode(self.config.tf32):
                    run(plan)
            elif plan.clock.outer:
                plan.clock.mark(0, stream)
                plan.graph.replay()
                plan.clock.mark(len(DEVICE_STAGES), stream)
            else:
                plan.graph.replay()

    def wait(self) -> None:
        self.stream.synchronize()

    def memory(self) -> dict:
        """Device memory in MiB: allocated now, peak, reserved by the caching allocator."""
        mib = 1024.0 * 1024.0
        return {
            "allocated_mb": torch.cuda.memory_allocated(self.device) / mib,
            "peak_mb": torch.cuda.max_memory_allocated(self.device) / mib,
            "reserved_mb": torch.cuda.memory_reserved(self.device) / mib,
        }

    def release(self) -> None:
        torch.cuda.synchronize(self.device)
        self.stream = None
        self._pool = None
        torch.cuda.empty_cache()
        empty_host_cache()

    def _capture(self, plan, run: Callable):
        """One CUDA graph of the plan's device pass, or None (eager) with `plan.note` why.

        Without graph-safe timing events (older torch) the pass is captured without its
        stage marks and `launch` times the replay from outside.
        """
        if not self.config.cuda_graphs:
            plan.note = "cuda_graphs off"
            return None
        marks = plan.clock.graph_safe
        graph = torch.cuda.CUDAGraph()
        failure = None
        try:
            capture_graph(graph, lambda: run(plan, marks=marks), self.stream, self._pool)
            with torch.cuda.stream(self.stream):
                graph.replay()
            self.stream.synchronize()
        except Exception as exc:  # any capture failure: run eager, keep the reason visible
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            failure = f"CUDA graph capture failed: {type(exc).__name__}: {first_line}"
        if failure is not None:
            # out of the except block: its traceback held the failed pass's tensors
            plan.note = failure
            log.warning("engine: %s; running eager", failure)
            with contextlib.suppress(Exception):
                graph.reset()
            del graph
            # later captures go to a fresh pool: the failed one may still be winding down
            self._pool = torch.cuda.graph_pool_handle()
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()  # the failed capture's blocks
            return None
        plan.note = "captured" if marks else "captured; stage times from outside the graph"
        return graph
