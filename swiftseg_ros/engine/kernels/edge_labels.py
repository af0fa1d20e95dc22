"""Labels of bilinearly upsampled logits without upsampling all of them (CPU).

The papers' class selection upsamples the logits bilinearly to the output size and
takes the class of the largest score per pixel. At 1024x512 with 19 classes that is
40 MB written and read again, the larger part of a Fast-SCNN frame on a CPU. Most of it
decides nothing: an output pixel's upsampled logits are a convex combination of the
four network-resolution logit vectors around it, and when all four choose the same
class c, so does every combination of them (each has its largest entry at c, and
so has any weighted sum with non-negative weights). Only where the four corners
disagree, along class edges, can the interpolated class differ from them.

So, for an output size that is the network's times an even whole factor `s` (the
output stride when the network runs at the camera's size): class selection at network
resolution; each "quad" of 2x2 neighbouring logit pixels (the border replicated, as
torch's bilinear kernel clamps) covers an s x s block of output pixels (shifted by s/2,
align_corners=False); a quad whose corners agree fills its block with that class, and
only the blocks of the others are interpolated, exactly as the bilinear kernel weighs
them, and selected per pixel. The labels equal those of upsample-then-max up to float
rounding at exact ties.

Which classes can win in an edge block: every mix of a class's four corner scores lies
between their extremes, so only classes whose largest corner score reaches the largest
smallest-corner score of any class. Each corner's own class is one of them, so where
there are just two (most edge blocks: 55-80% of them for Fast-SCNN at 1024x512) they are
the block's smallest and largest corner class, and the label is the sign of one
interpolated score difference per pixel (no per-class scores, no arg-max over classes,
which is PyTorch's slowest step here). The other edge blocks keep the few classes that
can win there and select among their interpolated scores.

The number of edge quads varies from frame to frame, so their scratch tensors are
sized per frame (small: edges are a fraction of the image); every other buffer is
allocated once.

edge_kernel.py compiles the same rules into one loop (numba); `edge_kernels` offers
both (each built on first use) and the engine keeps the faster at prepare.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F


def edge_kernels(logits: torch.Tensor, output_hw: tuple[int, int]
                 ) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """The implementations of the edge selection that can run here, by name, each as a
    builder called on first use: "torch" (EdgeLabels, always) and "compiled"
    (edge_kernel.py, where numba is installed and the logits are fp32 or bf16); and a
    note for each one left out. The engine times them. Built only when used, because
    the compiled one imports numba (a start of a few tenths of a second, seconds under
    load): a start whose cached choice is torch's never loads it. Building "compiled"
    raises ImportError (saying `pip install numba`) where numba does not import."""
    # what the kernels size their buffers from, without keeping the logits alive
    template = torch.empty_like(logits, device="meta")
    kernels: dict[str, Callable[[], object]] = {
        "torch": functools.partial(EdgeLabels, template, output_hw)}
    notes: dict[str, str] = {}
    if logits.dtype not in (torch.float32, torch.bfloat16):
        notes["compiled"] = f"fp32 or bf16 logits only, these are {str(logits.dtype)[6:]}"
    elif importlib.util.find_spec("numba") is None:
        notes["compiled"] = "numba unavailable (not installed): pip install numba"
    else:
        kernels["compiled"] = functools.partial(_compiled, template, output_hw)
    return kernels, notes


def _compiled(template: torch.Tensor, output_hw: tuple[int, int]):
    try:
        from swiftseg_ros.engine.kernels.edge_kernel import CompiledEdgeLabels
    except ImportError as exc:  # numba not built for this numpy, or broken
        raise ImportError(f"numba unavailable ({exc}): pip install numba") from exc
    return CompiledEdgeLabels(template, output_hw)


def applies(logits: torch.Tensor, output_hw: tuple[int, int]) -> bool:
    """Whether the output is the logits' size times one even whole factor, on the CPU."""
    _, _, net_h, net_w = logits.shape
    out_h, out_w = output_hw
    if logits.device.type != "cpu" or out_h % net_h or out_w % net_w:
        return False
    factor = out_h // net_h
    return factor == out_w // net_w and factor >= 2 and factor % 2 == 0


