"""SegmentationEngine: camera pixels in host memory -> uint8 segmentation outputs in host
memory, with every buffer allocated once per input size and per-stage timing.

One frame (DESIGN.md, "Data flow of one frame"): copy into the (pinned) host buffer,
settling the channel order on the way (frames.py) -> asynchronous upload -> on the
device: fused uint8-to-float normalization, resize, forward of the conv-BN-fused
network, post-processing -> asynchronous download of the requested outputs -> one
synchronization. On CUDA the part from the upload to the download is captured once
as a CUDA graph (per input size, output set and overlay alpha: a plan, plans.py, kept
in a small cache) on the engine's own stream and replayed per frame; the stage timing
events are part of the graph, so timing costs no extra synchronization. On the CPU the
same pass runs eagerly, timed with perf counters, with every convolution on oneDNN
(cpu_kernels.py). The forward pass's backend (torch or ONNX Runtime), the memory format
and on the CPU the convolution route are chosen per plan by timing the candidates that
this machine supports (choices.py, cpu_caps.py, ort_backend.py). `infer_pipelined`
overlaps one frame's host work with the previous frame's device work by alternating two
plans of the same input.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from swiftseg_ros.engine import cpu_caps
from swiftseg_ros.engine.autotune import Choice, choose, failure_note
from swiftseg_ros.engine.buffers import FrameIO
from swiftseg_ros.engine.choices import (
    ONNXRUNTIME,
    TIMING_REPEATS,
    TORCH,
    DevicePass,
    pick_pass,
)
from swiftseg_ros.engine.config import (
    DEFAULT_MEAN,
    DEFAULT_NUM_CLASSES,
    DEFAULT_STD,
    EngineConfig,
    check_outputs,
)
from swiftseg_ros.engine.cpu_kernels import model_variants, onednn_available
from swiftseg_ros.engine.cuda_support import (
    bf16_refusal,
    capture_graph,
    empty_host_cache,
    math_mode,
)
from swiftseg_ros.engine.frames import channels_of, frame_as_hwc
from swiftseg_ros.engine.onnx_file import RawInput, is_onnx_file, read_onnx_file
from swiftseg_ros.engine.ort_backend import why_onnxruntime_unusable
from swiftseg_ros.engine.palette import palette_table, palette_tensor
from swiftseg_ros.engine.plans import Plan, PlanCache, PlanKey
from swiftseg_ros.engine.postprocess import Postprocessor
from swiftseg_ros.engine.preprocess import Preprocessor
from swiftseg_ros.engine.timing import DEVICE_STAGES, CpuStageClock, CudaStageClock, StageWindow
from swiftseg_ros.engine.winograd import (
    MIN_CHANNELS,
    WinogradCache,
    count_eligible,
    layer_runs,
    use_winograd,
)
from swiftseg_ros.errors import ConfigError, SwiftsegError
from swiftseg_ros.memory import trim_allocator

log = logging.getLogger("swiftseg_ros.engine")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


def round_to_multiple(value: int, divisor: int) -> int:
    """The nearest multiple of divisor (halves up), at least divisor."""
    return max(divisor, (value + divisor // 2) // divisor * divisor)


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
        self._onnxruntime_note = why_onnxruntime_unusable(config)
        if config.backend == ONNXRUNTIME and self._onnxruntime_note:
            raise ConfigError(f"backend: onnxruntime {self._onnxruntime_note}")
        if config.threads is not None:
            # the per-frame OpenCV work (colour conversion, planar normalization, palette)
            # runs on as many threads as the network
            torch.set_num_threads(config.threads)
            cv2.setNumThreads(config.threads)
        self.dtype = DTYPES[config.precision]

        self._onnx_file = _onnx_file_of(config)
        if self._onnx_file is not None:
            model, meta = None, self._onnx_file.meta
        else:
            model, meta = _load_network(config)
        self.network = meta["network"]
        self.num_classes = meta["num_classes"]
        self.class_names = list(meta["class_names"])
        self.mean = tuple(meta["mean"])
        self.std = tuple(meta["std"])
        source = "palette parameter" if config.palette is not None else "checkpoint palette"
        self.palette = palette_table(config.palette if config.palette is not None
                                     else meta["palette"], self.num_classes, source)
        described = model if model is not None else self._onnx_file
        self.size_divisor = int(described.size_divisor)
        # how the network upsamples its logits (the Fast-SCNN port's weights: corners
        # aligned); an exported file's logits are upsampled in its graph already
        self.align_corners = bool(getattr(model, "align_corners", False))
        self.output_stride = int(described.output_stride)
        if config.inference_size is not None:
            width, height = config.inference_size
            if width % self.size_divisor or height % self.size_divisor:
                raise ConfigError(
                    f"inference_size: {width}x{height} is not a multiple of {self.size_divisor} "
                    f"as {self.network} needs; use e.g. "
                    f"{round_to_multiple(width, self.size_divisor)}x"
                    f"{round_to_multiple(height, self.size_divisor)}")

        self._export_source, self._variants, self._variant_notes = None, {}, {}
        self._winograd_note = "no network loaded (an .onnx file)"
        self._compiled_note = self._winograd_note
        self._winograd_filters = WinogradCache()
        self._compiled_filters: WinogradCache | None = None
        self._compiled_twins: dict[tuple, Any] = {}
        self._conv_3x3_choices: dict[tuple, Choice] = {}
        self.model = None
        with torch.inference_mode():
            if model is not None:
                self._prepare_network(model)
            self._palette_device = palette_tensor(self.palette, self.device)

        if self.on_cuda:
            torch.backends.cudnn.benchmark = True  # autotuned once per shape, in warm-up
            self._stream = torch.cuda.Stream(self.device)
            # every plan's graph is captured into this one pool (see plans.py)
            self._pool = torch.cuda.graph_pool_handle()
        else:
            self._stream = None
            self._pool = None
        self._digest: str | None = None
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
    def math_mode(self) -> str:
        """"tf32" when fp32 convolutions and matmuls may round to TF32 on CUDA, else the
        precision's own arithmetic ("fp32", "fp16", "bf16")."""
        tf32 = self.on_cuda and self.config.tf32 and self.config.precision == "fp32"
        return "tf32" if tf32 else self.config.precision

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
        """The backend running the current plan's forward pass ("torch" or "onnxruntime");
        None before the first prepare when it is to be chosen."""
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
        self._launch(plan)
        if self.on_cuda:
            self._stream.synchronize()  # the frame's one synchronization
        return self._result(plan, started, copied)

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
        self._launch(plan)
        if plan.done is not None:
            plan.done.record(self._stream)
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
            precision=self.config.precision,
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
            cpu=self.cpu.as_dict(),
            plans=self._plans.stats(),
            memory=self._memory(),
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
        self.model = None
        self._variants = {}
        self._export_source = None
        self._winograd_filters.clear()
        self._compiled_filters = None
        self._compiled_twins.clear()
        self._conv_3x3_choices.clear()
        self._palette_device = None
        self._released = True
        gc.collect()
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
            self._stream = None
            self._pool = None
            torch.cuda.empty_cache()
            empty_host_cache()
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

    def _key(self, height: int, width: int, slot: int) -> PlanKey:
        # the alpha is baked into the overlay's plan only: other plans do not depend on it
        alpha = float(self.config.overlay_alpha) if "overlay" in self._outputs else None
        return PlanKey(height, width, self._outputs, alpha, slot)

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
        started = time.perf_counter()
        clock = CudaStageClock(torch) if self.on_cuda else CpuStageClock()
        with torch.inference_mode(), math_mode(self.config.tf32):
            plan = self._build(key, clock)
            self._warm_up(plan)
            if self.on_cuda:
                plan.graph = self._capture(plan)
                plan.clock.outer = plan.graph is not None and not plan.clock.graph_safe
                plan.done = torch.cuda.Event()
            else:
                plan.note = "not on CUDA"
        plan.prepare_ms = (time.perf_counter() - started) * 1000.0
        net_h, net_w = plan.pre.inference_hw
        log.info("engine: prepared %dx%d -> network %dx%d, outputs %s%s, %s (%.0f ms; "
                 "%d plan(s) cached)", key.width, key.height, net_w, net_h,
                 ",".join(key.outputs), f", pipeline slot {key.slot}" if key.slot else "",
                 "CUDA graph" if plan.graph is not None else f"eager ({plan.note})",
                 plan.prepare_ms, len(self._plans))
        return plan

    def _build(self, key: PlanKey, clock) -> Plan:
        """Buffers for this plan, and its device pass chosen by timing the candidates (on
        CUDA on the engine's stream, where the pass will run)."""
        config = self.config
        net_w, net_h = self.inference_size_for(key.width, key.height)
        io = FrameIO(key.height, key.width, self.device)
        io.device_rgb.zero_()
        output_hw = ((key.height, key.width) if config.output_size == "input"
                     else (net_h, net_w))
        candidates, notes = {}, dict(self._variant_notes)
        for (route, memory_format), model in self._variants.items():
            candidates[f"{route}/{memory_format}"] = functools.partial(
                self._torch_pass, io, key, (net_h, net_w), output_hw, model, route,
                memory_format)
        self._add_compiled_candidates(candidates, notes, io, key, (net_h, net_w), output_hw)
        if config.backend == TORCH:
            notes[ONNXRUNTIME] = "not asked (backend: torch)"
        elif self._onnxruntime_note:
            notes[ONNXRUNTIME] = self._onnxruntime_note
        else:
            candidates[ONNXRUNTIME] = functools.partial(self._onnxruntime_pass, io, key,
                                                        (net_h, net_w), output_hw)
        try:
            if self.on_cuda:
                self._stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self._stream):
                    chosen, choices = pick_pass(candidates, notes,
                                                sync=self._stream.synchronize)
            else:
                chosen, choices = pick_pass(candidates, notes)
        except ConfigError:
            raise
        except RuntimeError as exc:
            raise ConfigError(f"engine: {exc}") from exc
        if chosen.backend == ONNXRUNTIME:
            chosen = self._with_graph_winograd(chosen, choices, io, key, (net_h, net_w),
                                               output_hw)
        _choose_edge_kernel(chosen, choices)
        chosen.first_logits = None  # only the choices above needed them
        if chosen.model is not None:
            self.model = chosen.model
        log.info("engine: %dx%d: %s", net_w, net_h,
                 "; ".join(choice.describe() for choice in choices.values()))
        io.set_outputs({name: chosen.post.outputs[name] for name in key.outputs})
        return Plan(key, io, chosen.pre, chosen.post, clock, device_pass=chosen,
                    choices=choices)

    def _pass_tail(self, name, backend, pre, forward, io, key, output_hw, upsample=None,
                   **extra) -> DevicePass:
        """A candidate pass from its pre-processing and forward: the post-processing is
        shaped by a real forward pass (which is also its first warm-up pass)."""
        logits = forward(pre.run())
        post = Postprocessor(logits, key.outputs, upsample or self.config.upsample, output_hw,
                             self._palette_device, self.config.overlay_alpha,
                             _overlay_source(key, io, pre, output_hw, self.mean, self.std),
                             align_corners=self.align_corners)
        return DevicePass(name, backend, pre, forward, post, first_logits=logits, **extra)

    def _torch_pass(self, io, key, net_hw, output_hw, model, route,
                    memory_format, conv_3x3: str = "direct") -> DevicePass:
        pre = Preprocessor(io.device_rgb, net_hw, self.mean, self.std, self.dtype,
                           memory_format == "channels_last")
        suffix = "" if conv_3x3 == "direct" else f"+{conv_3x3}"
        return self._pass_tail(f"{route}/{memory_format}{suffix}", TORCH, pre,
                               model.forward_logits, io, key, output_hw, model=model,
                               route=route, memory_format=memory_format, conv_3x3=conv_3x3)

    def _onnxruntime_pass(self, io, key, net_hw, output_hw, winograd: bool = False
                          ) -> DevicePass:
        from swiftseg_ros.engine.ort_backend import (
            OrtForward,
            cache_folder,
            cached_graph,
            weights_digest,
        )

        file = self._onnx_file
        if file is not None:
            path = file.path
        else:
            if self._digest is None:
                self._digest = weights_digest(self._export_source)
            source = self._export_source
            if winograd:
                def source():  # built only when the graph is not cached yet
                    original = self._export_source
                    # the weights shared: their transformed filters are built once
                    shared = {id(t): t for t in (*original.parameters(), *original.buffers())}
                    rewritten = copy.deepcopy(original, memo=shared)
                    use_winograd(rewritten, build=self._winograd_filters)
                    return rewritten
            path = cached_graph(source, self.network, *net_hw, digest=self._digest,
                                folder=cache_folder(self.config.cache_dir),
                                variant=f"winograd{MIN_CHANNELS}" if winograd else "")
        if file is not None and file.uint8_input:
            if (key.height, key.width) != net_hw:
                raise ConfigError(
                    f"weights: {path} takes uint8 frames of {net_hw[1]}x{net_hw[0]} only "
                    f"(exported with --include-preprocess at that size), frames are "
                    f"{key.width}x{key.height}: export it for this size, or without "
                    f"--include-preprocess to let the engine resize")
            pre = RawInput(io.device_rgb)
        else:
            pre = Preprocessor(io.device_rgb, net_hw, self.mean, self.std,
                               torch.float32, channels_last=False)
        forward = OrtForward(path, pre.network_input, self.device, self.config.threads)
        # a file's logits are at the input size already: nothing left to interpolate
        upsample = ("labels" if file is not None and net_hw == output_hw
                    else self.config.upsample)
        return self._pass_tail(ONNXRUNTIME + ("+winograd" if winograd else ""), ONNXRUNTIME,
                               pre, forward, io, key, output_hw, upsample=upsample,
                               conv_3x3="winograd" if winograd else "direct")

    def _with_graph_winograd(self, chosen: DevicePass, choices: dict, io, key, net_hw,
                             output_hw) -> DevicePass:
        """The chosen ONNX Runtime pass, or its twin whose graph has Winograd 3x3
        convolutions (winograd.py) when that measures faster; the choice is added to
        `choices` as "conv_3x3". It is made once per input size: later plans of that size
        (another output set, the second pipelined slot) reuse it, and the transformed
        filters. (A torch pass's Winograd twins are candidates of the pass itself.)"""
        seen = tuple(net_hw)
        choice = self._conv_3x3_choices.get(seen)
        if choice is None:
            # an .onnx file given as weights has no network: its note says so
            note = self._winograd_note or self._winograd_layers_note(net_hw)
            if note is not None:
                choice = Choice("conv_3x3", "direct", {}, {"winograd": note})
        twin = None
        if choice is None or choice.picked == "winograd":
            try:
                twin = self._onnxruntime_pass(io, key, net_hw, output_hw, winograd=True)
            except Exception as exc:  # e.g. an unwritable cache: the direct pass still works
                choice = Choice("conv_3x3", "direct", {}, {"winograd": failure_note(exc)})
            else:
                choice = choice or choose("conv_3x3", {"direct": chosen.run,
                                                       "winograd": twin.run},
                                          repeats=TIMING_REPEATS)
        self._conv_3x3_choices[seen] = choices["conv_3x3"] = choice
        return twin if choice.picked == "winograd" else chosen

    def _add_compiled_candidates(self, candidates: dict, notes: dict, io, key, net_hw,
                                 output_hw) -> None:
        """Each channels_last torch candidate's compiled-Winograd twin as one more
        candidate ("onednn/channels_last+winograd"); notes say where there is none."""
        if not self._variants:  # backend onnxruntime
            return
        if self._compiled_note is not None:
            notes["winograd"] = self._compiled_note
            return
        for route, memory_format in self._variants:
            name = f"{route}/{memory_format}+winograd"
            if memory_format != "channels_last":
                notes[name] = "the compiled kernel reads and writes channels_last only"
                continue
            twin = self._compiled_twin(route, memory_format, net_hw)
            if isinstance(twin, str):
                notes[name] = twin
            else:
                candidates[name] = functools.partial(
                    self._torch_pass, io, key, net_hw, output_hw, twin, route,
                    memory_format, "winograd")

    def _compiled_twin(self, route: str, memory_format: str, net_hw) -> Any:
        """The torch candidate (route, memory format) with each 3x3 convolution that is
        faster as compiled Winograd (winograd_kernel.py) at this input size replaced, or
        the note why there is none. Which layers are faster is timed once per input size
        (on the first channels_last candidate: the direct 3x3 convolutions of both routes
        are oneDNN's), and each twin is built once per input size."""
        from swiftseg_ros.engine.winograd_kernel import (
            compiled_copy,
            compiled_filters,
            faster_compiled,
        )

        if self._compiled_filters is None:
            self._compiled_filters = compiled_filters()
        layers = self._compiled_twins.get(tuple(net_hw))
        if layers is None:
            example = torch.zeros((1, 3, *net_hw)).contiguous(memory_format=torch.channels_last)
            try:
                layers, summary = faster_compiled(self._variants[(route, memory_format)],
                                                  example, self._compiled_filters,
                                                  repeats=TIMING_REPEATS)
            except LookupError as exc:  # no layer is faster here
                layers = f"slower layer by layer at {net_hw[1]}x{net_hw[0]}: {exc}"
            except Exception as exc:  # the direct candidates still work
                layers = failure_note(exc)
            else:
                log.info("engine: %dx%d: compiled Winograd faster in %s", net_hw[1],
                         net_hw[0], summary)
            self._compiled_twins[tuple(net_hw)] = layers
        if isinstance(layers, str):
            return layers
        seen = (route, memory_format, tuple(net_hw))
        twin = self._compiled_twins.get(seen)
        if twin is None:
            twin = compiled_copy(self._variants[(route, memory_format)], layers,
                                 self._compiled_filters)
            self._compiled_twins[seen] = twin
        return twin

    def _prepare_network(self, model) -> None:
        """The conv-BN-fused network, its torch candidates, and its fp32 CPU original that
        ONNX graphs are exported from."""
        from swiftseg_ros.nets import fuse_conv_bn

        model = fuse_conv_bn(model.eval())
        model.requires_grad_(False)
        if self.config.backend != TORCH:
            self._export_source = copy.deepcopy(model) if self.on_cuda else model
        model = model.to(device=self.device, dtype=self.dtype)
        self._winograd_note, self._compiled_note = self._why_no_winograd(model)
        self._variants, self._variant_notes = self._torch_variants(model)
        self.model = next(iter(self._variants.values()), None)

    def _winograd_layers_note(self, net_hw) -> str | None:
        """None when Winograd is faster than the direct convolutions layer by layer at this
        size (torch, on this machine), else why the whole ONNX Runtime pass with
        Winograd is not built and timed."""
        example = torch.zeros((1, 3, *net_hw))
        try:
            direct, winograd, layers = layer_runs(self._export_source, example,
                                                  build=self._winograd_filters)
        except Exception as exc:  # the direct pass works: keep it, say why
            return failure_note(exc)
        layer_choice = choose("conv_3x3", {"direct": direct, "winograd": winograd},
                              repeats=TIMING_REPEATS)
        if layer_choice.picked == "winograd":
            return None
        times = layer_choice.times_ms
        if "winograd" not in times:  # it raised: choose noted why
            return layer_choice.notes["winograd"]
        return (f"slower layer by layer at {net_hw[1]}x{net_hw[0]}: its {layers} layers "
                f"{times['winograd']:.1f} ms, direct {times['direct']:.1f} ms")

    def _why_no_winograd(self, model) -> tuple[str | None, str | None]:
        """Why Winograd convolutions are not a candidate here, or None when they are: in
        an ONNX Runtime graph (winograd.py), and compiled in a torch pass
        (winograd_kernel.py)."""
        if not self.config.winograd:
            return ("not asked (winograd off)",) * 2
        if self.on_cuda:
            return ("CUDA: cuDNN picks its own algorithms per shape (benchmark)",) * 2
        if self.dtype != torch.float32:
            return (f"fp32 only ({self.config.precision} loses too much in its "
                    f"transforms)",) * 2
        graph = (None if count_eligible(model) else
                 f"no 3x3 convolution with {MIN_CHANNELS}+ channels in {self.network}")
        try:
            from swiftseg_ros.engine.winograd_kernel import MIN_CHANNELS as compiled_channels
            from swiftseg_ros.engine.winograd_kernel import count_compiled_eligible
        except ImportError as exc:  # numba missing, or not built for this numpy
            return graph, f"numba unavailable ({exc}): pip install numba"
        compiled = (None if count_compiled_eligible(model) else
                    f"no 3x3 convolution with {compiled_channels}+ channels in {self.network}")
        return graph, compiled

    def _torch_variants(self, model):
        """(the torch candidates {(route, memory format): network}, notes on those left out).

        On CUDA both memory formats are candidates too: channels_last is usually cuDNN's
        fast layout for fp16, but depthwise convolutions (Fast-SCNN, MobileNetV2) and a
        3-channel first convolution can be slower in it, so it is measured per network.
        """
        config = self.config
        if config.backend == ONNXRUNTIME:
            return {}, {}
        formats = ("channels_last", "contiguous") if config.channels_last else ("contiguous",)
        notes = {} if config.channels_last else {"*/channels_last": "not asked (channels_last off)"}
        if self.on_cuda:
            routes = ("torch",)  # cuDNN picks its algorithms per shape itself (benchmark)
        elif not config.onednn_convs:
            routes = ("torch",)
            notes["onednn/*"] = "not asked (onednn_convs off)"
        elif not onednn_available():
            routes = ("torch",)
            notes["onednn/*"] = "this torch has no oneDNN"
        elif self.dtype == torch.bfloat16 and not self.cpu.onednn_bf16:
            routes = ("torch",)
            notes["onednn/*"] = "oneDNN refuses bf16 on this CPU"
        else:
            routes = ("onednn", "torch")
        return model_variants(model, routes=routes, formats=formats), notes

    def _device_pass(self, plan: Plan, marks: bool = True) -> None:
        """Upload, pre-process, forward, post-process, download, with stage marks."""
        clock, stream = (plan.clock if marks else None), self._stream
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

    def _launch(self, plan: Plan) -> None:
        """Start the device pass of `plan` (CUDA: asynchronous, on the engine's stream)."""
        if not self.on_cuda:
            self._device_pass(plan)
            return
        stream = self._stream
        with torch.cuda.stream(stream):
            if plan.graph is None:
                with math_mode(self.config.tf32):
                    self._device_pass(plan)
            elif plan.clock.outer:
                plan.clock.mark(0, stream)
                plan.graph.replay()
                plan.clock.mark(len(DEVICE_STAGES), stream)
            else:
                plan.graph.replay()

    def _collect(self, item: _InFlight) -> tuple[Any, SegResult]:
        if item.plan.done is not None:
            item.plan.done.synchronize()
        return item.tag, self._result(item.plan, item.started, item.copied)

    def _result(self, plan: Plan, started: float, copied: float) -> SegResult:
        finished = time.perf_counter()
        timings = plan.clock.read()
        timings["host_copy"] = (copied - started) * 1000.0
        timings["total"] = (finished - started) * 1000.0
        self._window.add(timings, finished)
        arrays = plan.io.arrays
        return SegResult(arrays.get("label"), arrays.get("color"), arrays.get("confidence"),
                         arrays.get("overlay"), timings)

    def _drop_in_flight(self) -> None:
        item, self._in_flight = self._in_flight, None
        if item is not None:
            if item.plan.done is not None:
                item.plan.done.synchronize()
            log.debug("engine: dropped a pipelined frame that was not collected")

    def _warm_up(self, plan: Plan) -> None:
        """Run the eager pass: oneDNN primitives, cuDNN autotuning, allocator caches.

        `warmup_iters` passes in all, counting the one in `_build`; on CUDA at least one
        full pass (with the copies) runs on the engine's stream before the capture.
        """
        if self.on_cuda:
            # CUDA graph recipe: warm up on a side stream (ours), then capture on it
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                for _ in range(max(1, self.config.warmup_iters - 1)):
                    self._device_pass(plan)
            self._stream.synchronize()
        else:
            for _ in range(self.config.warmup_iters - 1):
                self._device_pass(plan)

    def _capture(self, plan: Plan):
        """One CUDA graph of the plan's device pass, or None (eager) with `plan.note` why.

        Without graph-safe timing events (older torch) the pass is captured without its
        stage marks and `_launch` times the replay from outside.
        """
        if not self.config.cuda_graphs:
            plan.note = "cuda_graphs off"
            return None
        marks = plan.clock.graph_safe
        graph = torch.cuda.CUDAGraph()
        failure = None
        try:
            capture_graph(graph, lambda: self._device_pass(plan, marks=marks),
                          self._stream, self._pool)
            with torch.cuda.stream(self._stream):
                graph.replay()
            self._stream.synchronize()
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

    def _free_plan(self, plan: Plan) -> None:
        """A plan leaves the cache: wait until the device is done with it, then free it."""
        if self._stream is not None:
            self._stream.synchronize()
        if plan is self._current:
            self._current = None
        plan.release()
        # glibc keeps the freed buffers in the arenas (swiftseg_ros/memory.py); an eviction
        # follows a size change, never a frame, so the trim costs nothing on the hot path.
        trim_allocator()

    def _memory(self) -> dict | None:
        if not self.on_cuda or self._released:
            return None
        mib = 1024.0 * 1024.0
        return {
            "allocated_mb": torch.cuda.memory_allocated(self.device) / mib,
            "peak_mb": torch.cuda.max_memory_allocated(self.device) / mib,
            "reserved_mb": torch.cuda.memory_reserved(self.device) / mib,
        }


