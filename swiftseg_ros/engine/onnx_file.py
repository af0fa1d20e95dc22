"""An `.onnx` file written by `swiftseg-export` as the engine's weights (backend onnxruntime).

The file's metadata (trainer/export.py, `onnx_metadata`) carries what a checkpoint's meta
carries (network, classes, palette, mean/std) and what the engine needs to feed it: the
input layout (normalized float32 NCHW, or uint8 NHWC camera pixels normalized in the
graph with `--include-preprocess`), the size it was exported for and whether that size
is dynamic. Its output is logits at the input size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from swiftseg_ros.errors import ConfigError

METADATA_FORMAT = "swiftseg-onnx"
NEEDED = ("network", "num_classes", "class_names", "palette", "mean", "std", "size_divisor",
          "output_stride", "input", "export_size", "dynamic_size")


@dataclass(frozen=True)
class OnnxFile:
    path: Path
    meta: dict
    size_divisor: int
    output_stride: int
    export_size: tuple[int, int]  # (width, height)
    dynamic: bool
    uint8_input: bool


def is_onnx_file(weights) -> bool:
    return weights is not None and str(weights).lower().endswith(".onnx")


def read_onnx_file(path) -> OnnxFile:
    """The file's metadata, checked; ConfigError in one line for a file the engine cannot run."""
    path = Path(path)
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except ImportError as exc:
        raise ConfigError("weights: an .onnx file needs the package onnx (pip install onnx)") \
            from exc
    except Exception as exc:  # onnx raises DecodeError and friends for a damaged file
        raise ConfigError(f"weights: {path} is not a readable ONNX file ({type(exc).__name__}); "
                          f"write it again with swiftseg-export") from exc
    try:
        values = {p.key: json.loads(p.value) for p in proto.metadata_props}
    except ValueError:
        values = {}
    if values.get("format") != METADATA_FORMAT or any(key not in values for key in NEEDED):
        raise ConfigError(f"weights: {path} has no swiftseg metadata (classes, palette, "
                          f"mean/std): export it with swiftseg-export, or give the .pt "
                          f"checkpoint")
    meta = {key: values[key] for key in ("network", "num_classes", "class_names", "palette",
                                         "mean", "std")}
    width, height = values["export_size"]
    return OnnxFile(path=path, meta=meta, size_divisor=int(values["size_divisor"]),
                    output_stride=int(values["output_stride"]),
                    export_size=(int(width), int(height)), dynamic=bool(values["dynamic_size"]),
                    uint8_input=values["input"].get("dtype") == "uint8")


class RawInput:
    """The 'pre-processing' of a graph that normalizes uint8 camera pixels itself: the
    engine's RGB frame buffer, viewed as the (1, H, W, 3) input, as it is."""

    def __init__(self, device_rgb):
        self.network_input = device_rgb.unsqueeze(0)
        self.inference_hw = tuple(device_rgb.shape[:2])

    def run(self):
        return self.network_input
