"""ONNX export of a checkpoint (`swiftseg-export`), verified with ONNX Runtime against PyTorch.

The ONNX file is the bridge to other runtimes, TensorRT on Jetson above all
(`trtexec --onnx=model.onnx --fp16 --saveEngine=model.engine`). What it computes:

- input `image`: float32 (1, 3, H, W), RGB, already normalized as (pixel - mean) / std
  on 0-255 values with the checkpoint's mean/std (in the metadata); with
  `--include-preprocess` instead uint8 (1, H, W, 3) RGB camera pixels, the
  normalization being part of the graph;
- output `logits`: float32 (1, num_classes, H, W), bilinear upsampled to the input size;
  the label of a pixel is the argmax over classes.

H and W are fixed (`--size`, default 1024x512) unless `--dynamic` (only for networks
without adaptive pooling to grids: swiftnet_rn18_pyramid); either way they must be
multiples of the network's size divisor. The file carries the class names, palette,
mean/std and network facts as ONNX `metadata_props` (each value a JSON string).

The exporter is torch.onnx's `torch.export`-based one (it needs `onnxscript`): the
TorchScript-based one cannot write adaptive average pooling to grids that do not
divide the feature map, which SwiftNet's SPP and Fast-SCNN's pyramid pooling need.
It writes opset 18 or newer; opset 17 (TensorRT 8.5 and 8.6) is reached with ONNX's
version converter. Verification runs ONNX Runtime on synthetic scenes and compares its
labels with the PyTorch engine's and its logits with the PyTorch model's.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from swiftseg_ros import files
from swiftseg_ros.checkpoint import load_checkpoint, load_model
from swiftseg_ros.cli import (
    ArgumentParser,
    add_common_flags,
    check_count,
    parse_size_flag,
    write_json,
)
from swiftseg_ros.engine.config import parse_size
from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.files import check_output_file
from swiftseg_ros.nets.base import round_up_to_multiple
from swiftseg_ros.onnx_graph import (
    INPUT_NAME,
    NATIVE_OPSET,
    OUTPUT_NAME,
    ExportError,
    not_dynamic_message,
    opset_of,
    require_onnx,
    shape_of,
    trace_to_onnx,
)
from swiftseg_ros.paths import resolve_weights

DEFAULT_SIZE = (1024, 512)
# opset 17 is what TensorRT 8.5 and 8.6 read; below it the graph needs ops
# (ReduceMean with axes as an input, ...) that older opsets spell differently
MIN_OPSET = 17
# the newest opset torch's exporter writes (its ONNX_MAX_OPSET); above it onnxscript's
# converter fails with tracebacks of its own
MAX_OPSET = 23
MIN_LABEL_AGREEMENT = 0.999
# largest |onnx - torch| logit difference allowed, relative to the largest |logit|:
# fp32 graphs differ by kernel summation order only, fp16 weights by rounding
MAX_RELATIVE_LOGIT_DIFF = {"fp32": 1e-3, "fp16": 3e-2}
METADATA_FORMAT = "swiftseg-onnx"
METADATA_VERSION = 1


class ExportGraph(nn.Module):
    """What the ONNX file computes: the network, and optionally its input normalization.

    `uint8_input` takes (N, H, W, 3) RGB pixels and normalizes them in the graph;
    `half` runs the network in fp16 between fp32 (or uint8) inputs and fp32 logits.
    """

    def __init__(self, model: nn.Module, mean, std, *, uint8_input: bool, half: bool):
        super().__init__()
        self.model = model.half() if half else model
        self.uint8_input = uint8_input
        self.half = half
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        if self.uint8_input:
            x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std
        if self.half:
            x = x.half()
        return self.model(x).float()


@dataclass
class Verification:
    """How the ONNX Runtime results compare with PyTorch's, over synthetic frames."""

    frames: int
    sizes: list[list[int]]
    label_agreement_min: float
    label_agreement_mean: float
    logits_max_abs_diff: float
    logits_max_abs: float
    reference: str

    @property
    def logits_relative_diff(self) -> float:
        return self.logits_max_abs_diff / max(self.logits_max_abs, 1e-12)

    def summary(self) -> str:
        return (f"ONNX Runtime vs {self.reference}: labels equal on "
                f"{100 * self.label_agreement_min:.3f}% of pixels (worst of {self.frames} "
                f"synthetic frames, mean {100 * self.label_agreement_mean:.3f}%); logits "
                f"max abs diff {self.logits_max_abs_diff:.3g} (largest |logit| "
                f"{self.logits_max_abs:.3g})")


