"""ResNet-18 encoder for SwiftNet: torchvision's key names, laterals from pre-ReLU sums.

The state_dict keys are torchvision's `resnet18` keys without `fc.*` (`conv1`, `bn1`,
`layerX.Y.conv1/bn1/conv2/bn2`, `layerX.0.downsample.0/1`), so ImageNet weights load
as they are. Following SwiftNet (CVPR 2019, Figure 2), every residual block returns
both its output after ReLU (fed to the next block) and the sum before that ReLU; the
lateral connection of a stage is the pre-ReLU sum of its last block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swiftseg_ros.nets.blocks import ConvBNAct

TORCHVISION_NAME = "resnet18"
STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (4, 8, 16, 32)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, returning (relu(sum), sum)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        # torchvision names the projection shortcut `downsample` with children 0 (conv) and 1 (BN)
        self.downsample = (ConvBNAct(in_channels, channels, 1, stride, activation=None)
                           if stride != 1 or in_channels != channels else None)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv1", "bn1"), ("conv2", "bn2")]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + identity
        # not in place: the pre-ReLU sum is the stage's lateral output
        return F.relu(out), out


class Stage(nn.ModuleList):
    """The blocks working at one resolution (torchvision's `layerX`); returns (relu, lateral)."""

    def __init__(self, in_channels: int, channels: int, blocks: int, stride: int):
        super().__init__([BasicBlock(in_channels if i == 0 else channels, channels,
                                     stride if i == 0 else 1) for i in range(blocks)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lateral = x
        for block in self:
            x, lateral = block(x)
        return x, lateral


class ResNet18Encoder(nn.Module):
    """ResNet-18 without its classifier; `forward` returns the four stage laterals.

    Laterals are at strides 4, 8, 16, 32 with 64, 128, 256, 512 channels.
    `lateral_after_relu=True` takes them after the blocks' final ReLU instead: the SwiftNet
    authors' code applies that ReLU in place to the sum it returns as the lateral, so
    their released weights were trained on post-ReLU laterals.
    """

    torchvision_name = TORCHVISION_NAME
    channels = STAGE_CHANNELS
    strides = STAGE_STRIDES

    def __init__(self, lateral_after_relu: bool = False):
        super().__init__()
        self.lateral_after_relu = lateral_after_relu
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = Stage(64, 64, 2, 1)
        self.layer2 = Stage(64, 128, 2, 2)
        self.layer3 = Stage(128, 256, 2, 2)
        self.layer4 = Stage(256, 512, 2, 2)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv1", "bn1")]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        relu4, lateral4 = self.layer1(x)
        relu8, lateral8 = self.layer2(relu4)
        relu16, lateral16 = self.layer3(relu8)
        relu32, lateral32 = self.layer4(relu16)
        if self.lateral_after_relu:
            return [relu4, relu8, relu16, relu32]
        return [lateral4, lateral8, lateral16, lateral32]