def _mark(clock, index: int, stream) -> None:
    if clock is not None:
        clock.mark(index, stream)


def _choose_edge_kernel(chosen: DevicePass, choices: dict) -> None:
    """The faster implementation of the post-processing's edge selection (torch's or the
    compiled one, edge_labels.edge_kernels), timed on this pass's own logits: the choice
    "edge_labels". Plans without edge selection (CUDA, labels mode, confidence) have none."""
    post = chosen.post
    if not post.edge_kernels:
        return
    logits = chosen.first_logits

    def post_with(name: str) -> None:
        post.use_edge_kernel(name)
        post.run(logits)

    runs = {name: functools.partial(post_with, name) for name in post.edge_kernels}
    choice = choose("edge_labels", runs, repeats=TIMING_REPEATS, notes=post.edge_notes)
    post.use_edge_kernel(choice.picked)
    choices["edge_labels"] = choice


def _overlay_source(key: PlanKey, io: FrameIO, pre: Preprocessor, output_hw, mean, std):
    """Channel views of the image under the overlay, at the output size, on 0-255."""
    if "overlay" not in key.outputs:
        return None
    if output_hw == (key.height, key.width):
        return io.device_rgb.permute(2, 0, 1).unsqueeze(0), (1.0,) * 3, (0.0,) * 3
    # the resized network input: undo the normalization
    return pre.network_input, std, mean