def load_inference_model(weights) -> tuple[nn.Module, dict]:
    """(eval model, meta) as deployed: built with the network's inference options (Fast-SCNN
    without its training-only auxiliary heads), like the engine builds it."""
    from swiftseg_ros.nets import NETWORKS

    _, meta, _ = load_checkpoint(weights)
    info = NETWORKS.get(meta["network"])
    return load_model(weights, **(info.inference_options if info else {}))


def onnx_metadata(meta: dict, model: nn.Module, *, size, dynamic: bool, uint8_input: bool,
                  half: bool, source: str) -> dict[str, str]:
    """The metadata_props written into the file: every value JSON-encoded."""
    width, height = size
    if uint8_input:
        layout = {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC",
                  "shape": [1, "height" if dynamic else height, "width" if dynamic else width, 3],
                  "channels": "RGB", "normalized": False}
    else:
        layout = {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW",
                  "shape": [1, 3, "height" if dynamic else height, "width" if dynamic else width],
                  "channels": "RGB", "normalized": True,
                  "normalization": "(pixel - mean) / std on 0-255 values"}
    values = {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "network": meta["network"],
        "num_classes": meta["num_classes"],
        "class_names": meta["class_names"],
        "palette": meta["palette"][:meta["num_classes"]],
        "mean": meta["mean"],
        "std": meta["std"],
        "size_divisor": int(model.size_divisor),
        "output_stride": int(model.output_stride),
        "input": layout,
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "layout": "NCHW",
                   "size": "input size", "labels": "argmax over channel axis 1"},
        "dynamic_size": dynamic,
        "export_size": [width, height],
        "weights_dtype": "float16" if half else "float32",
        "source_checkpoint": source,
        "provenance": meta.get("provenance", {}),
    }
    return {key: json.dumps(value) for key, value in values.items()}


