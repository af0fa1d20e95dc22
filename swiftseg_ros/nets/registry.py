"""The networks by name: `build_model(name, num_classes, **options)` and their paper figures."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.nets.base import SegmentationNetwork
from swiftseg_ros.nets.fastscnn import FastSCNN
from swiftseg_ros.nets.swiftnet import swiftnet_mnv2, swiftnet_rn18, swiftnet_rn18_pyramid

# class ids travel in mono8 label images, and 255 is the ignore label
MAX_CLASSES = 255


@dataclass(frozen=True)
class NetworkInfo:
    """A network's builder and what its paper reports (19 classes, 2048x1024 input)."""

    name: str
    description: str
    builder: Callable[..., SegmentationNetwork]
    size_divisor: int  # input sides must be multiples of this (as the model's attribute)
    output_stride: int  # forward_logits resolution relative to the input
    paper: str
    paper_params_m: float
    paper_gmacs: float | None  # multiply-adds at 2048x1024; None where the paper gives none
    imagenet_encoder: str | None  # torchvision model whose ImageNet weights fit the encoder
    options: dict = field(default_factory=dict)  # option name -> default
    inference_options: dict = field(default_factory=dict)  # what a deployed model is built with


NETWORKS: dict[str, NetworkInfo] = {info.name: info for info in (
    NetworkInfo(
        name="swiftnet_rn18",
        description="SwiftNet single scale, ResNet-18 encoder, SPP, ladder decoder (stride 4)",
        builder=swiftnet_rn18, size_divisor=32, output_stride=4,
        paper="SwiftNet, CVPR 2019, Table 1",
        paper_params_m=11.8, paper_gmacs=104.0, imagenet_encoder="resnet18",
        # True for the authors' released weights (swiftseg-import --from swiftnet-official)
        options={"lateral_after_relu": False}),
    NetworkInfo(
        name="swiftnet_mnv2",
        description="SwiftNet single scale, MobileNetV2 encoder, SPP, ladder decoder (stride 4)",
        builder=swiftnet_mnv2, size_divisor=32, output_stride=4,
        paper="SwiftNet, CVPR 2019, Table 1",
        paper_params_m=2.4, paper_gmacs=41.0, imagenet_encoder="mobilenet_v2"),
    NetworkInfo(
        name="swiftnet_rn18_pyramid",
        description="SwiftNet interleaved pyramid fusion, shared ResNet-18 on 2 levels (stride 4)",
        builder=swiftnet_rn18_pyramid, size_divisor=64, output_stride=4,
        paper="SwiftNet, CVPR 2019, Table 1",
        paper_params_m=12.9, paper_gmacs=114.0, imagenet_encoder="resnet18"),
    NetworkInfo(
        name="fastscnn",
        description="Fast-SCNN, learning to downsample + global features + fusion (stride 8)",
        builder=FastSCNN, size_divisor=32, output_stride=8,
        paper="Fast-SCNN, BMVC 2019, Table 4",
        paper_params_m=1.11, paper_gmacs=None, imagenet_encoder=None,
        # the last four as the Tramac port computes them for its released weights
        # (swiftseg-import --from fastscnn-tramac): True, True, 1, 0
        options={"aux_heads": True, "dropout": 0.1, "align_corners": False,
                 "depthwise_relu": False, "fusion_dilation": 4, "first_conv_padding": 1},
        inference_options={"aux_heads": False}),
)}


def build_model(name: str, num_classes: int, **options) -> SegmentationNetwork:
    """A freshly initialized network (training mode) by registry name.

    Raises ConfigError for an unknown name, a class count outside 2..255 or an option
    the network does not have.
    """
    info = NETWORKS.get(name) if isinstance(name, str) else None
    if info is None:
        raise ConfigError(f"unknown network {name!r}; available: {', '.join(NETWORKS)}")
    num_classes = check_num_classes(num_classes)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        allowed = ", ".join(f"{k} (default {v!r})" for k, v in info.options.items()) or "none"
        raise ConfigError(f"{name} has no option {', '.join(unknown)}; its options: {allowed}")
    return info.builder(num_classes, **options)


def check_num_classes(num_classes) -> int:
    """`num_classes` as an int, or a ConfigError saying what is allowed (2..255)."""
    try:
        if isinstance(num_classes, bool):
            raise TypeError
        count = operator.index(num_classes)
    except TypeError:
        raise ConfigError(f"num_classes must be an integer, got {num_classes!r}") from None
    if not 2 <= count <= MAX_CLASSES:
        raise ConfigError(f"num_classes must be between 2 and {MAX_CLASSES} (class ids are "
                          f"stored in 8-bit label images, 255 means ignore), got {count}")
    return count
