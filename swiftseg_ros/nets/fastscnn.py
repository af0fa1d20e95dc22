"""Fast-SCNN (Poudel et al., BMVC 2019) per the paper's Tables 1-3, with two auxiliary heads.

Learning to downsample: conv 3x3/2 to 32, DSConv to 48 /2, DSConv to 64 /2 (stride 8).
Global feature extractor: MobileNetV2 bottlenecks (t=6, ReLU) 64 x3 /2, 96 x3 /2,
128 x3 /1 (stride 32), then pyramid pooling (bins 1, 2, 3, 6).
Feature fusion: the stride-8 features through a 1x1 conv; the stride-32 features
upsampled x4, a 3x3 depthwise conv dilated by 4 (the upsampling factor, as Table 3
says), and a 1x1 conv; sum, ReLU. Classifier: two DSConvs, dropout, 1x1 conv: logits
at stride 8.

DSConv is a 3x3 depthwise conv + BN without a non-linearity (section 3.2.1, "we omit
the nonlinearity between depthwise and pointwise convolutions"), then a 1x1 conv +
BN + ReLU. The pyramid pooling concatenates its input with four 32-channel levels
(256 channels) and fuses them back to 128 with a 1x1 conv, as PSPNet does.

Auxiliary heads (training only, as in the paper's section 4.1 and mmsegmentation): a
3x3 conv-BN-ReLU to 32 channels, dropout and a 1x1 conv on the 64-channel stride-8
features and on the 128-channel stride-32 global features. With `aux_heads=False`
they are not built (inference, export); their state_dict keys start with `aux_heads.`.

Four options make the network compute what the popular PyTorch port
(github.com/Tramac/Fast-SCNN-pytorch, `models/fast_scnn.py`) computes, so its released
Cityscapes weights run here exactly (`swiftseg-import --from fastscnn-tramac` stores
them in the checkpoint's `network_options`); the defaults are the paper's design:
- `align_corners` (False; the port: True): bilinear upsampling in the pyramid pooling,
  the feature fusion and of the logits to the input size (the engine follows
  `model.align_corners` when it upsamples the logits itself);
- `depthwise_relu` (False; the port: True): a ReLU between the depthwise and the
  pointwise conv of every DSConv (learning to downsample and classifier);
- `fusion_dilation` (4; the port: 1): dilation of the fusion's depthwise conv;
- `first_conv_padding` (1; the port: 0): padding of the first 3x3/2 conv. Unpadded, it
  gives H/2 - 1 rows at stride 2, and the next stride-2 conv brings that back to H/4 for
  sides that are multiples of 32, so the output stride stays 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.nets.base import SegmentationNetwork, upsample_to
from swiftseg_ros.nets.blocks import ConvBNAct
from swiftseg_ros.nets.mobilenetv2 import InvertedResidual

PYRAMID_BINS = (1, 2, 3, 6)
# expansion t, output channels c, repeats n, first stride s (paper Table 1)
BOTTLENECK_SETTING = ((6, 64, 3, 2), (6, 96, 3, 2), (6, 128, 3, 1))
AUX_FEATURES = 32


class DepthwiseSeparableConv(nn.Sequential):
    """3x3 depthwise conv + BN (linear, or + ReLU with `depthwise_relu`), then 1x1 conv +
    BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 depthwise_relu: bool = False):
        super().__init__(
            ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels,
                      activation=nn.ReLU if depthwise_relu else None),
            ConvBNAct(in_channels, out_channels, 1),
        )