def read_onnx_metadata(path) -> dict:
    """The metadata_props of an exported file, JSON-decoded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in model.metadata_props}


def export_onnx(weights, onnx_path, *, size=DEFAULT_SIZE, dynamic: bool = False,
                opset: int = NATIVE_OPSET, fp16: bool = False, include_preprocess: bool = False,
                verify: bool = True, frames: int = 3, seed: int = 0) -> dict:
    """Write the checkpoint's network to an ONNX file; return what was written (and checked).

    Raises ConfigError for arguments that cannot work, ExportError when the exporter
    fails or the verification finds the file disagreeing with PyTorch.
    """
    onnx = require_onnx()
    if verify:
        _require_onnxruntime()
    weights = resolve_weights(weights)
    width, height = parse_size(size, "size") if isinstance(size, str) else size
    if opset < MIN_OPSET:
        raise ConfigError(f"opset {opset}: the exporter writes opset {NATIVE_OPSET} or newer "
                          f"and can convert down to {MIN_OPSET} (TensorRT 8.5 and 8.6); "
                          f"lower opsets are not supported")
    if opset > MAX_OPSET:
        raise ConfigError(f"opset {opset}: the exporter writes opsets {MIN_OPSET} to "
                          f"{MAX_OPSET}; use --opset {NATIVE_OPSET} (the default)")
    model, meta = load_inference_model(weights)
    divisor = int(model.size_divisor)
    if height % divisor or width % divisor:
        raise ConfigError(
            f"size {width}x{height}: {meta['network']} needs width and height that are "
            f"multiples of {divisor}, e.g. {round_up_to_multiple(width, divisor)}x"
            f"{round_up_to_multiple(height, divisor)}")
    graph = ExportGraph(model, meta["mean"], meta["std"], uint8_input=include_preprocess,
                        half=fp16).eval()
    example = (torch.zeros(1, height, width, 3, dtype=torch.uint8) if include_preprocess
               else torch.zeros(1, 3, height, width))
    if dynamic:
        grids = adaptive_pooling_grids(graph, example)
        if grids:
            raise ExportError(not_dynamic_message(
                meta["network"], f"it pools to grids of {', '.join(f'{h}x{w}' for h, w in grids)} "
                f"cells at {width}x{height}"))
    proto = trace_to_onnx(graph, example, meta["network"], dynamic=dynamic, divisor=divisor,
                           spatial_axes=(1, 2) if include_preprocess else (2, 3),
                           opset=max(opset, NATIVE_OPSET))
    if opset < NATIVE_OPSET:
        proto = _convert_opset(proto, opset)
    if opset_of(proto) != opset:
        raise ExportError(f"opset {opset}: the exporter wrote opset {opset_of(proto)}; "
                          f"use --opset {NATIVE_OPSET}")
    proto.producer_name = "swiftseg_ros"
    proto.doc_string = (f"{meta['network']} semantic segmentation, {meta['num_classes']} "
                        f"classes; see metadata_props")
    del proto.metadata_props[:]
    for key, value in onnx_metadata(meta, model, size=(width, height), dynamic=dynamic,
                                    uint8_input=include_preprocess, half=fp16,
                                    source=str(weights)).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx_path = Path(onnx_path)
    data = proto.SerializeToString()
    info = {
        "onnx": str(onnx_path),
        "weights": str(weights),
        "network": meta["network"],
        "opset": opset_of(proto),
        "input": {"name": INPUT_NAME, "dtype": "uint8" if include_preprocess else "float32",
                  "shape": shape_of(proto.graph.input[0])},
        "output": {"name": OUTPUT_NAME, "shape": shape_of(proto.graph.output[0])},
        "fp16": fp16,
        "dynamic": dynamic,
        "bytes": len(data),
    }
    if verify:  # before the file is written: a graph that disagrees leaves no file
        sizes = [(width, height)]
        if dynamic:
            sizes.append((width + divisor, height + divisor))
        check = verify_onnx(data, weights, sizes=sizes, frames=frames, seed=seed)
        info["verification"] = {**asdict(check), "summary": check.summary()}
        require_agreement(check, onnx_path, fp16=fp16)
    files.write_bytes(onnx_path, data)
    return info


def require_agreement(check: Verification, onnx_path, *, fp16: bool) -> None:
    """Raise ExportError unless the verification meets the bar (labels >= 99.9% equal, logits
    within the precision's tolerance)."""
    tolerance = MAX_RELATIVE_LOGIT_DIFF["fp16" if fp16 else "fp32"]
    if check.label_agreement_min >= MIN_LABEL_AGREEMENT and \
            check.logits_relative_diff <= tolerance:
        return
    hint = (" fp16 rounding flips the labels of pixels where classes are nearly tied; "
            "export fp32 (and let TensorRT choose fp16 kernels with trtexec --fp16)." if fp16
            else "")
    raise ExportError(
        f"{onnx_path} does not reproduce PyTorch: {check.summary()}; required: labels equal "
        f"on >= {100 * MIN_LABEL_AGREEMENT:.1f}% of pixels and max abs logit diff <= "
        f"{tolerance:g} x largest |logit|.{hint} The file was kept for inspection")


def adaptive_pooling_grids(module: nn.Module, example: torch.Tensor) -> list[tuple[int, int]]:
    """Output grids of the adaptive average poolings one forward pass runs, except 1x1.

    A 1x1 grid is a global mean, exported as such at any size; any other grid is
    exported by torch.onnx as index arithmetic fixed to the traced input size.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    pooling = (torch.ops.aten._adaptive_avg_pool2d, torch.ops.aten.adaptive_avg_pool2d)
    grids: list[tuple[int, int]] = []

    class RecordPooling(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in pooling and tuple(out.shape[-2:]) != (1, 1):
                grids.append(tuple(out.shape[-2:]))
            return out

    with torch.no_grad(), RecordPooling():
        module(example)
    return grids


def verify_onnx(onnx_path, weights, *, sizes=(DEFAULT_SIZE,), frames: int = 3,
                seed: int = 0) -> Verification:
    """Run the ONNX file (a path, or the serialized model as bytes) with ONNX Runtime (CPU)
    on synthetic scenes and compare with PyTorch.

    Labels are compared with those of the PyTorch engine (`SegmentationEngine`, fp32 on
    the CPU, bilinear logits upsampling: the node's own path), logits with the eager
    model's on the same normalized input.
    """
    from swiftseg_ros.engine import EngineConfig, SegmentationEngine
    from swiftseg_ros.synthetic.frames import generate_frame

    ort = _require_onnxruntime()
    weights = resolve_weights(weights)
    model, meta = load_inference_model(weights)
    session = ort.InferenceSession(onnx_path if isinstance(onnx_path, bytes)
                                   else str(onnx_path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    uint8_input = feed.type == "tensor(uint8)"
    mean = np.asarray(meta["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(meta["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    agreements, max_diff, max_abs = [], 0.0, 0.0
    for width, height in sizes:
        engine = SegmentationEngine(EngineConfig(
            weights=str(weights), device="cpu", precision="fp32", inference_size=(width, height),
            outputs=("label",), upsample="logits", output_size="input", cuda_graphs=False,
            warmup_iters=1))
        try:
            for index in range(frames):
                frame = generate_frame(seed, index, width, height)[0]
                normalized = (frame.transpose(2, 0, 1)[None].astype(np.float32) - mean) / std
                onnx_logits = session.run(
                    None, {feed.name: frame[None] if uint8_input else normalized})[0]
                with torch.no_grad():
                    torch_logits = model(torch.from_numpy(normalized)).numpy()
                max_diff = max(max_diff, float(np.abs(onnx_logits - torch_logits).max()))
                max_abs = max(max_abs, float(np.abs(torch_logits).max()))
                engine_labels = engine.infer(frame, "rgb8").label
                onnx_labels = onnx_logits[0].argmax(0)
                agreements.append(float((onnx_labels == engine_labels).mean()))
        finally:
            engine.release()
    return Verification(frames=len(agreements), sizes=[list(s) for s in sizes],
                        label_agreement_min=min(agreements),
                        label_agreement_mean=float(np.mean(agreements)),
                        logits_max_abs_diff=max_diff, logits_max_abs=max_abs,
                        reference="PyTorch engine (labels) and model (logits), fp32 CPU")


def _convert_opset(proto, opset: int):
    """Down-convert with ONNX's version converter, dropping attributes that the target
    opset does not know where they hold the default (the converter leaves e.g.
    ReduceMean's `noop_with_empty_axes=0` behind when it turns axes into an attribute)."""
    from onnx import defs, helper, version_converter

    converted = version_converter.convert_version(proto, opset)
    if opset_of(converted) != opset:
        raise ExportError(f"opset {opset}: ONNX's version converter could not convert the "
                          f"graph from opset {NATIVE_OPSET}; use --opset {NATIVE_OPSET}")
    for node in converted.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        target = defs.get_schema(node.op_type, opset, node.domain)
        source = defs.get_schema(node.op_type, NATIVE_OPSET, node.domain)
        for attribute in list(node.attribute):
            if attribute.name in target.attributes:
                continue
            default = source.attributes.get(attribute.name)
            value = helper.get_attribute_value(attribute)
            if default is None or not default.default_value.name \
                    or helper.get_attribute_value(default.default_value) != value:
                raise ExportError(
                    f"opset {opset}: {node.op_type} uses {attribute.name}={value!r}, which "
                    f"opset {opset} cannot express; use --opset {NATIVE_OPSET}")
            node.attribute.remove(attribute)
    return converted


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            "verifying the ONNX file needs the optional package onnxruntime; install it "
            "with `pip install onnxruntime`, or skip the check with --no-verify") from exc
    return onnxruntime


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-export",
        description="Export a checkpoint to ONNX (for ONNX Runtime, TensorRT's trtexec on "
                    "Jetson, ...) and check the file against PyTorch with ONNX Runtime.")
    add_common_flags(parser, network=False, device=False, precision=False)
    parser.add_argument("--onnx", required=True, metavar="FILE", help="ONNX file to write")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --onnx file")
    parser.add_argument("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}",
                        metavar="WxH", help="input width x height, multiples of the network's "
                        "size divisor (default %(default)s); with --dynamic the size traced "
                        "and checked first")
    parser.add_argument("--dynamic", action="store_true",
                        help="variable input height and width (only networks without "
                             "adaptive pooling: swiftnet_rn18_pyramid)")
    parser.add_argument("--opset", type=int, default=NATIVE_OPSET,
                        help=f"ONNX opset (default %(default)s; {MIN_OPSET} for TensorRT 8.5 "
                             f"and 8.6)")
    parser.add_argument("--fp16", action="store_true",
                        help="store weights and compute in fp16, inputs and logits stay fp32 "
                             "(for TensorRT prefer an fp32 file and trtexec --fp16)")
    parser.add_argument("--include-preprocess", action="store_true",
                        help="take uint8 (1, H, W, 3) RGB pixels and normalize in the graph, "
                             "instead of normalized float32 (1, 3, H, W)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="check the file with ONNX Runtime against PyTorch (default on)")
    parser.add_argument("--frames", type=int, default=3,
                        help="synthetic frames per size for the check (default %(default)s)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.weights:
        raise CheckpointError("--weights: give the checkpoint (.pt) to export")
    check_count(args.frames, "--frames", 1, 1000)
    size = parse_size_flag(args.size, "--size")
    check_output_file(args.onnx, "--onnx", force=args.force, suffixes=(".onnx",))
    if args.json:
        check_output_file(args.json, "--json")
    info = export_onnx(args.weights, args.onnx, size=size,
                       dynamic=args.dynamic, opset=args.opset, fp16=args.fp16,
                       include_preprocess=args.include_preprocess, verify=args.verify,
                       frames=args.frames)
    print(f"wrote {info['onnx']} ({info['bytes'] / 2**20:.1f} MiB, opset {info['opset']}): "
          f"{info['network']}, input {info['input']['name']} {info['input']['dtype']} "
          f"{info['input']['shape']}, output {info['output']['name']} {info['output']['shape']}")
    if "verification" in info:
        print(info["verification"]["summary"])
    write_json(args.json, info)
    return 0
