"""Parameter and multiply-add counts of the networks.

Multiply-adds are counted with `torch.utils.flop_counter.FlopCounterMode` (which counts
convolutions and matrix products, 2 FLOPs per multiply-add) on a copy of the model
on the meta device: only shapes are propagated, so a count at 2048x1024 takes well
under a second and allocates nothing. Batch norm, activations, pooling and bilinear
resizing are not counted, as in the papers' figures ("GFLOPs" there are multiply-adds).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-adds of one eval-mode forward pass of a (1, 3, height, width) input."""
    meta_model = copy.deepcopy(model).to("meta").eval()
    image = torch.empty(1, 3, height, width, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta_model(image)
    return counter.get_total_flops() // 2
