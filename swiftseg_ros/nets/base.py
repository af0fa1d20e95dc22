"""The interface every segmentation network here implements (DESIGN.md, network contract).

`model(x)` returns logits at the input size, `model.forward_logits(x)` at the network's
output stride; `size_divisor` is what the input height and width must be multiples
of. Subclasses set `network_name`, `size_divisor`, `output_stride` and implement
`forward_logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationNetwork(nn.Module):
    """Base of the four networks: input size check, upsampling of logits, weight init."""

    network_name: str
    size_divisor: int
    output_stride: int
    # how the logits are upsampled to the input size (the engine does the same)
    align_corners: bool = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_to(self.forward_logits(x), x, self.align_corners)

    def check_input_size(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is (N, 3, H, W) with H and W multiples of size_divisor.

        Only shapes are inspected (no tensor values), so this stays traceable and does
        not break CUDA graph capture or ONNX export.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.network_name} expects a (batch, 3, height, width) image "
                             f"tensor, got shape {tuple(x.shape)}")
        height, width = x.shape[-2], x.shape[-1]
        d = self.size_divisor
        if height % d or width % d:
            raise ValueError(
                f"{self.network_name} needs input height and width that are multiples of "
                f"{d}, got {height}x{width} (HxW); resize or pad to e.g. "
                f"{round_up_to_multiple(height, d)}x{round_up_to_multiple(width, d)}")

    def initialize_weights(self) -> None:
        """Kaiming normal (fan_out) convs with zero bias, BatchNorm weight 1 and bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def round_up_to_multiple(value: int, divisor: int) -> int:
    """The smallest multiple of `divisor` that is at least `value`: a size a network takes."""
    return -(-value // divisor) * divisor


def upsample_to(logits: torch.Tensor, reference: torch.Tensor,
                align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of `logits` to the spatial size of `reference`."""
    return F.interpolate(logits, size=reference.shape[-2:], mode="bilinear",
                         align_corners=align_corners)
