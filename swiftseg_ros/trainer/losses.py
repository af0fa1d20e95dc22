"""Training loss: cross-entropy at full crop resolution, ignore label skipped, plus the
weighted auxiliary losses of Fast-SCNN (its section 4.1: 0.4 each), optionally with
per-class weights for rare classes (ENet's 1 / ln(c + frequency))."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swiftseg_ros.classes import IGNORE_INDEX


class SegmentationLoss(nn.Module):
    """Cross-entropy of the main logits plus `aux_weight` x that of each auxiliary head.

    The model's output is either the logits, or `(logits, [aux_logits, ...])` in training
    mode. Logits smaller than the label (auxiliary heads at their own stride) are
    upsampled bilinearly to the label size first, so every term is computed at full crop
    resolution as in both papers.
    """

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        self.aux_weight = float(aux_weight)
        self.ignore_index = int(ignore_index)
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        main, aux = split_output(output)
        loss = self._cross_entropy(main, target)
        for logits in aux:
            loss = loss + self.aux_weight * self._cross_entropy(logits, target)
        return loss

    def _cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                                   align_corners=False)
        # The loss in fp32 even under autocast: the log-softmax of fp16 logits loses
        # precision exactly where the gradients are small.
        return F.cross_entropy(logits.float(), target, weight=self.class_weights,
                               ignore_index=self.ignore_index)


def split_output(output) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(main logits, auxiliary logits) of a model output in either form."""
    if isinstance(output, torch.Tensor):
        return output, []
    main, aux = output
    return main, list(aux)


def enet_class_weights(pixel_counts, c: float = 1.02) -> torch.Tensor:
    """ENet's class weights (Paszke et al. 2016): 1 / ln(c + frequency of the class).

    Bounded between 1 / ln(1 + c) (a class covering everything) and 1 / ln(c) (a class
    never seen: about 50 with ENet's c = 1.02, so that rare thin classes such as poles
    weigh up to ~35x a dominant one; a larger c flattens the weights).
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    return torch.tensor(1.0 / np.log(c + frequency), dtype=torch.float32)
