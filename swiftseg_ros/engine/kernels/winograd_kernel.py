"""Winograd F(4x4, 3x3) convolutions with compiled transforms, on channels_last data (numba).

winograd.py computes the same thing from whole-tensor torch ops, the form ONNX graphs
can hold; in an eager torch forward its transforms cost more than they save below 256
channels (each is a dozen passes over memory, with the strided copies between them).
Here each transform is one compiled loop that reads every input value once, straight
from the channels_last (NHWC) tensor, and vectorizes over channels: for the 6x6 tile
around each 4x4 output block, B^T d B into (36, tiles, channels); then 36 matrix
products with the filters (torch.bmm: the BLAS that runs near the core's peak); then
A^T m A plus the bias, written into the NHWC output (cropped at the right and bottom
edges). Measured at 1024x512 on one AVX2 core against oneDNN's direct convolution:
64 channels at 1/4 resolution 21 vs 27 ms, 128 channels at 1/4 59 vs 110 ms, 512 at
1/32 13 vs 31 ms; SwiftNet-RN18's whole forward 687 -> 460 ms. Whether each layer is
faster this way on the machine at hand is measured when the engine prepares
(`faster_compiled`), and the whole pass is then one more timed candidate.

The matrices are winograd.py's (B^T, G, A^T), written out as sums in the loops. Results
equal the direct convolution's to about 1e-5 relative in fp32. Compiled on first use
(a few seconds) and cached on disk by numba.
"""

from __future__ import annotations

import copy
import functools
import threading

import numpy as np
import torch
from numba import njit
from torch import nn

from swiftseg_ros.engine.autotune import choose
from swiftseg_ros.engine.kernels.winograd import (
    _FILTER,
    TILE,
    WinogradCache,
    eligible,
    layer_inputs,
)

# where it is offered: both channel counts at least this (below, the transforms' passes
# over memory outweigh the saved arithmetic on every CPU measured)
MIN_CHANNELS = 64
# Scratch sizes (transformed input + products) of the bands a layer is also timed in: a
# band that stays in the core's L2 or L3 cache between the transforms and the products
# spares two round trips to memory; a small one re-reads the filters more often and
# gives the products too few rows to be efficient. Measured at 1024x512 on one core
# (bands of 0.5 to 8 MiB swept): 64 channels at 1/4 resolution, AVX2 EPYC 24.5 ms in
# bands, 28.8 whole, 32.8 direct; Zen 4 (AVX-512) 14.3 in bands, 23.6 whole, 22.1
# direct; 256 and 512 channels at 1/16 and 1/32 no faster in bands on either.
BAND_BYTES = (1 << 20, 4 << 20)


@njit(inline="always", fastmath=True)
def _transform_tile(d, out, t, channels, tmp):
    """B^T d B of one (6, 6, channels) tile into out[:, t, :] (index row freq * 6 + col)."""
    for x in range(6):
        for c in range(channels):
            d0, d1, d2 = d[0, x, c], d[1, x, c], d[2, x, c]
            d3, d4, d5 = d[3, x, c], d[4, x, c], d[5, x, c]
            tmp[0, x, c] = 4 * d0 - 5 * d2 + d4
            tmp[1, x, c] = -4 * (d1 + d2) + d3 + d4
            tmp[2, x, c] = 4 * (d1 - d2) - d3 + d4
            tmp[3, x, c] = 2 * (d3 - d1) - d2 + d4
            tmp[4, x, c] = 2 * (d1 - d3) - d2 + d4
            tmp[5, x, c] = 4 * d1 - 5 * d3 + d5
    for r in range(6):
        for c in range(channels):
            d0, d1, d2 = tmp[r, 0, c], tmp[r, 1, c], tmp[r, 2, c]
            d3, d4, d5 = tmp[r, 3, c], tmp[r, 4, c], tmp[r, 5, c]
            out[r * 6 + 0, t, c] = 4 * d0 - 5 * d2 + d4
            out[r * 6 + 1, t, c] = -4 * (d1 + d2) + d3 + d4
            out[r * 6 + 2, t, c] = 4 * (d1 - d2) - d3 + d4
            out[r * 6 + 3, t, c] = 2 * (d3 - d1) - d2 + d4
            out[r * 6 + 4, t, c] = 2 * (d1 - d3) - d2 + d4
            out[r * 6 + 5, t, c] = 4 * d1 - 5 * d3 + d5


@njit(fastmath=True, nogil=True, cache=True)
def input_transform(image, out, first_row, end_row):
    """Tile rows [first_row, end_row) of the (height, width, channels) image, zero-padded
    by one pixel: out is (36, tiles, channels), the band's tiles row-major over its 4x4
    output blocks."""
    height, width, channels = image.shape
    tiles_w = (width + 3) // 4
    border = np.zeros((6, 6, channels), np.float32)
    tmp = np.empty((6, 6, channels), np.float32)
    for i in range(first_row, end_row):
        for j in range(tiles_w):
            y0, x0 = 4 * i - 1, 4 * j - 1
            t = (i - first_row) * tiles_w + j
            if y0 >= 0 and x0 >= 0 and y0 + 6 <= height and x0 + 6 <= width:
                _transform_tile(image[y0:y0 + 6, x0:x0 + 6, :], out, t, channels, tmp)
                continue
            for a in range(6):  # a tile over the edge: copied with its zeros first
                for b in range(6):
                    y, x = y0 + a, x0 + b
                    inside = 0 <= y < height and 0 <= x < width
                    for c in range(channels):
                        border[a, b, c] = image[y, x, c] if inside else 0.0
            _transform_tile(border, out, t, channels, tmp)


