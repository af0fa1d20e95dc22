"""The ONNX Runtime backend: the network's forward pass as an ONNX Runtime session.

Only the forward pass changes backend: the engine's own pre-processing writes the
normalized network input and its post-processing reads the logits, so both backends
share one implementation of normalization, class selection, confidence and palette,
and the stage timings keep their names. The session reads the input tensor and writes
the logits tensor in place (IO binding to preallocated torch buffers), so nothing is
allocated per frame. It runs fp32 graphs: an .onnx file given as weights, or the graph
exported from the loaded network.

When its pass wins, it is timed once more as a graph whose wide 3x3 convolutions are
Winograd F(4x4, 3x3) (kernels/winograd.py), and kept that way if faster; this is asked
once per input size, after a layer-by-layer timing in torch says it may pay.

The graph is exported from the loaded network at prepare, per input size, and cached
on disk (graph_cache.py, shared with the OpenVINO backend).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path

import torch

from swiftseg_ros.engine.autotune import Choice, choose, failure_note
from swiftseg_ros.engine.backends.base import Backend, PassSpec
from swiftseg_ros.engine.choices import ONNXRUNTIME, TIMING_REPEATS, DevicePass
from swiftseg_ros.engine.graph_cache import GraphCache
from swiftseg_ros.engine.kernels.winograd import (
    MIN_CHANNELS,
    WinogradCache,
    count_eligible,
    layer_runs,
    use_winograd,
)
from swiftseg_ros.engine.onnx_file import RawInput
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.onnx_graph import why_no_onnx

MIN_VERSION = (1, 18)
OPSET = 18
# tried in this order where the installed onnxruntime has them (the CPU one always last)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def require_onnxruntime():
    """The onnxruntime module, or ConfigError saying how to get a usable one."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("backend: onnxruntime needs the package onnxruntime "
                          f">= {'.'.join(map(str, MIN_VERSION))} (pip install onnxruntime); "
                          "or use backend torch") from exc
    if _version(onnxruntime.__version__) < MIN_VERSION:
        raise ConfigError(f"backend: onnxruntime {onnxruntime.__version__} is too old, need "
                          f">= {'.'.join(map(str, MIN_VERSION))} (pip install -U onnxruntime); "
                          f"or use backend torch")
    return onnxruntime


def why_unusable(config) -> str | None:
    """Why the ONNX Runtime backend cannot run this EngineConfig, or None when it can."""
    if config.backend == "torch":
        return None
    if config.precision not in ("fp32", "auto"):
        return f"runs fp32 only here, precision is {config.precision}; use precision fp32"
    if config.backend == "auto" and config.device == "cpu" \
            and importlib.util.find_spec("onnxruntime") is not None:
        # started when its candidate is asked for (candidates checks its version then): a
        # restart whose cached winner is another backend's never imports it (0.2 s)
        return why_no_onnx()
    try:
        ort = require_onnxruntime()
        providers_for(torch.device(config.device), ort.get_available_providers())
    except ConfigError as exc:
        return str(exc).removeprefix("backend: onnxruntime ")
    return why_no_onnx()


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def providers_for(device: torch.device, available) -> list[str]:
    """Execution providers for the engine's device, best first, from those installed.

    On CUDA: TensorRT and CUDA where this onnxruntime has them; ConfigError when it has
    neither (onnxruntime's CPU-only wheel), since running the network on the CPU while
    the engine's buffers are on the GPU is never what was asked for.
    """
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if not gpu:
        raise ConfigError(f"backend: onnxruntime on {device} needs an onnxruntime with the "
                          f"CUDA execution provider (pip install onnxruntime-gpu); this one "
                          f"has {', '.join(available)}; or use backend torch")
    return [*gpu, "CPUExecutionProvider"]


