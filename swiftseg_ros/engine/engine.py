"""SegmentationEngine: camera pixels in host memory -> uint8 segmentation outputs in host
memory, with every buffer allocated once per input size and per-stage timing.

One frame (DESIGN.md, "Data flow of one frame"): copy into the (pinned) host buffer,
settling the channel order on the way (frames.py) -> asynchronous upload -> on the
device: fused uint8-to-float normalization, resize, forward of the conv-BN-fused
network, post-processing -> asynchronous download of the requested outputs -> one
synchronization. On CUDA the part from the upload to the download is captured once
as a CUDA graph (per input size and output set) on the engine's own stream and
replayed per frame; the stage timing events are part of the graph, so timing costs
no extra synchronization. On the CPU the same pass runs eagerly, timed with perf
counters. The forward pass's backend (torch or ONNX Runtime), and on the CPU the
convolution route and memory format, are chosen per input size by timing the
candidates that this machine supports (choices.py, cpu_caps.py, ort_backend.py).
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from swiftseg_ros.engine import cpu_caps
from swiftseg_ros.engine.buffers import FrameIO
from swiftseg_ros.engine.choices import ONNXRUNTIME, TORCH, DevicePass, pick_pass
from swiftseg_ros.engine.config import (
    DEFAULT_MEAN,
    DEFAULT_NUM_CLASSES,
    DEFAULT_STD,
    EngineConfig,
    check_outputs,
)
from swiftseg_ros.engine.cpu_kernels import model_variants, onednn_available
from swiftseg_ros.engine.frames import channels_of, frame_as_hwc
from swiftseg_ros.engine.onnx_file import RawInput, is_onnx_file, read_onnx_file
from swiftseg_ros.engine.ort_backend import why_onnxruntime_unusable
from swiftseg_ros.engine.palette import palette_table, palette_tensor
from swiftseg_ros.engine.postprocess import Postprocessor
from swiftseg_ros.engine.preprocess import Preprocessor
from swiftseg_ros.engine.timing import CpuStageClock, CudaStageClock, StageWindow
from swiftseg_ros.errors import ConfigError, SwiftsegError

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


@dataclass(frozen=True)
class _Plan:
    """What the buffers and the captured graph were made for."""

    height: int
    width: int
    outputs: tuple[str, ...]


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
            if config.precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise ConfigError(f"precision: bf16 is not supported by "
                                  f"{torch.cuda.get_device_name(self.device)}; use fp16")
        self.cpu = cpu_caps.detect()
        if not self.on_cuda and config.precision == "bf16":
            self.cpu.require_bf16()
        self._onnxruntime_note = why_onnxruntime_unusable(config)
        if config.backend == ONNXRUNTIME and self._onnxruntime_note:
            raise ConfigError(f"backend: onnxruntime {self._onnxruntime_note}")
        if config.threads is not None:
            torch.set_num_threads(config.threads)
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
        self.model = None
        with torch.inference_mode():
            if model is not None:
                self._prepare_network(model)
            self._palette_device = palette_tensor(self.palette, self.device)

        if self.on_cuda:
            torch.backends.cudnn.benchmark = True  # autotuned once per shape, in warm-up
            self._stream = torch.cuda.Stream(self.device)
            self._clock = CudaStageClock(torch)
        else:
            self._stream = None
            self._clock = CpuStageClock()
        self._outputs = config.outputs
        self._window = StageWindow(config.stats_window)
        self._plan: _Plan | None = None
        self._pixel_format: str | None = None
        self._io: FrameIO | None = None
        self._pre: Preprocessor | None = None
        self._post: Postprocessor | None = None
        self._graph = None
        self._graph_note = "not on CUDA" if not self.on_cuda else "not prepared"
        self._pass: DevicePass | None = None
        self._forward = None
        self._choices = {}
        self._digest: str | None = None
        self._released = False
        log.info("engine: %s on %s, %s, backend %s, %d classes, upsample %s", self.network,
                 self.device, config.precision, config.backend, self.num_classes,
                 config.upsample)

    # ------------------------------------------------------------------ public API

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._outputs

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames the buffers are prepared for."""
        return None if self._plan is None else (self._plan.width, self._plan.height)

    @property
    def inference_size(self) -> tuple[int, int] | None:
        """(width, height) the network runs at for the prepared input size."""
        if self._pre is None:
            return self.config.inference_size
        height, width = self._pre.inference_hw
        return width, height

    @property
    def network_input(self) -> torch.Tensor | None:
        """The last frame's pre-processed network input (a device tensor, reused)."""
        return None if self._pre is None else self._pre.network_input

    @property
    def uses_cuda_graph(self) -> bool:
        return self._graph is not None

    @property
    def backend(self) -> str | None:
        """The backend running the forward pass ("torch" or "onnxruntime"); None before
        the first prepare when it is to be chosen."""
        if self._pass is not None:
            return self._pass.backend
        return None if self.config.backend == "auto" else self.config.backend

    def run_forward(self) -> torch.Tensor:
        """The chosen forward pass alone, on the last pre-processed input (for benchmarks)."""
        return self._forward(self._pre.network_input)

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

        The device buffers depend on the size only: every pixel format becomes RGB in the
        host copy, so a new pixel format alone needs no new plan.
        """
        self._check_usable()
        channels_of(pixel_format)
        max_width, max_height = self.config.max_input_size
        if not (0 < width <= max_width and 0 < height <= max_height):
            raise ConfigError(f"input size {width}x{height} is not within 1x1 to "
                              f"{max_width}x{max_height} (max_input_size)")
        started = time.perf_counter()
        self._drop_plan()
        plan = _Plan(height, width, self._outputs)
        with torch.inference_mode():
            self._build(plan)
            self._warm_up()
            self._graph = self._capture() if self.on_cuda else None
        self._plan = plan
        self._pixel_format = pixel_format
        net_w, net_h = self.inference_size
        log.info("engine: prepared %dx%d %s -> network %dx%d, outputs %s, %s (%.0f ms)",
                 width, height, pixel_format, net_w, net_h, ",".join(plan.outputs),
                 "CUDA graph" if self._graph is not None else f"eager ({self._graph_note})",
                 (time.perf_counter() - started) * 1000.0)

    @torch.inference_mode()
    def infer(self, frame: np.ndarray, pixel_format: str = "rgb8") -> SegResult:
        """Segment one frame; the result's arrays are reused by the next call."""
        self._check_usable()
        frame = frame_as_hwc(frame, pixel_format, self.config.max_input_size)
        height, width = frame.shape[:2]
        plan = self._plan
        if plan is None or (plan.height, plan.width) != (height, width):
            if plan is not None:
                log.warning("engine: input size changed from %dx%d to %dx%d; re-planning "
                            "buffers", plan.width, plan.height, width, height)
            self.prepare(height, width, pixel_format)
        self._pixel_format = pixel_format
        io = self._io
        started = time.perf_counter()
        io.copy_frame(frame, pixel_format)
        copied = time.perf_counter()
        if self._graph is not None:
            with torch.cuda.stream(self._stream):
                self._graph.replay()
        elif self.on_cuda:
            with torch.cuda.stream(self._stream):
                self._device_pass()
        else:
            self._device_pass()
        if self.on_cuda:
            self._stream.synchronize()  # the frame's one synchronization
        finished = time.perf_counter()
        timings = self._clock.read()
        timings["host_copy"] = (copied - started) * 1000.0
        timings["total"] = (finished - started) * 1000.0
        self._window.add(timings, finished)
        arrays = io.arrays
        return SegResult(arrays.get("label"), arrays.get("color"), arrays.get("confidence"),
                         arrays.get("overlay"), timings)

    def set_outputs(self, outputs) -> None:
        """Change the requested outputs; re-plans (and re-captures) once, now."""
        self._check_usable()
        outputs = check_outputs(outputs)
        if outputs == self._outputs:
            return
        self._outputs = outputs
        if self._plan is not None:
            plan = self._plan
            log.info("engine: outputs changed to %s; re-planning", ",".join(outputs))
            self.prepare(plan.height, plan.width, self._pixel_format)

    def stats(self) -> dict:
        """Frames, per-stage percentiles over the recent window, rates, setup and memory."""
        summary = self._window.summary()
        summary.update(
            network=self.network,
            device=str(self.device),
            precision=self.config.precision,
            outputs=list(self._outputs),
            upsample=self.config.upsample,
            input_size=self.input_size,
            pixel_format=self._pixel_format,
            inference_size=self.inference_size,
            cuda_graph=self._graph is not None,
            backend=self.backend,
            choices={what: choice.as_dict() for what, choice in self._choices.items()},
            cpu=self.cpu.as_dict(),
            memory=self._memory(),
        )
        return summary

    def release(self) -> None:
        """Free the network and every buffer; on CUDA, memory returns to its prior level."""
        if self._released:
            return
        self._drop_plan()
        self.model = None
        self._variants = {}
        self._export_source = None
        self._palette_device = None
        self._clock = None
        self._stream = None
        self._released = True
        gc.collect()
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        log.info("engine: released %s", self.network)

    # ------------------------------------------------------------------ internals

    def _check_usable(self) -> None:
        if self._released:
            raise SwiftsegError("engine was released; build a new SegmentationEngine")

    def _build(self, plan: _Plan) -> None:
        """Buffers for this plan, and the device pass chosen by timing the candidates."""
        config = self.config
        net_w, net_h = self.inference_size_for(plan.width, plan.height)
        self._io = FrameIO(plan.height, plan.width, self.device)
        self._io.device_rgb.zero_()
        output_hw = ((plan.height, plan.width) if config.output_size == "input"
                     else (net_h, net_w))
        candidates, notes = {}, dict(self._variant_notes)
        for (route, memory_format), model in self._variants.items():
            candidates[f"{route}/{memory_format}"] = functools.partial(
                self._torch_pass, plan, (net_h, net_w), output_hw, model, route, memory_format)
        if config.backend == TORCH:
            notes[ONNXRUNTIME] = "not asked (backend: torch)"
        elif self._onnxruntime_note:
            notes[ONNXRUNTIME] = self._onnxruntime_note
        else:
            candidates[ONNXRUNTIME] = functools.partial(self._onnxruntime_pass, plan,
                                                        (net_h, net_w), output_hw)
        sync = self._stream.synchronize if self.on_cuda else None
        try:
            chosen, self._choices = pick_pass(candidates, notes, sync=sync)
        except ConfigError:
            raise
        except RuntimeError as exc:
            raise ConfigError(f"engine: {exc}") from exc
        self._pass, self._pre, self._post = chosen, chosen.pre, chosen.post
        self._forward = chosen.forward
        if chosen.model is not None:
            self.model = chosen.model
        log.info("engine: %dx%d: %s", net_w, net_h,
                 "; ".join(choice.describe() for choice in self._choices.values()))
        self._io.set_outputs({name: self._post.outputs[name] for name in plan.outputs})

    def _pass_tail(self, name, backend, pre, forward, plan, output_hw, upsample=None,
                   **extra) -> DevicePass:
        """A candidate pass from its pre-processing and forward: the post-processing is
        shaped by a real forward pass (which is also its first warm-up pass)."""
        logits = forward(pre.run())
        post = Postprocessor(logits, plan.outputs, upsample or self.config.upsample, output_hw,
                             self._palette_device, self.config.overlay_alpha,
                             self._overlay_source(plan, output_hw, pre),
                             align_corners=self.align_corners)
        return DevicePass(name, backend, pre, forward, post, **extra)

    def _torch_pass(self, plan, net_hw, output_hw, model, route, memory_format) -> DevicePass:
        pre = Preprocessor(self._io.device_rgb, net_hw, self.mean, self.std, self.dtype,
                           memory_format == "channels_last")
        return self._pass_tail(f"{route}/{memory_format}", TORCH, pre, model.forward_logits,
                               plan, output_hw, model=model, route=route,
                               memory_format=memory_format)

    def _onnxruntime_pass(self, plan, net_hw, output_hw) -> DevicePass:
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
            path = cached_graph(self._export_source, self.network, *net_hw,
                                digest=self._digest, folder=cache_folder(self.config.cache_dir))
        if file is not None and file.uint8_input:
            if (plan.height, plan.width) != net_hw:
                raise ConfigError(
                    f"weights: {path} takes uint8 frames of {net_hw[1]}x{net_hw[0]} only "
                    f"(exported with --include-preprocess at that size), frames are "
                    f"{plan.width}x{plan.height}: export it for this size, or without "
                    f"--include-preprocess to let the engine resize")
            pre = RawInput(self._io.device_rgb)
        else:
            pre = Preprocessor(self._io.device_rgb, net_hw, self.mean, self.std,
                               torch.float32, channels_last=False)
        forward = OrtForward(path, pre.network_input, self.device, self.config.threads)
        # a file's logits are at the input size already: nothing left to interpolate
        upsample = ("labels" if file is not None and net_hw == output_hw
                    else self.config.upsample)
        return self._pass_tail(ONNXRUNTIME, ONNXRUNTIME, pre, forward, plan, output_hw,
                               upsample=upsample)

    def _prepare_network(self, model) -> None:
        """The conv-BN-fused network, its torch candidates, and its fp32 CPU original that
        ONNX graphs are exported from."""
        from swiftseg_ros.nets import fuse_conv_bn

        model = fuse_conv_bn(model.eval())
        model.requires_grad_(False)
        if self.config.backend != TORCH:
            self._export_source = copy.deepcopy(model) if self.on_cuda else model
        model = model.to(device=self.device, dtype=self.dtype)
        self._variants, self._variant_notes = self._torch_variants(model)
        self.model = next(iter(self._variants.values()), None)

    def _torch_variants(self, model):
        """(the torch candidates {(route, memory format): network}, notes on those left out)."""
        config = self.config
        if config.backend == ONNXRUNTIME:
            return {}, {}
        formats = ("channels_last", "contiguous") if config.channels_last else ("contiguous",)
        notes = {} if config.channels_last else {"*/channels_last": "not asked (channels_last off)"}
        if self.on_cuda:
            # cuDNN picks its algorithms per shape itself (cudnn.benchmark)
            formats = formats[:1]
            routes = ("torch",)
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
        if self.on_cuda and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
            return {("torch", "channels_last"): model}, notes
        return model_variants(model, routes=routes, formats=formats), notes

    def _overlay_source(self, plan: _Plan, output_hw, pre: Preprocessor):
        """Channel views of the image under the overlay, at the output size, on 0-255."""
        if "overlay" not in plan.outputs:
            return None
        if output_hw == (plan.height, plan.width):
            return self._io.device_rgb.permute(2, 0, 1).unsqueeze(0), (1.0,) * 3, (0.0,) * 3
        # the resized network input: undo the normalization
        return pre.network_input, self.std, self.mean

    def _device_pass(self) -> None:
        """Upload, pre-process, forward, post-process, download, with stage marks."""
        clock, stream = self._clock, self._stream
        clock.mark(0, stream)
        self._io.upload()
        clock.mark(1, stream)
        network_input = self._pre.run()
        clock.mark(2, stream)
        logits = self._forward(network_input)
        clock.mark(3, stream)
        self._post.run(logits)
        clock.mark(4, stream)
        self._io.download()
        clock.mark(5, stream)

    def _warm_up(self) -> None:
        """Run the eager pass: oneDNN primitives, cuDNN autotuning, allocator caches.

        `warmup_iters` passes in all, counting the one in `_build`; on CUDA at least one
        full pass (with the copies) runs on the engine's stream before the capture.
        """
        if self.on_cuda:
            # CUDA graph recipe: warm up on a side stream (ours), then capture on it
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                for _ in range(max(1, self.config.warmup_iters - 1)):
                    self._device_pass()
            self._stream.synchronize()
        else:
            for _ in range(self.config.warmup_iters - 1):
                self._device_pass()

    def _capture(self):
        """One CUDA graph of the device pass, or None (eager) with the reason logged."""
        if not self.config.cuda_graphs:
            self._graph_note = "cuda_graphs off"
            return None
        if not self._clock.graph_safe:
            self._graph_note = "this torch cannot record timing events inside a CUDA graph"
            log.warning("engine: CUDA graph disabled: %s", self._graph_note)
            return None
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                self._device_pass()
            with torch.cuda.stream(self._stream):
                graph.replay()
            self._stream.synchronize()
        except Exception as exc:  # any capture failure: run eager, keep the reason visible
            self._graph_note = f"CUDA graph capture failed: {type(exc).__name__}: {exc}"
            log.warning("engine: %s; running eager", self._graph_note)
            del graph
            torch.cuda.synchronize(self.device)
            return None
        self._graph_note = "captured"
        return graph

    def _drop_plan(self) -> None:
        if self._graph is not None:
            self._graph.reset()
        self._graph = None
        self._plan = None
        self._io = None
        self._pre = None
        self._post = None
        self._pass = None
        self._forward = None

    def _memory(self) -> dict | None:
        if not self.on_cuda or self._released:
            return None
        mib = 1024.0 * 1024.0
        return {
            "allocated_mb": torch.cuda.memory_allocated(self.device) / mib,
            "peak_mb": torch.cuda.max_memory_allocated(self.device) / mib,
            "reserved_mb": torch.cuda.memory_reserved(self.device) / mib,
        }


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
