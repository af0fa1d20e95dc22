"""CPU kernel routes: every convolution through oneDNN, or PyTorch's own per-call choice.

For batch 1, PyTorch's CPU dispatcher sends 1x1 convs (single-threaded) and small
dense convs (under 20480 input values) to its generic `_slow_conv2d` kernel, which on
a channels_last tensor also copies its input to NCHW and back. Fast-SCNN and the
MobileNetV2 encoder are mostly such convs (REFERENCE_NOTES: Fast-SCNN has 15x fewer
multiply-adds than SwiftNet RN-18 but runs only ~4x faster). Calling oneDNN's
convolution directly keeps channels_last end to end; measured per layer at 1024x512
on one thread it halves Fast-SCNN's conv time and cuts MobileNetV2's by a quarter,
with outputs equal to float rounding. That was on one CPU (Zen 4): which route, and
which memory format, is faster depends on the CPU, the network and the input size, and
oneDNN refuses bf16 on CPUs without the instructions for it. So the engine times the
variants that this machine supports during warm-up and keeps the fastest (choices.py).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

aten = torch.ops.aten


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available())


class OneDnnConv2d(nn.Module):
    """A zero-padded Conv2d whose forward is oneDNN's convolution; shares its parameters."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride = list(conv.stride)
        self.padding = list(conv.padding)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aten.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride,
                                       self.dilation, self.groups)


def use_onednn_convolutions(model: nn.Module) -> int:
    """Replace, in place, every plain zero-padded nn.Conv2d by a OneDnnConv2d; returns how many.

    A conv module shared by several parents (the pyramid's shared encoder) gets one
    wrapper, so sharing is kept.
    """
    wrappers: dict[int, OneDnnConv2d] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Conv2d and child.padding_mode == "zeros"
                    and not isinstance(child.padding, str)):
                if id(child) not in wrappers:
                    wrappers[id(child)] = OneDnnConv2d(child)
                setattr(parent, name, wrappers[id(child)])
    return len(wrappers)


ROUTES = ("onednn", "torch")
MEMORY_FORMATS = ("channels_last", "contiguous")


def model_variants(model: nn.Module, *, routes=ROUTES, formats=MEMORY_FORMATS
                   ) -> dict[tuple[str, str], nn.Module]:
    """The network once per (conv route, memory format) asked for, for timing.

    Variants of one memory format share their parameters (a routed copy wraps the same
    weight tensors), so only the formats' weight layouts are extra memory. `routes` may
    name "onednn" only where oneDNN is available; the caller checks.
    """
    variants: dict[tuple[str, str], nn.Module] = {}
    for memory_format in formats:
        # .to() converts in place, so channels_last gets a copy of its own
        shaped = (copy.deepcopy(model).to(memory_format=torch.channels_last)
                  if memory_format == "channels_last" else model)
        for route in routes:
            variant = shaped
            if route == "onednn":
                shared = {id(t): t for t in (*shaped.parameters(), *shaped.buffers())}
                variant = copy.deepcopy(shaped, memo=shared)
                use_onednn_convolutions(variant)
            variants[(route, memory_format)] = variant
    return variants