class OrtForward:
    """One ONNX Runtime session bound to a fixed input tensor and a preallocated output.

    `__call__(network_input)` runs the session on the bound input (the argument must be
    that tensor: binding is by address) and returns the bound logits tensor.
    """

    def __init__(self, onnx_path: Path, network_input: torch.Tensor, device: torch.device,
                 threads: int | None = None):
        ort = require_onnxruntime()
        if not network_input.is_contiguous():
            raise ValueError("ONNX Runtime reads contiguous (NCHW) input")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = True
        self.providers = providers_for(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(onnx_path), options,
                                                providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise ConfigError(f"{onnx_path}: ONNX Runtime cannot load it "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                              f"; delete it to re-export") from exc
        feed, fetch = self.session.get_inputs()[0], self.session.get_outputs()[0]
        expected = [d if isinstance(d, int) else None for d in feed.shape]
        actual = list(network_input.shape)
        if any(e is not None and e != a for e, a in zip(expected, actual, strict=True)):
            raise ConfigError(f"{onnx_path}: its input is {feed.shape}, the engine's is "
                              f"{actual}; export it for this size")
        self.device = device
        self.network_input = network_input
        out_shape = [d if isinstance(d, int) else None for d in fetch.shape]
        if None in out_shape:  # dynamic axes: ask the session once
            out_shape = list(self.session.run(None, {feed.name: network_input.cpu().numpy()})[0]
                             .shape)
        self.logits = torch.empty(out_shape, dtype=torch.float32, device=device)
        self.binding = self.session.io_binding()
        kind, index = device.type, device.index or 0
        self.binding.bind_input(feed.name, kind, index, _element_type(network_input),
                                actual, network_input.data_ptr())
        self.binding.bind_output(fetch.name, kind, index, _element_type(self.logits),
                                 list(self.logits.shape), self.logits.data_ptr())

    def __call__(self, network_input: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            # the input was written on the engine's stream; ONNX Runtime runs on its own
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(self.binding)
        return self.logits


def _element_type(tensor: torch.Tensor):
    import numpy as np

    return {torch.float32: np.float32, torch.uint8: np.uint8,
            torch.float16: np.float16}[tensor.dtype]


class OnnxRuntimeBackend(Backend):
    name = ONNXRUNTIME

    def __init__(self, context):
        super().__init__(context)
        self.graphs = GraphCache(context)
        self.winograd_filters = WinogradCache()
        self._conv_3x3_choices: dict[tuple, Choice] = {}

    def candidates(self, spec: PassSpec):
        if spec.precision != "fp32":
            return {}, {ONNXRUNTIME: f"runs fp32 only here, precision is {spec.precision}"}
        try:
            require_onnxruntime()  # backend auto on the CPU: not checked at construction
        except ConfigError as exc:
            return {}, {ONNXRUNTIME: str(exc).removeprefix("backend: onnxruntime ")}
        return {ONNXRUNTIME: functools.partial(self._pass, spec)}, {}

    def state(self, spec: PassSpec) -> dict:
        """The Winograd graph's choice at this size, when it was made."""
        choice = self._conv_3x3_choices.get(tuple(spec.net_hw))
        return {} if choice is None else {"conv_3x3": choice.as_dict()}

    def restore(self, spec: PassSpec, state: dict) -> None:
        choice = state.get("conv_3x3")
        if choice is not None:
            self._conv_3x3_choices.setdefault(tuple(spec.net_hw),
                                              Choice("conv_3x3", **choice))

    def release(self) -> None:
        self.winograd_filters.clear()
        self._conv_3x3_choices.clear()

    def graph_path(self, net_hw, winograd: bool = False, batch: int = 1) -> Path:
        """The .onnx file of the network at this inference size and batch (exported and
        cached when needed, graph_cache.py), or the file given as weights."""
        if not winograd:
            return self.graphs.path(net_hw, batch)

        def rewritten(original):
            # the weights shared: their transformed filters are built once
            shared = {id(t): t for t in (*original.parameters(), *original.buffers())}
            copied = copy.deepcopy(original, memo=shared)
            use_winograd(copied, build=self.winograd_filters)
            return copied

        return self.graphs.path(net_hw, batch, variant=f"winograd{MIN_CHANNELS}",
                                rewrite=rewritten)

    def _pass(self, spec: PassSpec, winograd: bool = False) -> DevicePass:
        context, key, net_hw = self.context, spec.key, spec.net_hw
        file = context.onnx_file
        path = self.graph_path(net_hw, winograd, spec.batch)
        if file is not None and file.uint8_input:
            if spec.batch > 1:
                raise ConfigError(f"weights: {path} takes one uint8 frame per pass "
                                  f"(exported with --include-preprocess); batches of "
                                  f"{spec.batch} need the .pt checkpoint")
            if (key.height, key.width) != net_hw:
                raise ConfigError(
                    f"weights: {path} takes uint8 frames of {net_hw[1]}x{net_hw[0]} only "
                    f"(exported with --include-preprocess at that size), frames are "
                    f"{key.width}x{key.height}: export it for this size, or without "
                    f"--include-preprocess to let the engine resize")
            pre = RawInput(spec.io.device_rgb)
        else:
            pre = spec.preprocess(torch.float32, False)
        forward = OrtForward(path, pre.network_input, context.device, context.config.threads)
        # a file's logits are at the input size already: nothing left to interpolate
        upsample = "labels" if file is not None and net_hw == spec.output_hw else None
        return spec.finish(ONNXRUNTIME + ("+winograd" if winograd else ""), ONNXRUNTIME,
                           pre, forward, upsample=upsample,
                           conv_3x3="winograd" if winograd else "direct")

    def refine(self, chosen: DevicePass, choices: dict, spec: PassSpec) -> DevicePass:
        """The chosen pass, or its twin whose graph has Winograd 3x3 convolutions when that
        measures faster; the choice is added to `choices` as "conv_3x3". It is made once
        per input size: later plans of that size (another output set, the second
        pipelined slot) reuse it, and the transformed filters."""
        seen = tuple(spec.net_hw)
        choice = self._conv_3x3_choices.get(seen)
        if choice is None:
            # an .onnx file given as weights has no network: its note says so
            note = self._winograd_note() or self._winograd_layers_note(spec.net_hw)
            if note is not None:
                choice = Choice("conv_3x3", "direct", {}, {"winograd": note})
        twin = None
        if choice is None or choice.picked == "winograd":
            try:
                twin = self._pass(spec, winograd=True)
            except Exception as exc:  # e.g. an unwritable cache: the direct pass still works
                choice = Choice("conv_3x3", "direct", {}, {"winograd": failure_note(exc)})
            else:
                choice = choice or choose("conv_3x3", {"direct": chosen.run,
                                                       "winograd": twin.run},
                                          repeats=TIMING_REPEATS)
        self._conv_3x3_choices[seen] = choices["conv_3x3"] = choice
        return twin if choice.picked == "winograd" else chosen

    def _winograd_note(self) -> str | None:
        """Why a Winograd graph is not a candidate here, or None when it is."""
        context = self.context
        if context.model is None:
            return "no network loaded (an .onnx file)"
        if not context.config.winograd:
            return "not asked (winograd off)"
        if context.on_cuda:
            return "CUDA: cuDNN picks its own algorithms per shape (benchmark)"
        if not count_eligible(context.model):
            return f"no 3x3 convolution with {MIN_CHANNELS}+ channels in {context.network}"
        return None

    def _winograd_layers_note(self, net_hw) -> str | None:
        """None when Winograd is faster than the direct convolutions layer by layer at this
        size (torch, on this machine), else why the whole Winograd graph is not built."""
        example = torch.zeros((1, 3, *net_hw))
        try:
            direct, winograd, layers = layer_runs(self.context.model, example,
                                                  build=self.winograd_filters)
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
