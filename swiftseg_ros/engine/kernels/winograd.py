"""3x3 convolutions as Winograd F(4x4, 3x3): 4x fewer multiplications in the matrix products.

On a CPU at batch 1, SwiftNet-RN18 at 1024x512 spends 97% of its frame in convolutions
that already run near the core's arithmetic peak (ONNX Runtime's MLAS kernels, or
oneDNN); the one way left to go faster is less arithmetic. Winograd's minimal filtering
algorithm computes each 4x4 block of outputs of a 3x3 stride-1 convolution from the
6x6 input tile around it with 36 element-wise products per (input, output) channel
pair instead of 144: the input tiles and the filters are transformed (B^T d B and
G g G^T), the products become 36 matrix products (output channels x input channels)
x (input channels x tiles), and the results are transformed back (A^T m A). The
filters are transformed once, here; the input and output transforms are a few passes
over memory per layer. (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016.)

That trade pays where channels are many and the image is small (the encoder's last
stages: 256 and 512 channels at 1/16 and 1/32): measured at 1024x512 on one AVX2 core,
1.25-1.5x faster per layer under ONNX Runtime; at 128 channels and 1/8 the transforms
cost more than they save. Whether it pays for a whole network on a given CPU is
measured when the engine prepares (choices.py), like every other kernel choice.

The results equal the direct convolution's to about 1e-5 relative in fp32 (the
transforms' constants are not powers of two); labels agree on >= 99.9% of pixels
(tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from swiftseg_ros.engine.kernels.cpu_kernels import OneDnnConv2d

# F(4x4, 3x3) with interpolation points 0, +-1, +-2 (Lavin and Gray, section 4.2)
_INPUT_T = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
            (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))  # B^T
_FILTER = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
           (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))  # G
_OUTPUT_T = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0),
             (0, 1, -1, 8, -8, 1))  # A^T
TILE = 4  # outputs per tile side
# where it is offered: both channel counts at least this (see the module docstring)
MIN_CHANNELS = 256


def eligible(module: nn.Module, min_channels: int = MIN_CHANNELS) -> bool:
    """A dense 3x3, stride 1, padding 1, undilated convolution with enough channels."""
    if type(module) is nn.Conv2d:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return False
        shape = (tuple(module.kernel_size), tuple(module.stride), tuple(module.padding),
                 tuple(module.dilation), module.groups)
    elif isinstance(module, OneDnnConv2d):
        shape = (tuple(module.weight.shape[2:]), tuple(module.stride), tuple(module.padding),
                 tuple(module.dilation), module.groups)
    else:
        return False
    out_channels, in_channels = module.weight.shape[:2]
    return (shape == ((3, 3), (1, 1), (1, 1), (1, 1), 1)
            and min(in_channels, out_channels) >= min_channels)


class WinogradConv3x3(nn.Module):
    """The convolution `conv` (3x3, stride 1, padding 1) computed as F(4x4, 3x3).

    Any input size: the image is padded to whole tiles and the output cropped. Batch
    elements are tiles of one product, so the matrix products stay large.
    """

    def __init__(self, conv: nn.Module):
        super().__init__()
        weight = conv.weight.detach()
        self.out_channels, self.in_channels = weight.shape[:2]
        g = torch.tensor(_FILTER, dtype=torch.float64)
        # (6 column frequencies, 6 row frequencies, out, in): the order the input
        # transform below produces its 36 components in
        transformed = torch.einsum("ak,oikl,bl->baoi", g, weight.double(), g)
        self.register_buffer("filters", transformed.reshape(
            36, self.out_channels, self.in_channels).to(weight.dtype).contiguous())
        self.register_buffer("input_t", torch.tensor(_INPUT_T, dtype=weight.dtype))
        self.register_buffer("output_t", torch.tensor(_OUTPUT_T, dtype=weight.dtype))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(self.out_channels)
        self.register_buffer("bias", bias.to(weight.dtype).view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tiles_h, tiles_w = -(-height // TILE), -(-width // TILE)
        # one pixel of zero padding, plus what fills the last tile row and column
        padded = F.pad(x, (1, 1 + tiles_w * TILE - width, 1, 1 + tiles_h * TILE - height))
        padded = padded.transpose(0, 1)  # (C, N, H + 2, W + 2): batch joins the tiles
        # input transform B^T d B, rows then columns, each as one small matrix product
        # over the six strided row (column) slices of the tiles
        rows = torch.stack([padded[:, :, i:i + TILE * tiles_h:TILE] for i in range(6)])
        rows = torch.matmul(self.input_t, rows.reshape(6, -1)).view(
            6, channels, batch, tiles_h, -1)
        columns = torch.stack([rows[..., j:j + TILE * tiles_w:TILE] for j in range(6)])
        tiles = batch * tiles_h * tiles_w
        transformed = torch.matmul(self.input_t, columns.reshape(6, -1)).view(
            36, channels, tiles)
        products = torch.bmm(self.filters, transformed)  # (36, out, tiles)
        # output transform A^T m A: columns, then rows
        out = self.out_channels
        half = torch.matmul(self.output_t, products.view(6, -1)).view(TILE, 6, -1)
        half = half.transpose(0, 1).reshape(6, -1)
        blocks = torch.matmul(self.output_t, half).view(
            TILE, TILE, out, batch, tiles_h, tiles_w)  # (row, column, out, n, th, tw)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # the layout the input came in (the rest of the network runs in it)
            y = blocks.permute(3, 4, 0, 5, 1, 2).reshape(
                batch, tiles_h * TILE, tiles_w * TILE, out).permute(0, 3, 1, 2)
        else:
            y = blocks.permute(3, 2, 4, 0, 5, 1).reshape(
                batch, out, tiles_h * TILE, tiles_w * TILE)
        return y[:, :, :height, :width] + self.bias


class WinogradCache:
    """One Winograd replacement per source convolution weight (a WinogradConv3x3, or what
    `make` builds): the transformed filters (4x the size of the 3x3 weights) are built
    once and shared by every user of that weight (plans, pipelined slots, both conv
    routes, the layer timing and the whole pass)."""

    def __init__(self, make: Callable[[nn.Module], nn.Module] = WinogradConv3x3):
        self._make = make
        self._built: dict[int, tuple[torch.Tensor, nn.Module]] = {}

    def __call__(self, conv: nn.Module) -> nn.Module:
        entry = self._built.get(id(conv.weight))
        if entry is None or entry[0] is not conv.weight:
            entry = (conv.weight, self._make(conv))
            self._built[id(conv.weight)] = entry
        return entry[1]

    def clear(self) -> None:
        self._built.clear()


def use_winograd(model: nn.Module, min_channels: int = MIN_CHANNELS,
                 build: WinogradCache | None = None) -> int:
    """Replace, in place, every eligible 3x3 convolution by its WinogradConv3x3 (from
    `build`, a new cache if none); returns how many distinct ones. A conv shared by
    several parents gets one replacement, so sharing is kept."""
    build = build or WinogradCache()
    replacements = set()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if eligible(child, min_channels):
                replacement = build(child)
                replacements.add(id(replacement))
                setattr(parent, name, replacement)
    return len(replacements)


def layer_inputs(model: nn.Module, example: torch.Tensor,
                 select: Callable[[nn.Module], bool]) -> dict[nn.Module, list[torch.Tensor]]:
    """The inputs each selected module of `model` gets in one forward pass on `example`
    (a shared module, called more than once, gets several)."""
    inputs: dict[nn.Module, list[torch.Tensor]] = {}
    # modules() yields a shared module once, so each gets one hook (and one entry per call)
    hooks = [module.register_forward_pre_hook(
        lambda module, args: inputs.setdefault(module, []).append(args[0].clone()))
        for module in model.modules() if select(module)]
    try:
        model.forward_logits(example)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def layer_runs(model: nn.Module, example: torch.Tensor, min_channels: int = MIN_CHANNELS,
               build: WinogradCache | None = None
               ) -> tuple[Callable[[], None], Callable[[], None], int]:
    """Two callables that run the eligible convolutions of `model` once each, on the
    inputs they get from `example` (captured in one forward pass): directly, and as
    Winograd; and how many there are.

    Timing these two is the cheap first question (milliseconds per layer, no export):
    only where Winograd is faster layer by layer is the whole Winograd pass worth
    building and timing.
    """
    build = build or WinogradCache()
    pairs = [(module, build(module), image)
             for module, images in layer_inputs(
                 model, example, lambda m: eligible(m, min_channels)).items()
             for image in images]

    def direct() -> None:
        for module, _, image in pairs:
            module(image)

    def winograd() -> None:
        for _, replacement, image in pairs:
            replacement(image)

    return direct, winograd, len(pairs)


def count_eligible(model: nn.Module, min_channels: int = MIN_CHANNELS) -> int:
    return sum(1 for module in model.modules() if eligible(module, min_channels))
