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
counters, with every convolution on oneDNN (cpu_kernels.py).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from swiftseg_ros.engine.buffers import FrameIO
from swiftseg_ros.engine.config import (
    DEFAULT_MEAN,
    DEFAULT_NUM_CLASSES,
    DEFAULT_STD,
    EngineConfig,
    check_outputs,
)
from swiftseg_ros.engine.cpu_kernels import onednn_available, use_onednn_convolutions
from swiftseg_ros.engine.frames import channels_of, frame_as_hwc
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
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.dtype = DTYPES[config.precision]

        model, meta = _load_network(config)
        self.network = meta["network"]
        self.num_classes = meta["num_classes"]
        self.class_names = list(meta["class_names"])
        self.mean = tuple(meta["mean"])
        self.std = tuple(meta["std"])
        source = "palette parameter" if config.palette is not None else "checkpoint palette"
        self.palette = palette_table(config.palette if config.palette is not None
                                     else meta["palette"], self.num_classes, source)
        self.size_divisor = int(model.size_divisor)
        self.output_stride = int(model.output_stride)
        if config.inference_size is not None:
            width, height = config.inference_size
            if width % self.size_divisor or height % self.size_divisor:
                raise ConfigError(
                    f"inference_size: {width}x{height} is not a multiple of {self.size_divisor} "
                    f"as {self.network} needs; use e.g. "
                    f"{round_to_multiple(width, self.size_divisor)}x"
                    f"{round_to_multiple(height, self.size_divisor)}")

        with torch.inference_mode():
            from swiftseg_ros.nets import fuse_conv_bn

            model = fuse_conv_bn(model.eval())
            model.requires_grad_(False)
            model = model.to(device=self.device, dtype=self.dtype)
            if config.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.onednn_convs = (not self.on_cuda and config.onednn_convs
                                 and onednn_available())
            if self.onednn_convs:
                use_onednn_convolutions(model)
            self.model = model
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
        self._released = False
        log.info("engine: %s on %s, %s%s%s, %d classes, upsample %s", self.network,
                 self.device, config.precision, ", channels_last" if config.channels_last else "",
                 ", oneDNN convs" if self.onednn_convs else "", self.num_classes,
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

    def inference_size_for(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the network would run at for frames of this size."""
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
            onednn_convs=self.onednn_convs,
            memory=self._memory(),
        )
        return summary

    def release(self) -> None:
        """Free the network and every buffer; on CUDA, memory returns to its prior level."""
        if self._released:
            return
        self._drop_plan()
        self.model = None
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
        config = self.config
        net_w, net_h = self.inference_size_for(plan.width, plan.height)
        self._io = FrameIO(plan.height, plan.width, self.device)
        self._pre = Preprocessor(self._io.device_rgb, (net_h, net_w), self.mean, self.std,
                                 self.dtype, config.channels_last)
        # the logits' shape and memory format come from a real forward pass, which is
        # also the first warm-up pass
        self._io.device_rgb.zero_()
        logits = self.model.forward_logits(self._pre.run())
        output_hw = ((plan.height, plan.width) if config.output_size == "input"
                     else (net_h, net_w))
        self._post = Postprocessor(logits, plan.outputs, config.upsample, output_hw,
                                   self._palette_device, config.overlay_alpha,
                                   self._overlay_source(plan, output_hw),
                                   align_corners=self.model.align_corners)
        self._post.run(logits)
        self._io.set_outputs({name: self._post.outputs[name] for name in plan.outputs})

    def _overlay_source(self, plan: _Plan, output_hw):
        """Channel views of the image under the overlay, at the output size, on 0-255."""
        if "overlay" not in plan.outputs:
            return None
        if output_hw == (plan.height, plan.width):
            return self._io.device_rgb.permute(2, 0, 1).unsqueeze(0), (1.0,) * 3, (0.0,) * 3
        # the resized network input: undo the normalization
        return self._pre.network_input, self.std, self.mean

    def _device_pass(self) -> None:
        """Upload, pre-process, forward, post-process, download, with stage marks."""
        clock, stream = self._clock, self._stream
        clock.mark(0, stream)
        self._io.upload()
        clock.mark(1, stream)
        network_input = self._pre.run()
        clock.mark(2, stream)
        logits = self.model.forward_logits(network_input)
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

    def _memory(self) -> dict | None:
        if not self.on_cuda or self._released:
            return None
        mib = 1024.0 * 1024.0
        return {
            "allocated_mb": torch.cuda.memory_allocated(self.device) / mib,
            "peak_mb": torch.cuda.max_memory_allocated(self.device) / mib,
            "reserved_mb": torch.cuda.memory_reserved(self.device) / mib,
        }


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
