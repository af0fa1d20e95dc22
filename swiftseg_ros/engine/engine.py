"""SegmentationEngine: camera pixels in host memory -> uint8 segmentation outputs in host
memory, with every buffer allocated once per input size and per-stage timing.

One frame (DESIGN.md, "Data flow of one frame"): copy into the (pinned) host buffer,
settling the channel order on the way (frames.py) -> asynchronous upload -> on the
device: fused uint8-to-float normalization, resize, forward of the conv-BN-fused
network, post-processing -> asynchronous download of the requested outputs -> one
synchronization. What one input needs (buffers, the chosen pass, on CUDA its captured
graph) is a plan (plans.py), kept in a small cache; launchers.py runs a plan eagerly on
the CPU or as a CUDA graph on the engine's own stream.

This module is the core: plans, buffers, pre- and post-processing, pipelining, batches,
timing and stats. The forward pass comes from the backends (backends/: torch, ONNX
Runtime, OpenVINO), each offering candidate passes for a plan; the planner (planner.py)
times all of them and keeps the fastest (choices.py), or builds the winner stored for
this setup (choice_cache.py), knowing no backend's internals. `infer_pipelined` overlaps
one frame's host work with the previous frame's device work by alternating two plans of
the same input; `infer_batch` runs several frames of one size in one forward pass.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

import swiftseg_ros.engine.cpu_caps as cpu_caps
from swiftseg_ros.engine.backends import backend_class, usable_backends
from swiftseg_ros.engine.backends.base import BackendContext
from swiftseg_ros.engine.config import EngineConfig, check_outputs
from swiftseg_ros.engine.cuda_support import bf16_refusal
from swiftseg_ros.engine.frames import channels_of, frame_as_hwc
from swiftseg_ros.engine.launchers import CpuLauncher, CudaLauncher
from swiftseg_ros.engine.network import check_inference_size, load_network, round_to_multiple
from swiftseg_ros.engine.palette import palette_table, palette_tensor
from swiftseg_ros.engine.planner import Planner
from swiftseg_ros.engine.plans import Plan, PlanCache, PlanKey
from swiftseg_ros.engine.timing import StageWindow
from swiftseg_ros.errors import ConfigError, SwiftsegError
from swiftseg_ros.memory import trim_allocator

log = logging.getLogger("swiftseg_ros.engine")


@dataclass
class SegResult:
    """One frame's outputs: uint8 numpy views of the engine's reused buffers.

    They stay valid until the engine's next `infer`; `copy()` detaches them. Outputs
    that were not requested are None. `timings` holds ms per stage.
    """

    label: np.ndarray | None
    color: np.ndarray | None
    confidence: np.ndarray | None
    overlay: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)

    def copy(self) -> SegResult:
        def own(array):
            return None if array is None else array.copy()

        return SegResult(own(self.label), own(self.color), own(self.confidence),
                         own(self.overlay), dict(self.timings))


def resolve_device(name: str) -> torch.device:
    """The torch device for "cpu", "cuda" or "cuda:N", or ConfigError saying why not."""
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)")
        raise ConfigError(f"device: {name} was asked for but {why}; use device cpu")
    device = torch.device(name)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: {name}, but only {torch.cuda.device_count()} CUDA "
                          f"device(s) are visible (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


@dataclass
class _InFlight:
    """A pipelined frame launched on the device and not yet collected."""

    plan: Plan
    tag: Any
    started: float
    copied: float


class SegmentationEngine:
    """The inference runtime shared by the ROS node, the replay evaluator and the benchmark.

    Not thread-safe: one thread calls `infer` (the node's worker).
    """

    def __init__(self, config: EngineConfig):
        if not isinstance(config, EngineConfig):
            raise ConfigError(f"engine: expected an EngineConfig, got {type(config).__name__}")
        self.config = config
        self.device = resolve_device(config.device)
        self.on_cuda = self.device.type == "cuda"
        if self.on_cuda:
            torch.cuda.set_device(self.device)
            if config.precision == "bf16":
                refusal = bf16_refusal(self.device)
                if refusal is not None:
                    raise ConfigError(refusal)
        self.cpu = cpu_caps.detect()
        if not self.on_cuda and config.precision == "bf16":
            self.cpu.require_bf16()
        self.precisions = _precisions(config.precision, self.on_cuda, self.cpu)
        # the backends asked for, and why each registered one is not a candidate here
        asked, self._backend_notes = usable_backends(config)
        if config.threads is not None:
            # the per-frame OpenCV work (colour conversion, planar normalization, palette)
            # runs on as many threads as the network
            torch.set_num_threads(config.threads)
            cv2.setNumThreads(config.threads)

        with torch.inference_mode():
            loaded = load_network(config)
        meta = loaded.meta
        self.network = meta["network"]
        self.num_classes = meta["num_classes"]
        self.class_names = list(meta["class_names"])
        self.mean = tuple(meta["mean"])
        self.std = tuple(meta["std"])
        source = "palette parameter" if config.palette is not None else "checkpoint palette"
        self.palette = palette_table(config.palette if config.palette is not None
                                     else meta["palette"], self.num_classes, source)
        self.size_divisor = loaded.size_divisor
        self.align_corners = loaded.align_corners
        self.output_stride = loaded.output_stride
        self._onnx_file = loaded.onnx_file
        self.network_options = loaded.options
        check_inference_size(config.inference_size, self.network, self.size_divisor)

        context = BackendContext(config, self.device, self.cpu, self.network, loaded.model,
                                 loaded.onnx_file, self.mean, self.std)
        self._backends = {name: backend_class(name)(context) for name in asked}
        self._model = None  # the current plan's torch network (see `model`)
        with torch.inference_mode():
            self.palette_device = palette_tensor(self.palette, self.device)
        self._launcher = CudaLauncher(config, self.device) if self.on_cuda \
            else CpuLauncher(config)
        self._planner = Planner(self, self._backends, self._backend_notes, self._launcher)
        self._outputs = config.outputs
        self._window = StageWindow(config.stats_window)
        self._plans = PlanCache(config.plan_cache, on_evict=self._free_plan)
        self._current: Plan | None = None
        self._pixel_format: str | None = None
        self._in_flight: _InFlight | None = None
        self._next_slot = 0
        self._released = False
        log.info("engine: %s on %s, %s%s, backend %s, %d classes, upsample %s", self.network,
                 self.device, config.precision,
                 f" ({self.math_mode} math)" if self.on_cuda else "", config.backend,
                 self.num_classes, config.upsample)

    # ------------------------------------------------------------------ public API

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._outputs

    @property
    def model(self):
        """The torch network the current plan runs; before the first plan, the one a torch
        backend would start from (made on first use: a start whose cached winner is not
        that one never builds it); None without a torch network."""
        if self._model is None and not self._released:
            with torch.inference_mode():
                self._model = next((m for m in (b.default_model() for b in
                                                 self._backends.values()) if m is not None),
                                   None)
        return self._model

    @property
    def precision(self) -> str:
        """The precision the current plan runs ("auto" before the first plan chose one)."""
        if self._current is not None:
            return self._current.device_pass.precision
        return self.config.precision

    @property
    def math_mode(self) -> str:
        """"tf32" when fp32 convolutions and matmuls may round to TF32 on CUDA, else the
        precision's own arithmetic ("fp32", "fp16", "bf16")."""
        tf32 = self.on_cuda and self.config.tf32 and self.precision == "fp32"
        return "tf32" if tf32 else self.precision

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames the current plan is prepared for."""
        plan = self._current
        return None if plan is None else (plan.key.width, plan.key.height)

    @property
    def inference_size(self) -> tuple[int, int] | None:
        """(width, height) the network runs at for the prepared input size."""
        if self._current is None:
            return self.config.inference_size
        height, width = self._current.pre.inference_hw
        return width, height

    @property
    def network_input(self) -> torch.Tensor | None:
        """The current plan's last pre-processed network input (a device tensor, reused)."""
        return None if self._current is None else self._current.pre.network_input

    @property
    def uses_cuda_graph(self) -> bool:
        return self._current is not None and self._current.graph is not None

    @property
    def backend(self) -> str | None:
        """The backend running the current plan's forward pass ("torch", "onnxruntime",
        ...); None before the first prepare when it is to be chosen."""
        if self._current is not None:
            return self._current.device_pass.backend
        return None if self.config.backend == "auto" else self.config.backend

    def run_forward(self) -> torch.Tensor:
        """The current plan's chosen forward pass alone, on its last pre-processed input
        (for benchmarks)."""
        plan = self._current
        return plan.device_pass.forward(plan.pre.network_input)

    def inference_size_for(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the network would run at for frames of this size."""
        if self._onnx_file is not None and not self._onnx_file.dynamic:
            return self._onnx_file.export_size
        if self.config.inference_size is not None:
            return self.config.inference_size
        d = self.size_divisor
        return round_to_multiple(width, d), round_to_multiple(height, d)

    def prepare(self, height: int, width: int, pixel_format: str) -> None:
        """Allocate every buffer for this input and warm up (CUDA: autotune and capture).

        A plan prepared earlier for the same size, outputs and overlay alpha is taken from
        the plan cache instead. The device buffers depend on the size only: every pixel
        format becomes RGB in the host copy, so a new pixel format alone needs no new plan.
        A pipelined frame still in flight is waited for and dropped (collect it first with
        `flush_pipelined`).
        """
        self._check_usable()
        channels_of(pixel_format)
        self._check_size(height, width)
        self._drop_in_flight()
        self._current = self._plan_for(self._key(height, width, 0))
        self._pixel_format = pixel_format

    @torch.inference_mode()
    def infer(self, frame: np.ndarray, pixel_format: str = "rgb8") -> SegResult:
        """Segment one frame; the result's arrays are reused by the next call."""
        self._check_usable()
        frame = frame_as_hwc(frame, pixel_format, self.config.max_input_size)
        self._drop_in_flight()
        plan = self._plan_for_frame(frame, 0)
        self._current, self._pixel_format = plan, pixel_format
        started = time.perf_counter()
        plan.io.copy_frame(frame, pixel_format)
        copied = time.perf_counter()
        self._launcher.launch(plan, self._device_pass)
        self._launcher.wait()  # the frame's one synchronization
        return self._result(plan, started, copied)

    @torch.inference_mode()
    def infer_batch(self, frames: Sequence[tuple[np.ndarray, str]]) -> list[SegResult]:
        """Segment several frames of one input size in one forward pass over their stack.

        `frames` holds (frame HxWxC uint8, pixel format) pairs, one per camera; they must
        share the input size (ConfigError otherwise: group them by size). One result per
        frame, in order: views of the engine's reused buffers (one set per batch size,
        allocated once in the batch's plan), valid until the next call of any `infer*`,
        as with `infer`; `copy()` detaches them. Each result's `timings` are the
        batch's (host_copy and total for all frames together).
        """
        self._check_usable()
        checked = [(frame_as_hwc(frame, pixel_format, self.config.max_input_size),
                    pixel_format) for frame, pixel_format in frames]
        sizes = sorted({f"{frame.shape[1]}x{frame.shape[0]}" for frame, _ in checked})
        if len(sizes) > 1:
            raise ConfigError(f"infer_batch: the frames of one call must share the input "
                              f"size, got {', '.join(sizes)}; group them by size")
        if len(checked) <= 1:
            return [self.infer(*checked[0])] if checked else []
        self._drop_in_flight()
        height, width = checked[0][0].shape[:2]
        plan = self._plan_for(self._key(height, width, 0, batch=len(checked)))
        self._current, self._pixel_format = plan, checked[-1][1]
        started = time.perf_counter()
        plan.io.copy_frames(checked)
        copied = time.perf_counter()
        self._launcher.launch(plan, self._device_pass)
        self._launcher.wait()  # the batch's one synchronization
        return self._results(plan, started, copied)

    @torch.inference_mode()
    def infer_pipelined(self, frame: np.ndarray, pixel_format: str = "rgb8",
                        tag: Any = None) -> tuple[Any, SegResult] | None:
        """Launch this frame and return the previous one's `(tag, result)`, or None.

        Two plans of the same input alternate (double-buffered pinned input, outputs and
        graphs), so this frame's host copy and launch happen while the device still
        computes the previous frame, whose result is then waited for and returned: one
        frame of extra latency for up to the device time of throughput. `tag` travels with
        the frame (the node passes the message header). The returned arrays stay valid
        until the next call of any `infer*`/`flush_pipelined`, as with `infer`;
        `flush_pipelined()` returns the last frame's result when no next frame comes. A
        plain `infer`, `prepare` or `set_outputs` drops a frame still in flight.
        """
        self._check_usable()
        frame = frame_as_hwc(frame, pixel_format, self.config.max_input_size)
        plan = self._plan_for_frame(frame, self._next_slot)
        self._next_slot ^= 1
        self._current, self._pixel_format = plan, pixel_format
        started = time.perf_counter()
        plan.io.copy_frame(frame, pixel_format)
        copied = time.perf_counter()
        self._launcher.launch(plan, self._device_pass)
        if plan.done is not None:
            plan.done.record(self._launcher.stream)
        previous, self._in_flight = self._in_flight, _InFlight(plan, tag, started, copied)
        return None if previous is None else self._collect(previous)

    @torch.inference_mode()
    def flush_pipelined(self) -> tuple[Any, SegResult] | None:
        """Wait for the pipelined frame in flight and return its `(tag, result)`, or None."""
        self._check_usable()
        previous, self._in_flight = self._in_flight, None
        return None if previous is None else self._collect(previous)

    def set_outputs(self, outputs) -> None:
        """Change the requested outputs; takes (or prepares and captures) their plan now."""
        self._check_usable()
        outputs = check_outputs(outputs)
        if outputs == self._outputs:
            return
        self._outputs = outputs
        if self._current is not None:
            key = self._current.key
            log.info("engine: outputs changed to %s", ",".join(outputs))
            self.prepare(key.height, key.width, self._pixel_format)

    def stats(self) -> dict:
        """Frames, per-stage percentiles over the recent window, rates, setup and memory."""
        summary = self._window.summary()
        plan = self._current
        summary.update(
            network=self.network,
            device=str(self.device),
            precision=self.precision,
            precision_asked=self.config.precision,
            math_mode=self.math_mode,
            outputs=list(self._outputs),
            upsample=self.config.upsample,
            input_size=self.input_size,
            pixel_format=self._pixel_format,
            inference_size=self.inference_size,
            cuda_graph=plan is not None and plan.graph is not None,
            cuda_graph_note=None if plan is None else plan.note,
            backend=self.backend,
            memory_format=None if plan is None else plan.device_pass.memory_format,
            choices={} if plan is None else {what: choice.as_dict() for what, choice
                                             in plan.choices.items()},
            choices_source=None if plan is None else plan.choices_source,
            cpu=self.cpu.as_dict(),
            plans=self._plans.stats(),
            memory=None if self._released else self._launcher.memory(),
        )
        return summary

    def release(self) -> None:
        """Free the network and every buffer: device memory returns to its prior level and
        the pinned host buffers go back to the system (not only to PyTorch's host cache)."""
        if self._released:
            return
        self._drop_in_flight()
        self._plans.clear()
        self._current = None
        self._model = None
        for backend in self._backends.values():
            backend.release()
        self._backends = {}
        self.palette_device = None
        self._released = True
        gc.collect()
        self._launcher.release()
        log.info("engine: released %s", self.network)

    # ------------------------------------------------------------------ internals

    def _check_usable(self) -> None:
        if self._released:
            raise SwiftsegError("engine was released; build a new SegmentationEngine")

    def _check_size(self, height: int, width: int) -> None:
        max_width, max_height = self.config.max_input_size
        if not (0 < width <= max_width and 0 < height <= max_height):
            raise ConfigError(f"input size {width}x{height} is not within 1x1 to "
                              f"{max_width}x{max_height} (max_input_size)")

    def _key(self, height: int, width: int, slot: int, batch: int = 1) -> PlanKey:
        # the alpha is baked into the overlay's plan only: other plans do not depend on it
        alpha = float(self.config.overlay_alpha) if "overlay" in self._outputs else None
        return PlanKey(height, width, self._outputs, alpha, slot, batch)

    def _plan_for_frame(self, frame: np.ndarray, slot: int) -> Plan:
        height, width = frame.shape[:2]
        current = self._current
        if current is not None and (current.key.height, current.key.width) != (height, width):
            log.info("engine: input size changed from %dx%d to %dx%d", current.key.width,
                     current.key.height, width, height)
        return self._plan_for(self._key(height, width, slot))

    def _plan_for(self, key: PlanKey) -> Plan:
        """The cached plan for `key`, or a new one, prepared and cached now."""
        plan = self._plans.get(key)
        if plan is None:
            plan = self._make_plan(key)
            self._plans.add(plan)
        return plan

    def _make_plan(self, key: PlanKey) -> Plan:
        net_w, net_h = self.inference_size_for(key.width, key.height)
        plan = self._planner.make(key, (net_h, net_w), self._device_pass)
        if plan.device_pass.model is not None:
            self._model = plan.device_pass.model
        log.info("engine: prepared %dx%d -> network %dx%d, outputs %s%s, %s (%.0f ms; "
                 "%d plan(s) cached)", key.width, key.height, net_w, net_h,
                 ",".join(key.outputs), f", pipeline slot {key.slot}" if key.slot else "",
                 "CUDA graph" if plan.graph is not None else f"eager ({plan.note})",
                 plan.prepare_ms, len(self._plans))
        return plan

    def _device_pass(self, plan: Plan, marks: bool = True) -> None:
        """Upload, pre-process, forward, post-process, download, with stage marks."""
        clock, stream = (plan.clock if marks else None), self._launcher.stream
        _mark(clock, 0, stream)
        plan.io.upload()
        _mark(clock, 1, stream)
        network_input = plan.pre.run()
        _mark(clock, 2, stream)
        logits = plan.device_pass.forward(network_input)
        _mark(clock, 3, stream)
        plan.post.run(logits)
        _mark(clock, 4, stream)
        plan.io.download()
        _mark(clock, 5, stream)

    def _collect(self, item: _InFlight) -> tuple[Any, SegResult]:
        if item.plan.done is not None:
            item.plan.done.synchronize()
        return item.tag, self._result(item.plan, item.started, item.copied)

    def _result(self, plan: Plan, started: float, copied: float) -> SegResult:
        return self._results(plan, started, copied)[0]

    def _results(self, plan: Plan, started: float, copied: float) -> list[SegResult]:
        """One result per frame of the plan, each counted in the stats window."""
        finished = time.perf_counter()
        timings = plan.clock.read()
        timings["host_copy"] = (copied - started) * 1000.0
        timings["total"] = (finished - started) * 1000.0
        per_frame = plan.io.arrays if plan.key.batch > 1 else [plan.io.arrays]
        results = []
        for arrays in per_frame:
            self._window.add(timings, finished)
            results.append(SegResult(arrays.get("label"), arrays.get("color"),
                                     arrays.get("confidence"), arrays.get("overlay"),
                                     dict(timings)))
        return results

    def _drop_in_flight(self) -> None:
        item, self._in_flight = self._in_flight, None
        if item is not None:
            if item.plan.done is not None:
                item.plan.done.synchronize()
            log.debug("engine: dropped a pipelined frame that was not collected")

    def _free_plan(self, plan: Plan) -> None:
        """A plan leaves the cache: wait until the device is done with it, then free it."""
        self._launcher.wait()
        if plan is self._current:
            self._current = None
        plan.release()
        # glibc keeps the freed buffers in the arenas (swiftseg_ros/memory.py); an eviction
        # follows a size change, never a frame, so the trim costs nothing on the hot path.
        trim_allocator()


def _precisions(asked: str, on_cuda: bool, cpu) -> tuple[str, ...]:
    """The precisions whose candidates are timed: the one asked for, or for auto fp32 and
    the one this device runs natively (fp16 on CUDA, bf16 on a CPU with native bf16)."""
    if asked != "auto":
        return (asked,)
    if on_cuda:
        return ("fp32", "fp16")
    return ("fp32", "bf16") if cpu.native_bf16 else ("fp32",)


def _mark(clock, index: int, stream) -> None:
    if clock is not None:
        clock.mark(index, stream)
