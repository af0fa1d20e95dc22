"""The OpenVINO backend: the network's forward pass compiled by OpenVINO (Intel's runtime;
x86 from AVX2 to AMX, ARM CPUs, Intel GPUs and NPUs).

It reads the same ONNX graph as the ONNX Runtime backend (graph_cache.py: exported once
per size and batch and cached, or the `.onnx` file given as weights) and compiles it for
`openvino_device` (CPU by default) with a precision hint for each candidate precision:
"f32" for fp32, which must be said, since on a CPU with native bf16 OpenVINO otherwise
runs bf16 unasked, and "bf16" where the CPU runs it natively. It uses the `threads`
setting (one stream, latency hint). The engine's own pre- and post-processing stay, as
with ONNX Runtime: the request reads the preallocated network input and writes the
preallocated logits tensor in place (tensors sharing the torch buffers' memory), so
nothing is allocated per frame. Compiled models are cached by OpenVINO itself
(its model cache, `CACHE_DIR`) in the graph cache folder's `openvino/`, keyed by OpenVINO
on the graph, device and settings; an entry it cannot load (a truncated file) is
compiled afresh without the cache, with a warning.

Only the CPU device is tested here; GPU and NPU are offered where OpenVINO reports them
and are untested (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from swiftseg_ros.engine.backends.base import Backend, PassSpec
from swiftseg_ros.engine.choices import DevicePass
from swiftseg_ros.engine.graph_cache import GraphCache, cache_folder
from swiftseg_ros.errors import ConfigError

log = logging.getLogger("swiftseg_ros.engine")

OPENVINO = "openvino"
MIN_VERSION = (2024, 0)
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def require_openvino():
    """The openvino module, or ConfigError saying how to get a usable one."""
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError("backend: openvino needs the package openvino >= "
                          f"{'.'.join(map(str, MIN_VERSION))} (pip install openvino); or use "
                          f"backend torch or onnxruntime") from exc
    if _version(openvino.__version__) < MIN_VERSION:
        raise ConfigError(f"backend: openvino {openvino.__version__} is too old, need >= "
                          f"{'.'.join(map(str, MIN_VERSION))} (pip install -U openvino)")
    return openvino


def why_unusable(config) -> str | None:
    """Why the OpenVINO backend cannot run this EngineConfig, or None when it can."""
    if config.device != "cpu":
        return (f"runs with device cpu only (its input and output are host memory), "
                f"device is {config.device}; for a GPU of OpenVINO's use openvino_device")
    from swiftseg_ros.onnx_graph import why_no_onnx

    device = config.openvino_device
    try:
        ov = require_openvino()
        # the CPU plugin is part of every OpenVINO wheel: only other devices are looked up
        # (starting OpenVINO's device discovery costs a start time)
        if device != "CPU" or config.precision == "bf16":
            core = ov.Core()
            available = core.available_devices
    except ConfigError as exc:
        return str(exc).removeprefix("backend: openvino ")
    except Exception as exc:  # OpenVINO's runtime raises its own types when it cannot start
        return f"cannot start ({_first_line(exc)})"
    if device != "CPU" and device.split(".")[0] not in {d.split(".")[0] for d in available} \
            and device.split(":")[0] not in ("AUTO", "MULTI", "HETERO"):
        return (f"openvino_device: {device} is not there; OpenVINO reports "
                f"{', '.join(available) or 'no device'}")
    if config.precision == "bf16" and "BF16" not in _capabilities(core, device):
        return f"precision: bf16 is not native on {device} for OpenVINO; use fp32 or auto"
    return why_no_onnx()


def _capabilities(core, device: str) -> list[str]:
    try:
        return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # a device that does not report them: assume nothing
        return []


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("-")[0].split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class OpenVinoBackend(Backend):
    name = OPENVINO

    def __init__(self, context):
        super().__init__(context)
        self.graphs = GraphCache(context)
        self._core = None  # started on the first candidate: a cached torch winner needs none

    @property
    def core(self):
        if self._core is None:
            self._core = require_openvino().Core()
        return self._core

    def candidates(self, spec: PassSpec):
        why = self._why_not(spec.precision)
        if why is not None:
            return {}, {OPENVINO: why}
        return {OPENVINO: functools.partial(self._pass, spec)}, {}

    def _why_not(self, precision: str) -> str | None:
        device = self.context.config.openvino_device
        if precision == "bf16" and "BF16" not in _capabilities(self.core, device):
            return f"{device} has no native bf16 for OpenVINO"
        if precision == "fp16" and device == "CPU":
            return "fp16 does not run on the CPU"
        if self.context.onnx_file is not None and self.context.onnx_file.uint8_input:
            return "takes the engine's normalized input, not a uint8-input .onnx file"
        return None

    def _pass(self, spec: PassSpec) -> DevicePass:
        pre = spec.preprocess(torch.float32, False)
        forward = OpenVinoForward(self.core, self.graphs.path(spec.net_hw, spec.batch),
                                  pre.network_input, self.context.config, spec.precision)
        file = self.context.onnx_file
        # a file's logits are at the input size already: nothing left to interpolate
        upsample = "labels" if file is not None and spec.net_hw == spec.output_hw else None
        return spec.finish(OPENVINO, OPENVINO, pre, forward, upsample=upsample)


class OpenVinoForward:
    """One compiled model and infer request bound to a fixed input tensor and a
    preallocated output tensor (shared memory: no copies, no per-frame allocation)."""

    def __init__(self, core, onnx_path: Path, network_input: torch.Tensor, config,
                 precision: str):
        import openvino as ov

        if not network_input.is_contiguous():
            raise ValueError("OpenVINO reads contiguous (NCHW) input")
        settings = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if config.openvino_device == "CPU":
            settings["INFERENCE_NUM_THREADS"] = config.threads or torch.get_num_threads()
        try:
            model = core.read_model(str(onnx_path))
        except Exception as exc:  # OpenVINO raises its own types for unreadable graphs
            raise ConfigError(f"{onnx_path}: OpenVINO cannot read it ({_first_line(exc)}); "
                              f"delete it to re-export") from exc
        expected = [int(d) for d in model.input(0).get_partial_shape().to_shape()] \
            if model.input(0).get_partial_shape().is_static else None
        if expected is not None and expected != list(network_input.shape):
            raise ConfigError(f"{onnx_path}: its input is {expected}, the engine's is "
                              f"{list(network_input.shape)}; export it for this size")
        self.compiled = _compile(core, model, config, settings)
        self.request = self.compiled.create_infer_request()
        self.network_input = network_input
        self.request.set_input_tensor(ov.Tensor(network_input.numpy(), shared_memory=True))
        if not self.compiled.output(0).get_partial_shape().is_static:  # dynamic axes
            self.request.infer()
            shape = list(self.request.get_output_tensor().shape)
        else:
            shape = list(self.compiled.output(0).get_partial_shape().to_shape())
        self.logits = torch.empty(shape, dtype=torch.float32)
        self.request.set_output_tensor(ov.Tensor(self.logits.numpy(), shared_memory=True))

    def __call__(self, network_input: torch.Tensor) -> torch.Tensor:
        self.request.infer()
        return self.logits


def _compile(core, model, config, settings: dict):
    """The compiled model, from OpenVINO's model cache where it has one; an entry it
    cannot load is compiled afresh, with a warning, without the cache."""
    folder = cache_folder(config.cache_dir) / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cached = {**settings, "CACHE_DIR": str(folder)}
    except OSError as exc:
        log.warning("engine: OpenVINO model cache %s: cannot write (%s); compiling without "
                    "it", folder, exc.strerror or exc)
        cached = settings
    try:
        return core.compile_model(model, config.openvino_device, cached)
    except Exception as exc:  # a truncated or foreign cache entry, an unwritable folder
        if cached is settings:
            raise ConfigError(f"openvino: cannot compile for {config.openvino_device} "
                              f"({_first_line(exc)})") from exc
        log.warning("engine: OpenVINO could not use its model cache %s (%s); compiling "
                    "without it", folder, _first_line(exc))
    try:
        return core.compile_model(model, config.openvino_device, settings)
    except Exception as exc:
        raise ConfigError(f"openvino: cannot compile for {config.openvino_device} "
                          f"({_first_line(exc)})") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