class LearningToDownsample(nn.Sequential):
    """Conv 3x3/2 to 32, DSConv /2 to 48, DSConv /2 to 64: shared low-level features at 1/8."""

    def __init__(self, first_conv_padding: int = 1, depthwise_relu: bool = False):
        super().__init__(
            ConvBNAct(3, 32, 3, 2, padding=first_conv_padding),
            DepthwiseSeparableConv(32, 48, 2, depthwise_relu),
            DepthwiseSeparableConv(48, 64, 2, depthwise_relu),
        )


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling: per bin, pool, 1x1 conv to in/4 channels, upsample; concat; fuse."""

    def __init__(self, channels: int = 128, bins: tuple[int, ...] = PYRAMID_BINS,
                 align_corners: bool = False):
        super().__init__()
        self.bins = bins
        self.align_corners = align_corners
        level_channels = channels // len(bins)
        self.levels = nn.ModuleList([ConvBNAct(channels, level_channels, 1) for _ in bins])
        self.fuse = ConvBNAct(channels + level_channels * len(bins), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pyramid = [x]
        for bin_size, level in zip(self.bins, self.levels, strict=True):
            pooled = level(F.adaptive_avg_pool2d(x, bin_size))
            pyramid.append(F.interpolate(pooled, size=size, mode="bilinear",
                                         align_corners=self.align_corners))
        return self.fuse(torch.cat(pyramid, dim=1))


class GlobalFeatureExtractor(nn.Module):
    """Inverted residual bottlenecks (stride 8 -> 32) followed by pyramid pooling."""

    def __init__(self, in_channels: int = 64, align_corners: bool = False):
        super().__init__()
        blocks = []
        for t, c, n, s in BOTTLENECK_SETTING:
            for i in range(n):
                blocks.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t,
                                               activation=nn.ReLU))
                in_channels = c
        self.bottlenecks = nn.Sequential(*blocks)
        self.ppm = PyramidPooling(in_channels, align_corners=align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ppm(self.bottlenecks(x))


class FeatureFusion(nn.Module):
    """Table 3: higher resolution 1x1 conv; lower resolution upsample x4, depthwise 3x3 with
    dilation 4 (the upsampling factor) + ReLU, 1x1 conv; add; ReLU."""

    def __init__(self, higher_channels: int = 64, lower_channels: int = 128,
                 out_channels: int = 128, dilation: int = 4, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.higher = ConvBNAct(higher_channels, out_channels, 1, activation=None)
        self.lower = nn.Sequential(
            ConvBNAct(lower_channels, lower_channels, 3, groups=lower_channels,
                      dilation=dilation),
            ConvBNAct(lower_channels, out_channels, 1, activation=None),
        )

    def forward(self, higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        lower = upsample_to(lower, higher, self.align_corners)
        return F.relu(self.higher(higher) + self.lower(lower), inplace=True)


class Classifier(nn.Sequential):
    """Two DSConvs, dropout (training only) and the 1x1 conv to class logits."""

    def __init__(self, channels: int, num_classes: int, dropout: float,
                 depthwise_relu: bool = False):
        super().__init__(
            DepthwiseSeparableConv(channels, channels, depthwise_relu=depthwise_relu),
            DepthwiseSeparableConv(channels, channels, depthwise_relu=depthwise_relu),
            nn.Dropout(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )


class AuxiliaryHead(nn.Sequential):
    """Training-time head as in mmsegmentation's FCNHead: 3x3 conv-BN-ReLU, dropout, 1x1 conv."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float):
        super().__init__(
            ConvBNAct(in_channels, AUX_FEATURES, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(AUX_FEATURES, num_classes, 1),
        )


class FastSCNN(SegmentationNetwork):
    """Fast-SCNN; logits at stride 8.

    In training mode with auxiliary heads, `model(x)` returns
    `(logits, [aux_stride8, aux_stride32])`, all at the input size; otherwise logits only.
    """

    network_name = "fastscnn"
    size_divisor = 32
    output_stride = 8

    def __init__(self, num_classes: int, aux_heads: bool = True, dropout: float = 0.1,
                 align_corners: bool = False, depthwise_relu: bool = False,
                 fusion_dilation: int = 4, first_conv_padding: int = 1):
        super().__init__(num_classes)
        if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ConfigError(f"fastscnn dropout must be a number in [0, 1), got {dropout!r}")
        for name, value in (("aux_heads", aux_heads), ("align_corners", align_corners),
                            ("depthwise_relu", depthwise_relu)):
            if not isinstance(value, bool):
                raise ConfigError(f"fastscnn {name} must be true or false, got {value!r}")
        if fusion_dilation not in (1, 4) or isinstance(fusion_dilation, bool):
            raise ConfigError(f"fastscnn fusion_dilation must be 4 (the paper) or 1 (the "
                              f"Tramac port), got {fusion_dilation!r}")
        if first_conv_padding not in (0, 1) or isinstance(first_conv_padding, bool):
            raise ConfigError(f"fastscnn first_conv_padding must be 1 (the paper) or 0 (the "
                              f"Tramac port), got {first_conv_padding!r}")
        self.align_corners = align_corners
        self.downsample = LearningToDownsample(first_conv_padding, depthwise_relu)
        self.global_features = GlobalFeatureExtractor(64, align_corners)
        self.fusion = FeatureFusion(64, 128, 128, fusion_dilation, align_corners)
        self.classifier = Classifier(128, num_classes, dropout, depthwise_relu)
        self.aux_heads = (nn.ModuleList([AuxiliaryHead(64, num_classes, dropout),
                                         AuxiliaryHead(128, num_classes, dropout)])
                          if aux_heads else None)
        self.initialize_weights()

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.check_input_size(x)
        higher = self.downsample(x)
        lower = self.global_features(higher)
        return self.classifier(self.fusion(higher, lower)), higher, lower

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)[0]

    def forward(self, x: torch.Tensor):
        logits, higher, lower = self._features(x)
        logits = upsample_to(logits, x, self.align_corners)
        if not self.training or self.aux_heads is None:
            return logits
        aux = [upsample_to(head(features), x, self.align_corners)
               for head, features in zip(self.aux_heads, (higher, lower), strict=True)]
        return logits, aux