class EdgeLabels:
    """Writes into `labels` (H, W) uint8 the classes of upsampled `logits` (1, C, h, w)."""

    def __init__(self, logits: torch.Tensor, output_hw: tuple[int, int]):
        _, classes, net_h, net_w = logits.shape
        out_h, out_w = output_hw
        s = out_h // net_h
        self.s, self.classes = s, classes
        self.quads_hw = (net_h + 1, net_w + 1)
        self.crop = (slice(s // 2, s // 2 + out_h), slice(s // 2, s // 2 + out_w))
        self.low_max = torch.empty((1, net_h, net_w), dtype=logits.dtype)
        self.low_labels = torch.empty((1, net_h, net_w), dtype=torch.long)
        self.padded_labels = torch.empty((net_h + 2, net_w + 2), dtype=torch.uint8)
        self.uniform = torch.empty(self.quads_hw, dtype=torch.bool)
        self.corner_equal = torch.empty(self.quads_hw, dtype=torch.bool)
        # the blocks laid out as an image (uniform ones filled row by row, as the nearest
        # upsampler does: contiguous inner loops), edge blocks scattered into it
        self.block_rows = torch.empty((net_h + 1, (net_w + 1) * s), dtype=torch.uint8)
        self.canvas = torch.empty(((net_h + 1) * s, (net_w + 1) * s), dtype=torch.uint8)
        canvas_w = (net_w + 1) * s
        # flat canvas offsets of a block's s*s pixels from its top-left pixel
        self.block_pixels = (torch.arange(s).view(s, 1) * canvas_w + torch.arange(s)).view(-1)
        # the bilinear weights of the four corners for each of a block's s*s pixels:
        # source offset (t + 0.5) / s from the quad's top-left logit pixel
        offsets = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        far_y, far_x = torch.meshgrid(offsets, offsets, indexing="ij")
        near_y, near_x = 1.0 - far_y, 1.0 - far_x
        self.weights = torch.stack([near_y * near_x, near_y * far_x, far_y * near_x,
                                    far_y * far_x]).view(4, s * s)
        # flat offsets in the padded logits of a quad's corners from its top-left one
        row = net_w + 2
        self.corner_offsets = torch.tensor([0, 1, row, row + 1])

    def run(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        s = self.s
        quads_h, quads_w = self.quads_hw
        torch.max(logits, 1, out=(self.low_max, self.low_labels))
        # replicated borders: the bilinear kernel clamps its source index to the image
        padded = self.padded_labels
        padded[1:-1, 1:-1].copy_(self.low_labels[0])
        padded[0, 1:-1].copy_(padded[1, 1:-1])
        padded[-1, 1:-1].copy_(padded[-2, 1:-1])
        padded[:, 0].copy_(padded[:, 1])
        padded[:, -1].copy_(padded[:, -2])
        top_left = padded[:-1, :-1]
        uniform, equal = self.uniform, self.corner_equal
        torch.eq(top_left, padded[:-1, 1:], out=uniform)
        for other in (padded[1:, :-1], padded[1:, 1:]):
            torch.eq(top_left, other, out=equal)
            uniform.logical_and_(equal)
        rows, canvas_w = self.block_rows, quads_w * s
        rows.view(quads_h, quads_w, s).copy_(top_left.view(quads_h, quads_w, 1).expand(-1, -1, s))
        self.canvas.view(quads_h, s, canvas_w).copy_(
            rows.view(quads_h, 1, canvas_w).expand(-1, s, -1))
        edges = uniform.logical_not().view(-1).nonzero().view(-1)
        if edges.numel():
            self._edge_blocks(logits, edges)
        labels.copy_(self.canvas[self.crop])

    def _edge_blocks(self, logits: torch.Tensor, edges: torch.Tensor) -> None:
        """Labels of the edge quads' blocks (quad indices `edges`) into the canvas."""
        s, classes, quads_w = self.s, self.classes, self.quads_hw[1]
        flat = F.pad(logits.float(), (1, 1, 1, 1), mode="replicate").view(classes, -1)
        # quad (q, p) has its top-left corner at padded (q, p)
        corners = (edges // quads_w) * (quads_w + 1) + edges % quads_w
        gather = (corners.view(-1, 1) + self.corner_offsets).view(-1)
        values = flat.index_select(1, gather).view(classes, -1, 4)  # (C, edges, 4)
        upper = values.amax(2)
        candidates = (upper >= values.amin(2).amax(0)).sum(0)
        two = candidates == 2
        pair = two.nonzero().view(-1)
        if pair.numel():
            # the two are the quad's smallest and largest corner class
            corner_classes = self.padded_labels.view(-1)[gather.view(-1, 4)[pair]]
            low, high = corner_classes.amin(1), corner_classes.amax(1)
            difference = values[high.long(), pair] - values[low.long(), pair]  # (pairs, 4)
            # the larger class wins where its interpolated score is larger; a tie goes to
            # the smaller class, max's first index
            high_wins = torch.mm(difference, self.weights) > 0
            pair_labels = low.view(-1, 1) + high_wins.to(torch.uint8) * (high - low).view(-1, 1)
            self._write_blocks(edges[pair], pair_labels)
        rest = (~two).nonzero().view(-1)
        if rest.numel():
            values, upper = values[:, rest], upper[:, rest]
            kept = int(candidates[rest].max())
            # in ascending class order, so that max's first index is the smaller class
            # on a tie, as upsample-then-max gives it
            top = (upper.topk(kept, dim=0).indices.sort(dim=0).values if kept < classes
                   else None)
            if top is not None:
                values = values.gather(0, top.unsqueeze(2).expand(-1, -1, 4))
            scores = torch.mm(values.reshape(-1, 4), self.weights).view(kept, -1, s * s)
            rest_labels = torch.max(scores, 0).indices
            if top is not None:
                rest_labels = top.gather(0, rest_labels.t()).t()
            self._write_blocks(edges[rest], rest_labels.to(torch.uint8))

    def _write_blocks(self, quads: torch.Tensor, block_labels: torch.Tensor) -> None:
        """The (len(quads), s*s) labels of these quads' blocks into the canvas."""
        s, quads_w = self.s, self.quads_hw[1]
        corner = (quads // quads_w) * (s * s * quads_w) + (quads % quads_w) * s
        pixels = (corner.view(-1, 1) + self.block_pixels).view(-1)
        self.canvas.view(-1).scatter_(0, pixels, block_labels.reshape(-1))