@njit(fastmath=True, nogil=True, cache=True)
def output_transform(products, bias, out, first_row, end_row):
    """A^T m A + bias of each tile of products (36, tiles, channels), tile rows
    [first_row, end_row), into the (height, width, channels) output, the last row and
    column of blocks cropped."""
    height, width, channels = out.shape
    tiles_w = (width + 3) // 4
    tmp = np.empty((4, 6, channels), np.float32)
    block = np.empty((4, 4, channels), np.float32)
    for i in range(first_row, end_row):
        for j in range(tiles_w):
            t = (i - first_row) * tiles_w + j
            for col in range(6):
                for c in range(channels):
                    m0, m1, m2 = products[col, t, c], products[6 + col, t, c], \
                        products[12 + col, t, c]
                    m3, m4, m5 = products[18 + col, t, c], products[24 + col, t, c], \
                        products[30 + col, t, c]
                    tmp[0, col, c] = m0 + m1 + m2 + m3 + m4
                    tmp[1, col, c] = m1 - m2 + 2 * (m3 - m4)
                    tmp[2, col, c] = m1 + m2 + 4 * (m3 + m4)
                    tmp[3, col, c] = m1 - m2 + 8 * (m3 - m4) + m5
            for r in range(4):
                for c in range(channels):
                    m0, m1, m2 = tmp[r, 0, c], tmp[r, 1, c], tmp[r, 2, c]
                    m3, m4, m5 = tmp[r, 3, c], tmp[r, 4, c], tmp[r, 5, c]
                    b = bias[c]
                    block[r, 0, c] = m0 + m1 + m2 + m3 + m4 + b
                    block[r, 1, c] = m1 - m2 + 2 * (m3 - m4) + b
                    block[r, 2, c] = m1 + m2 + 4 * (m3 + m4) + b
                    block[r, 3, c] = m1 - m2 + 8 * (m3 - m4) + m5 + b
            for r in range(min(4, height - 4 * i)):
                for s in range(min(4, width - 4 * j)):
                    for c in range(channels):
                        out[4 * i + r, 4 * j + s, c] = block[r, s, c]


