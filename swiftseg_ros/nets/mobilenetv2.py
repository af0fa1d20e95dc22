"""MobileNetV2 encoder for SwiftNet with torchvision's key names (`features.N...`).

Built as torchvision's `mobilenet_v2` (width 1.0) up to `features.17`; the last 1x1
conv to 1280 channels (`features.18`) and the classifier are not built, as in SwiftNet.
Laterals are taken where the resolution drops next: after features.3 (24 channels,
stride 4), features.6 (32, stride 8), features.13 (96, stride 16) and features.17
(320, stride 32). Inverted residual blocks end without a non-linearity, so their
outputs already are the "pre-activation" features SwiftNet routes to the decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from swiftseg_ros.nets.blocks import ConvBNAct

TORCHVISION_NAME = "mobilenet_v2"
# expansion t, output channels c, repeats n, first stride s (MobileNetV2 paper, Table 2)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# index of the last `features` module of each stage, and the stage outputs
LATERAL_INDICES = (3, 6, 13, 17)
STAGE_CHANNELS = (24, 32, 96, 320)
STAGE_STRIDES = (4, 8, 16, 32)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, linear 1x1 project; residual if shapes match.

    Children follow torchvision (`conv.0` expand ConvBNAct when t > 1, then the depthwise
    ConvBNAct, then the projection conv and its BN as plain modules). Fast-SCNN reuses
    the block with ReLU instead of ReLU6.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 activation: type[nn.Module] = nn.ReLU6):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=activation))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=activation),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self._projection = (f"conv.{len(layers) - 2}", f"conv.{len(layers) - 1}")

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [self._projection]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 `features.0` to `features.17`; `forward` returns the four laterals."""

    torchvision_name = TORCHVISION_NAME
    channels = STAGE_CHANNELS
    strides = STAGE_STRIDES

    def __init__(self):
        super().__init__()
        features: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, activation=nn.ReLU6)]
        in_channels = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        self.features = nn.Sequential(*features)
        bounds = (0, *(i + 1 for i in LATERAL_INDICES))
        self._stage_ranges = tuple(zip(bounds[:-1], bounds[1:], strict=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        laterals = []
        for start, stop in self._stage_ranges:
            for index in range(start, stop):
                x = self.features[index](x)
            laterals.append(x)
        return laterals
