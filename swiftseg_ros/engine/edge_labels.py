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

The number of edge quads varies from frame to frame, so their scratch tensors are
sized per frame (small: edges are a fraction of the image); every other buffer is
allocated once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def applies(logits: torch.Tensor, output_hw: tuple[int, int]) -> bool:
    """Whether the output is the logits' size times one even whole factor, on the CPU."""
    _, _, net_h, net_w = logits.shape
    out_h, out_w = output_hw
    if logits.device.type != "cpu" or out_h % net_h or out_w % net_w:
        return False
    factor = out_h // net_h
    return factor == out_w // net_w and factor >= 2 and factor % 2 == 0


class EdgeLabels:
    """Writes into `labels` (H, W) uint8 the classes of upsampled `logits` (1, C, h, w),
    and with a `palette` (classes, 3) uint8 their colours into `color` (H, W, 3): block by
    block too, which is cheaper than a palette lookup of every pixel."""

    def __init__(self, logits: torch.Tensor, output_hw: tuple[int, int],
                 palette: torch.Tensor | None = None):
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
        self.blocks = torch.empty((*self.quads_hw, s, s), dtype=torch.uint8)
        self.canvas = torch.empty(((net_h + 1) * s, (net_w + 1) * s), dtype=torch.uint8)
        self.palette = palette
        if palette is not None:
            self.quad_colors = torch.empty((net_h + 1, net_w + 1, 3), dtype=torch.uint8)
            self.color_blocks = torch.empty((*self.quads_hw, s, s, 3), dtype=torch.uint8)
            self.color_canvas = torch.empty(((net_h + 1) * s, (net_w + 1) * s, 3),
                                            dtype=torch.uint8)
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

    def run(self, logits: torch.Tensor, labels: torch.Tensor,
            color: torch.Tensor | None = None) -> None:
        s, classes = self.s, self.classes
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
        self.blocks.copy_(top_left.view(quads_h, quads_w, 1, 1).expand(-1, -1, s, s))
        if color is not None:
            torch.index_select(self.palette, 0, top_left.reshape(-1).int(),
                               out=self.quad_colors.view(-1, 3))
            self.color_blocks.copy_(
                self.quad_colors.view(quads_h, quads_w, 1, 1, 3).expand(-1, -1, s, s, -1))
        edges = uniform.logical_not().view(-1).nonzero().view(-1)
        if edges.numel():
            flat = F.pad(logits.float(), (1, 1, 1, 1), mode="replicate").view(classes, -1)
            # quad (q, p) has its top-left corner at padded (q, p)
            corners = (edges // quads_w) * (quads_w + 1) + edges % quads_w
            gather = (corners.view(-1, 1) + self.corner_offsets).view(-1)
            values = flat.index_select(1, gather).view(classes, -1, 4)  # (C, edges, 4)
            # every mix of a class's four corner scores lies between their extremes, so a
            # class can win somewhere in a block only if its largest corner score reaches
            # the largest smallest-corner score of any class; the `kept` classes with the
            # largest corner maxima hold all such classes of every edge block
            upper = values.amax(2)
            kept = int((upper >= values.amin(2).amax(0)).sum(0).max())
            top = upper.topk(kept, dim=0).indices if kept < classes else None
            if top is not None:
                values = values.gather(0, top.unsqueeze(2).expand(-1, -1, 4))
            scores = torch.mm(values.view(-1, 4), self.weights).view(kept, -1, s * s)
            edge_labels = torch.max(scores, 0).indices
            if top is not None:
                edge_labels = top.gather(0, edge_labels.t()).t().contiguous()
            self.blocks.view(quads_h * quads_w, s * s)[edges] = edge_labels.to(torch.uint8)
            if color is not None:
                self.color_blocks.view(quads_h * quads_w, s * s, 3)[edges] = \
                    torch.index_select(self.palette, 0, edge_labels.view(-1)).view(-1, s * s, 3)
        self.canvas.view(quads_h, s, quads_w, s).copy_(self.blocks.permute(0, 2, 1, 3))
        labels.copy_(self.canvas[self.crop])
        if color is not None:
            self.color_canvas.view(quads_h, s, quads_w, s, 3).copy_(
                self.color_blocks.permute(0, 2, 1, 3, 4))
            color.copy_(self.color_canvas[self.crop])
