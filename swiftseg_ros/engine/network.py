"""The network an engine runs, loaded once: from a checkpoint, an `.onnx` file written by
`swiftseg-export`, or built with random weights (benchmarks, tests).

A loaded torch network is conv-BN-fused, in eval mode, without gradients, in fp32 on the
CPU: the original every backend starts from (copied to its device and precision, or
traced to an ONNX graph).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from torch import nn

from swiftseg_ros.engine.config import DEFAULT_MEAN, DEFAULT_NUM_CLASSES, DEFAULT_STD, EngineConfig
from swiftseg_ros.engine.onnx_file import OnnxFile, is_onnx_file, read_onnx_file
from swiftseg_ros.errors import ConfigError

log = logging.getLogger("swiftseg_ros.engine")


@dataclass
class LoadedNetwork:
    """The network and what the engine needs to know of it."""

    model: nn.Module | None  # fused, eval, fp32 CPU; None for an .onnx file
    onnx_file: OnnxFile | None
    meta: dict  # network, num_classes, class_names, palette, mean, std
    size_divisor: int
    output_stride: int
    # how the network upsamples its logits (the Fast-SCNN port's weights: corners
    # aligned); an exported file's logits are upsampled in its graph already
    align_corners: bool
    # the network's options that shape its graph (not its weights): part of the key
    # under which measured choices are cached
    options: dict


def load_network(config: EngineConfig) -> LoadedNetwork:
    """The network for this config, checked against its inference size's needs."""
    file = _onnx_file_of(config)
    if file is not None:
        stat = file.path.stat()
        return LoadedNetwork(None, file, file.meta, int(file.size_divisor),
                             int(file.output_stride), False,
                             {"onnx_file": str(file.path.resolve()), "bytes": stat.st_size,
                              "modified": stat.st_mtime, "export_size": file.export_size})
    from swiftseg_ros.nets import fuse_conv_bn

    model, meta, options = _load_model(config)
    model = fuse_conv_bn(model.eval())
    model.requires_grad_(False)
    return LoadedNetwork(model, None, meta, int(model.size_divisor), int(model.output_stride),
                         bool(getattr(model, "align_corners", False)), options)


def round_to_multiple(value: int, divisor: int) -> int:
    """The nearest multiple of divisor (halves up), at least divisor."""
    return max(divisor, (value + divisor // 2) // divisor * divisor)


def check_inference_size(size, network: str, divisor: int) -> None:
    """ConfigError unless the (width, height) asked for (or None) suits the network."""
    if size is None:
        return
    width, height = size
    if width % divisor or height % divisor:
        raise ConfigError(
            f"inference_size: {width}x{height} is not a multiple of {divisor} as {network} "
            f"needs; use e.g. {round_to_multiple(width, divisor)}x"
            f"{round_to_multiple(height, divisor)}")


def _onnx_file_of(config: EngineConfig):
    """The checked `.onnx` weights file, or None for a checkpoint or a random build."""
    if not is_onnx_file(config.weights):
        return None
    from swiftseg_ros.paths import resolve_weights

    if config.backend == "torch":
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


def _load_model(config: EngineConfig):
    """(eval model on the CPU, meta, build options) from the checkpoint, or a random build."""
    from swiftseg_ros.nets import build_model

    if config.weights is not None:
        from swiftseg_ros.checkpoint import check_compatible, load_checkpoint, load_state_strict
        from swiftseg_ros.paths import resolve_weights

        path = resolve_weights(config.weights)
        state, meta, _ = load_checkpoint(path)
        check_compatible(meta, config.network, config.num_classes, where=str(path))
        options = _inference_options(meta["network"], meta.get("network_options"))
        model = build_model(meta["network"], meta["num_classes"], **options)
        load_state_strict(model, state, str(path))
        for name in ("mean", "std"):
            asked = getattr(config, name)
            if asked is not None and not np.allclose(asked, meta[name]):
                log.warning("engine: %s %s ignored: the checkpoint %s has %s %s", name,
                            list(asked), path, name, meta[name])
        return model.eval(), meta, options

    from swiftseg_ros.classes import default_palette

    num_classes = config.num_classes or DEFAULT_NUM_CLASSES
    options = _inference_options(config.network)
    model = build_model(config.network, num_classes, **options).eval()
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
    return model, meta, options


def _inference_options(network: str, saved_options: dict | None = None) -> dict:
    """Build options of a deployed network: the checkpoint's, minus training-only parts."""
    from swiftseg_ros.nets import NETWORKS

    info = NETWORKS.get(network)
    extra = info.inference_options if info is not None else {}
    return {**(saved_options or {}), **extra}
