"""A network's forward pass traced to an ONNX graph: the one exporter under both the engine
(its ONNX Runtime and OpenVINO backends export and cache graphs at prepare) and
`swiftseg-export` (trainer/export.py, which adds metadata, opset conversion and checks).

It lives below both so that neither imports the other: the engine needs no trainer code
to run, and the export tool's verification may run the engine.

The exporter is torch.onnx's `torch.export`-based one (it needs `onnxscript`): the
TorchScript-based one cannot write adaptive average pooling to grids that do not
divide the feature map, which SwiftNet's SPP and Fast-SCNN's pyramid pooling need.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

import torch
from torch import nn

from swiftseg_ros.errors import ConfigError, SwiftsegError

NATIVE_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class ExportError(SwiftsegError, RuntimeError):
    """The network could not be written to ONNX as asked, or the written file is wrong."""


def why_no_onnx() -> str | None:
    """What `require_onnx` would refuse, found without importing onnx and onnxscript (a
    few seconds together): the engine asks at every start, and exports only on a miss of
    its graph cache."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"ONNX export needs the optional packages onnx and onnxscript ({' and '.join(missing)} "
            f"missing); install them with `pip install onnx onnxscript` (or `pip install "
            f".[onnx]`)")


def require_onnx():
    """The onnx module (with onnxscript, which the exporter needs), or ConfigError."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export needs the optional packages onnx and onnxscript ({exc}); install "
            f"them with `pip install onnx onnxscript` (or `pip install .[onnx]`)") from exc
    return onnx


def trace_to_onnx(graph: nn.Module, example: torch.Tensor, network: str, *, dynamic: bool,
                  divisor: int, spatial_axes: tuple[int, int], opset: int):
    dynamic_shapes = None
    if dynamic:
        dim = torch.export.Dim
        dynamic_shapes = {"image": {spatial_axes[0]: dim("height", min=divisor, max=8192),
                                    spatial_axes[1]: dim("width", min=divisor, max=8192)}}
    # the exporter reports its progress and missing optional torchvision ops on the
    # logging/warnings channels; the CLI prints its own summary instead
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
                opset_version=opset)
    except Exception as exc:
        if not dynamic:
            raise
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ExportError(not_dynamic_message(network, reason)) from exc
    finally:
        registration_log.setLevel(level)
    proto = program.model_proto
    shape = shape_of(proto.graph.input[0])
    if dynamic and not all(isinstance(shape[axis], str) for axis in spatial_axes):
        # the exporter may specialize the "dynamic" sides to the traced size instead of failing
        raise ExportError(not_dynamic_message(network, f"the exporter fixed the input to {shape}"))
    return proto


def not_dynamic_message(network: str, reason: str) -> str:
    return (f"--dynamic: {network} could not be exported with a variable height and width "
            f"({reason}). Its adaptive average pooling (SPP / pyramid pooling) pools to grids "
            f"that depend on the input size, which the exporter can only write for a fixed "
            f"size: export one file per camera size with --size WxH (swiftnet_rn18_pyramid "
            f"has no such pooling and exports with --dynamic)")


def opset_of(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def shape_of(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]
