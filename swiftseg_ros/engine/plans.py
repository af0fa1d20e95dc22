"""The engine's prepared plans: buffers and CUDA graph per input, kept in a bounded cache.

A plan is everything one input shape needs: the host/device buffers (FrameIO), the
pre- and post-processing with their buffers, the captured CUDA graph and the stage
clock whose events the graph records. Preparing one costs cuDNN autotuning, warm-up
passes and a capture: tens of milliseconds to seconds, during which the node's worker
takes no frames. The node re-plans whenever a subscriber comes or goes (the computed
outputs change) and a camera may switch sizes, so plans are kept by key in a small
least-recently-used cache instead of being rebuilt each time; on CUDA all of them are
captured into one graph memory pool, which is safe because the engine replays them on
one stream, one after another, and no graph output lives in the pool (every output is
a buffer allocated before the capture).

`PlanKey.slot` tells apart the two plans of the same input that the pipelined mode
alternates between (engine.infer_pipelined); plain `infer` uses slot 0. `PlanKey.batch`
is the number of frames one forward pass takes (engine.infer_batch; 1 for `infer`): a
batch has buffers, and on CUDA a graph, of its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlanKey:
    """What a plan's buffers and graph were made for."""

    height: int
    width: int
    outputs: tuple[str, ...]
    overlay_alpha: float | None  # None when no overlay is computed
    slot: int = 0
    batch: int = 1  # frames per forward pass (engine.infer_batch)


@dataclass
class Plan:
    """The prepared state for one PlanKey (engine internals; see engine.py)."""

    key: PlanKey
    io: Any
    pre: Any
    post: Any
    clock: Any
    device_pass: Any = None  # the chosen candidate (choices.DevicePass): forward, backend
    choices: dict = field(default_factory=dict)  # what was timed for it (autotune.Choice)
    graph: Any = None
    done: Any = None  # CUDA: an event recorded after each launch (pipelined mode)
    note: str = ""
    prepare_ms: float = 0.0
    # where the choices came from: "measured", "retune" (measured, asked) or "cache"
    choices_source: str = "measured"

    def release(self) -> None:
        """Drop the graph (its share of the pool) and every buffer reference."""
        if self.graph is not None:
            self.graph.reset()
        self.graph = self.done = self.io = self.pre = self.post = self.clock = None
        self.device_pass = None


class PlanCache:
    """At most `capacity` plans, least recently used evicted first, with counters.

    `on_evict(plan)` runs for every plan that leaves the cache (evicted or cleared),
    after it left, so the caller can free it.
    """

    def __init__(self, capacity: int, on_evict: Callable[[Plan], None] = Plan.release):
        if capacity < 1:
            raise ValueError(f"plan cache capacity {capacity}, expected >= 1")
        self.capacity = capacity
        self._on_evict = on_evict
        self._plans: OrderedDict[PlanKey, Plan] = OrderedDict()
        self.hits = 0
        self.prepares = 0
        self.evictions = 0
        self.last_prepare_ms: float | None = None
        self.total_prepare_ms = 0.0

    def __len__(self) -> int:
        return len(self._plans)

    def __contains__(self, key: PlanKey) -> bool:
        return key in self._plans

    def get(self, key: PlanKey) -> Plan | None:
        """The plan for `key`, now the most recently used, or None (not counted as a use)."""
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            self.hits += 1
        return plan

    def add(self, plan: Plan) -> None:
        """Keep a freshly prepared plan, evicting the least recently used beyond capacity."""
        old = self._plans.pop(plan.key, None)
        if old is not None and old is not plan:
            self._on_evict(old)
        self._plans[plan.key] = plan
        self.prepares += 1
        self.last_prepare_ms = plan.prepare_ms
        self.total_prepare_ms += plan.prepare_ms
        while len(self._plans) > self.capacity:
            _, evicted = self._plans.popitem(last=False)
            self.evictions += 1
            self._on_evict(evicted)

    def discard(self, key: PlanKey) -> None:
        plan = self._plans.pop(key, None)
        if plan is not None:
            self._on_evict(plan)

    def clear(self) -> None:
        while self._plans:
            _, plan = self._plans.popitem(last=False)
            self._on_evict(plan)

    def stats(self) -> dict:
        """For `engine.stats()["plans"]` and /diagnostics."""
        return {
            "cached": len(self._plans),
            "capacity": self.capacity,
            "prepares": self.prepares,
            "hits": self.hits,
            "evictions": self.evictions,
            "last_prepare_ms": self.last_prepare_ms,
            "total_prepare_ms": self.total_prepare_ms,
        }
