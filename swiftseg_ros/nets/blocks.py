"""Conv -> BN (-> activation) building block shared by the MobileNetV2 encoder and Fast-SCNN.

The block is an `nn.Sequential` whose children are named "0" (conv), "1" (BN) and "2"
(activation, when there is one): torchvision's `Conv2dNormActivation` uses the same
names, so MobileNetV2 weights load under their own keys (`features.0.0.weight`, ...).
Modules that own conv/BN pairs declare them in `conv_bn_pairs()` (paths relative to
the module) so that `fuse_conv_bn` can fold them by structure.
"""

from __future__ import annotations

from torch import nn


class ConvBNAct(nn.Sequential):
    """k x k conv without bias, BatchNorm, then `activation` (a module class) or none.

    `padding` defaults to "same" for odd kernels at stride 1: (k - 1) / 2 * dilation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1, dilation: int = 1,
                 activation: type[nn.Module] | None = nn.ReLU, padding: int | None = None):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("0", "1")]
