"""SwiftNet (Orsic et al., CVPR 2019): single scale and interleaved pyramid fusion models.

Single scale (paper section 3.2, Figure 3): an ImageNet encoder (ResNet-18 or
MobileNetV2) gives laterals at strides 4, 8, 16 and 32; spatial pyramid pooling on
the stride-32 features; a ladder decoder of upsampling modules with 128 features
(1/32 -> 1/16 -> 1/8 -> 1/4); logits at stride 4, upsampled bilinearly to the input.

Interleaved pyramid fusion (section 3.3, Figure 4): one ResNet-18 with shared
parameters runs on the image and on its 2x downsampled copy; features of the two
levels that have the same resolution are concatenated, projected by 1x1 convs and
fed into a decoder with one more upsampling module (from 1/64), without SPP.

Decoder convs are pre-activation (BatchNorm -> ReLU -> conv), as in the authors'
code; these BatchNorms stay when the encoder's conv->BN pairs are fused.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from swiftseg_ros.nets.base import SegmentationNetwork
from swiftseg_ros.nets.mobilenetv2 import MobileNetV2Encoder
from swiftseg_ros.nets.resnet import ResNet18Encoder

DECODER_FEATURES = 128
SPP_GRIDS = (8, 4, 2)
SPP_LEVEL_FEATURES = 42
# the authors train the SPP's batch norms with a slow running-average momentum
SPP_BN_MOMENTUM = 0.005


class BNReLUConv(nn.Sequential):
    """Pre-activation unit: BatchNorm, ReLU, then a k x k conv (bias only where asked)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 bias: bool = False, bn_momentum: float = 0.1):
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels, momentum=bn_momentum),
            relu=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_channels, out_channels, kernel_size,
                           padding=kernel_size // 2, bias=bias),
        ))


class SpatialPyramidPooling(nn.Module):
    """SwiftNet's SPP: 1x1 bottleneck, three average-pooled levels, concatenation, 1x1 fuse.

    Level g pools to a grid of (g, round(g * W / H)) cells, following the feature map's
    aspect ratio (8x16, 4x8, 2x4 for a 2:1 image).
    """

    def __init__(self, in_channels: int, features: int = DECODER_FEATURES,
                 grids: tuple[int, ...] = SPP_GRIDS, level_features: int = SPP_LEVEL_FEATURES):
        super().__init__()
        self.grids = grids
        self.bottleneck = BNReLUConv(in_channels, features, 1, bn_momentum=SPP_BN_MOMENTUM)
        self.levels = nn.ModuleList([
            BNReLUConv(features, level_features, 1, bn_momentum=SPP_BN_MOMENTUM)
            for _ in grids])
        self.fuse = BNReLUConv(features + len(grids) * level_features, features, 1,
                               bn_momentum=SPP_BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # plain ints: the grid is fixed per input size (static under tracing and export)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        x = self.bottleneck(x)
        pyramid = [x]
        for grid, level in zip(self.grids, self.levels, strict=True):
            pooled = F.adaptive_avg_pool2d(x, (grid, max(1, round(grid * width / height))))
            pyramid.append(F.interpolate(level(pooled), size=(height, width), mode="bilinear",
                                         align_corners=False))
        return self.fuse(torch.cat(pyramid, dim=1))


class UpsampleBlock(nn.Module):
    """Ladder upsampling module: 1x1 bottleneck of the lateral, bilinear upsampling of the
    coarser features, sum, then a 3x3 blending conv (paper section 3.1)."""

    def __init__(self, lateral_channels: int, features: int = DECODER_FEATURES):
        super().__init__()
        self.bottleneck = BNReLUConv(lateral_channels, features, 1)
        self.blend = BNReLUConv(features, features, 3)

    def forward(self, coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        lateral = self.bottleneck(lateral)
        coarse = F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear",
                               align_corners=False)
        return self.blend(coarse + lateral)


class SwiftNet(SegmentationNetwork):
    """Single scale SwiftNet over a ResNet-18 or MobileNetV2 encoder; logits at stride 4."""

    size_divisor = 32
    output_stride = 4

    def __init__(self, network_name: str, encoder: ResNet18Encoder | MobileNetV2Encoder,
                 num_classes: int):
        super().__init__(num_classes)
        self.network_name = network_name
        self.encoder = encoder
        self.spp = SpatialPyramidPooling(encoder.channels[-1])
        # decoder order: 1/32 -> 1/16 -> 1/8 -> 1/4, laterals from the deep end first
        self.upsample = nn.ModuleList(
            [UpsampleBlock(channels) for channels in reversed(encoder.channels[:-1])])
        self.logits = BNReLUConv(DECODER_FEATURES, num_classes, 1, bias=True)
        self.initialize_weights()

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        laterals = self.encoder(x)
        y = self.spp(laterals[-1])
        for block, lateral in zip(self.upsample, laterals[-2::-1], strict=True):
            y = block(y, lateral)
        return self.logits(y)


class SwiftNetPyramid(SegmentationNetwork):
    """SwiftNet with interleaved pyramid fusion over two levels (image and its 2x downsample).

    Shared ResNet-18 laterals of level 0 (L0, strides 4..32) and level 1 (L1, strides
    8..64 of the image) are fused by resolution: 1/4 L0.layer1; 1/8 L0.layer2 + L1.layer1;
    1/16 L0.layer3 + L1.layer2; 1/32 L0.layer4 + L1.layer3 (concatenated); 1/64 L1.layer4.
    Each goes through a 1x1 BN-ReLU-conv projection to 128 channels (the upsampling
    modules' bottlenecks); the decoder starts at 1/64 with four upsampling modules.
    """

    network_name = "swiftnet_rn18_pyramid"
    size_divisor = 64
    output_stride = 4

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.encoder = ResNet18Encoder()
        c4, c8, c16, c32 = self.encoder.channels
        self.bottleneck = BNReLUConv(c32, DECODER_FEATURES, 1)
        self.upsample = nn.ModuleList([UpsampleBlock(channels) for channels in
                                       (c32 + c16, c16 + c8, c8 + c4, c4)])
        self.logits = BNReLUConv(DECODER_FEATURES, num_classes, 1, bias=True)
        self.initialize_weights()

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        level0 = self.encoder(x)
        # 2x2 average pooling equals bilinear 2x downsampling with align_corners=False
        # (each output samples the centre of a 2x2 block) and is cheaper
        level1 = self.encoder(F.avg_pool2d(x, 2))
        laterals = (
            torch.cat([level0[3], level1[2]], dim=1),
            torch.cat([level0[2], level1[1]], dim=1),
            torch.cat([level0[1], level1[0]], dim=1),
            level0[0],
        )
        y = self.bottleneck(level1[3])
        for block, lateral in zip(self.upsample, laterals, strict=True):
            y = block(y, lateral)
        return self.logits(y)


def swiftnet_rn18(num_classes: int, lateral_after_relu: bool = False) -> SwiftNet:
    """`lateral_after_relu=True` computes what the authors' code computes (their weights)."""
    return SwiftNet("swiftnet_rn18", ResNet18Encoder(lateral_after_relu), num_classes)


def swiftnet_mnv2(num_classes: int) -> SwiftNet:
    return SwiftNet("swiftnet_mnv2", MobileNetV2Encoder(), num_classes)


def swiftnet_rn18_pyramid(num_classes: int) -> SwiftNetPyramid:
    return SwiftNetPyramid(num_classes)