def _onnx_file_of(config: EngineConfig):
    """The checked `.onnx` weights file, or None for a checkpoint or a random build."""
    if not is_onnx_file(config.weights):
        return None
    from swiftseg_ros.paths import resolve_weights

    if config.backend == TORCH:
        raise ConfigError(f"weights: {config.weights} is an ONNX file, which runs with "
                          f"backend onnxruntime or auto; give the .pt checkpoint for torch")
    file = read_onnx_file(resolve_weights(config.weights))
    if config.network and config.network != file.meta["network"]:
        raise ConfigError(f"network: {config.network}, but {file.path} holds "
                          f"{file.meta['network']}; leave network empty or make them match")
    if config.inference_size is not None and not file.dynamic \
            and tuple(config.inference_size) != file.export_size:
        width, height = file.export_size
        raise ConfigError(f"inference_size: {config.inference_size[0]}x"
                          f"{config.inference_size[1]}, but {file.path} was exported for "
                          f"{width}x{height} only: leave inference_size empty or export "
                          f"for that size")
    return file


def _load_network(config: EngineConfig):
    """(eval model on the CPU, meta) from the checkpoint, or a random-weight build."""
    from swiftseg_ros.nets import build_model

    if config.weights is not None:
        from swiftseg_ros.checkpoint import check_compatible, load_checkpoint, load_state_strict
        from swiftseg_ros.paths import resolve_weights

        path = resolve_weights(config.weights)
        state, meta, _ = load_checkpoint(path)
        check_compatible(meta, config.network, config.num_classes, where=str(path))
        model = build_model(meta["network"], meta["num_classes"],
                            **_inference_options(meta["network"], meta.get("network_options")))
        load_state_strict(model, state, str(path))
        for name in ("mean", "std"):
            asked = getattr(config, name)
            if asked is not None and not np.allclose(asked, meta[name]):
                log.warning("engine: %s %s ignored: the checkpoint %s has %s %s", name,
                            list(asked), path, name, meta[name])
        return model.eval(), meta

    from swiftseg_ros.classes import default_palette

    num_classes = config.num_classes or DEFAULT_NUM_CLASSES
    model = build_model(config.network, num_classes,
                        **_inference_options(config.network)).eval()
    log.warning("engine: no weights given: %s with random weights, its predictions are "
                "meaningless (fine for benchmarks and tests)", config.network)
    meta = {
        "network": config.network,
        "num_classes": num_classes,
        "class_names": [f"class_{i}" for i in range(num_classes)],
        "palette": default_palette(num_classes),
        "mean": list(config.mean or DEFAULT_MEAN),
        "std": list(config.std or DEFAULT_STD),
    }
    return model, meta


def _inference_options(network: str, saved_options: dict | None = None) -> dict:
    """Build options of a deployed network: the checkpoint's, minus training-only parts."""
    from swiftseg_ros.nets import NETWORKS

    info = NETWORKS.get(network)
    extra = info.inference_options if info is not None else {}
    return {**(saved_options or {}), **extra}