class Workspace:
    """The transformed input and the products of one layer at a time, shared by every
    compiled layer of a network: sized by the largest (per-layer buffers would hold
    ~300 MB for SwiftNet-RN18 at 1024x512), allocated once, so no frame page-faults in
    fresh scratch memory. The lock keeps two threads from sharing it."""

    def __init__(self):
        self.lock = threading.Lock()
        self._memory = torch.empty(0)

    def buffers(self, tiles: int, in_channels: int, out_channels: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (36, tiles, in_channels) and (36, tiles, out_channels); hold the lock."""
        inputs, products = 36 * tiles * in_channels, 36 * tiles * out_channels
        if self._memory.numel() < inputs + products:
            self._memory = torch.empty(inputs + products)
        return (self._memory[:inputs].view(36, tiles, in_channels),
                self._memory[inputs:inputs + products].view(36, tiles, out_channels))


class CompiledWinogradConv3x3(nn.Module):
    """The convolution `conv` (3x3, stride 1, padding 1, fp32 on the CPU) as F(4x4, 3x3)
    with compiled transforms; its output is channels_last, whatever the input's layout."""

    def __init__(self, conv: nn.Module, workspace: Workspace):
        super().__init__()
        weight = conv.weight.detach()
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError(f"compiled Winograd runs fp32 on the CPU, not "
                             f"{weight.dtype} on {weight.device}")
        self.out_channels, self.in_channels = weight.shape[:2]
        g = torch.tensor(_FILTER, dtype=torch.float64)
        # (36 = row freq * 6 + column freq, in, out): the right operand of the products
        transformed = torch.einsum("ak,oikl,bl->abio", g, weight.double(), g)
        self.register_buffer("filters", transformed.reshape(
            36, self.in_channels, self.out_channels).float().contiguous())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(self.out_channels)
        self.register_buffer("bias", bias.float().contiguous())
        self.workspace = workspace
        # tile rows per band by input (height, width), as measured (faster_compiled);
        # sizes not in it run whole
        self.band_rows: dict[tuple[int, int], int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.band_rows.get(tuple(x.shape[2:])))

    def run(self, x: torch.Tensor, band_rows: int | None) -> torch.Tensor:
        """The convolution of x, transformed and multiplied `band_rows` rows of 4x4 output
        blocks at a time (None: the whole image at once)."""
        batch, _, height, width = x.shape
        x = x.detach().contiguous(memory_format=torch.channels_last)
        # a new output per call: a shared layer (the pyramid's encoder) runs twice a pass
        y = torch.empty((batch, self.out_channels, height, width),
                        memory_format=torch.channels_last)
        rows, tiles_w = -(-height // TILE), -(-width // TILE)
        band_rows = rows if band_rows is None else min(band_rows, rows)
        bias = self.bias.numpy()
        with self.workspace.lock:
            for n in range(batch):
                image, out = x[n].permute(1, 2, 0).numpy(), y[n].permute(1, 2, 0).numpy()
                for first in range(0, rows, band_rows):
                    end = min(rows, first + band_rows)
                    inputs, products = self.workspace.buffers(
                        (end - first) * tiles_w, self.in_channels, self.out_channels)
                    input_transform(image, inputs.numpy(), first, end)
                    torch.bmm(inputs, self.filters, out=products)
                    output_transform(products.numpy(), bias, out, first, end)
        return y

    def rows_within(self, budget: int, height: int, width: int) -> int | None:
        """Tile rows per band whose scratch (transformed input and products) fits in
        `budget` bytes, at least one; None where that is the whole image."""
        rows, tiles_w = -(-height // TILE), -(-width // TILE)
        row_bytes = 36 * tiles_w * (self.in_channels + self.out_channels) * 4
        band = max(1, budget // row_bytes)
        return band if band < rows else None


def compiled_eligible(module: nn.Module) -> bool:
    """A 3x3 stride-1 dense convolution with enough channels, fp32 on the CPU."""
    return (eligible(module, MIN_CHANNELS) and module.weight.dtype == torch.float32
            and module.weight.device.type == "cpu")


def compiled_filters() -> WinogradCache:
    """A cache of compiled layers, one per source weight, sharing one Workspace."""
    workspace = Workspace()
    return WinogradCache(lambda conv: CompiledWinogradConv3x3(conv, workspace))


def faster_compiled(model: nn.Module, example: torch.Tensor, build: WinogradCache,
                    repeats: int) -> tuple[set[int], str]:
    """The ids of the weights of `model`'s eligible convolutions that are faster compiled
    (from `build`, a `compiled_filters()` cache), each timed on the inputs it gets from
    `example`, whole and in bands of BAND_BYTES (the fastest is kept in the compiled
    layer's `band_rows`); and a summary ("9 of 16 layers, 4 in bands: 310.2 ms, direct
    480.5 ms").

    Raises LookupError, with that summary, when no layer is faster.
    """
    faster: set[int] = set()
    banded = 0
    failures: list[str] = []
    direct_ms = compiled_ms = 0.0
    inputs = layer_inputs(model, example, compiled_eligible)
    for module, images in inputs.items():
        layer = build(module)
        sizes = sorted({tuple(image.shape[2:]) for image in images})
        bands = {"compiled": dict.fromkeys(sizes)}
        for budget in BAND_BYTES:
            rows = {size: layer.rows_within(budget, *size) for size in sizes}
            if any(rows.values()) and rows not in bands.values():
                bands[f"compiled in {budget >> 20} MiB bands"] = rows
        runs = {"direct": functools.partial(_run_on, module, images)}
        runs.update({name: functools.partial(_run_banded, layer, images, rows)
                     for name, rows in bands.items()})
        choice = choose("layer", runs, repeats=repeats)
        if choice.times_ms.keys() <= {"direct"}:  # compiled raised: the direct layer stays
            failures.append(next(iter(choice.notes.values()), "failed"))
            continue
        direct_ms += choice.times_ms["direct"]
        compiled_ms += choice.times_ms[choice.picked]
        if choice.picked != "direct":
            faster.add(id(module.weight))
            layer.band_rows.update({size: rows for size, rows in bands[choice.picked].items()
                                    if rows is not None})
            banded += choice.picked != "compiled"
    summary = (f"{len(faster)} of {len(inputs)} layers, {banded} in bands: "
               f"{compiled_ms:.1f} ms, direct {direct_ms:.1f} ms")
    if failures:
        summary += f"; {len(failures)} {failures[0]}"
    if not faster:
        raise LookupError(f"no layer faster compiled ({summary})")
    return faster, summary


def _run_on(layer: nn.Module, images: list[torch.Tensor]) -> None:
    for image in images:
        layer(image)


def _run_banded(layer: CompiledWinogradConv3x3, images: list[torch.Tensor],
                rows: dict[tuple[int, int], int | None]) -> None:
    for image in images:
        layer.run(image, rows[tuple(image.shape[2:])])


def compiled_copy(model: nn.Module, faster: set[int], build: WinogradCache) -> nn.Module:
    """A copy of `model` (every parameter and buffer shared) with each eligible
    convolution whose weight's id is in `faster` compiled (from `build`). A conv shared by
    several parents gets one replacement, so sharing is kept."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    twin = copy.deepcopy(model, memo=shared)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if compiled_eligible(child) and id(child.weight) in faster:
                setattr(parent, name, build(child))
    return twin


def count_compiled_eligible(model: nn.Module) -> int:
    return sum(1 for module in model.modules() if compiled_eligible(module))
