"""Segmentation metrics: a confusion matrix accumulated on the device, IoU, mIoU, accuracy.

One module for the trainer's validation, `swiftseg-eval` and `swiftseg-replay`, so that
all three report the same numbers for the same predictions.

Rows of the matrix are ground-truth classes, columns predicted classes. Pixels whose
ground truth is the ignore index are skipped. A class that appears neither in the ground
truth nor in the predictions has no IoU: it is reported as absent (NaN in arrays, None in
dictionaries, "absent" in tables) and left out of the mean, instead of counting as 0 or 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from swiftseg_ros.classes import IGNORE_INDEX


def _as_long_tensor(values, device: torch.device) -> torch.Tensor:
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.ascontiguousarray(values))
    elif not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"labels must be an integer array, got dtype {values.dtype}")
    return values.to(device=device, dtype=torch.int64, non_blocking=True)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class ConfusionMatrix:
    """A num_classes x num_classes count matrix (rows: ground truth, columns: prediction).

    `matrix` is an int64 tensor on `device`; `frames` counts `update` calls' images. To
    combine ranks of a distributed run, sum `matrix` and `frames` (see `all_reduce`), or
    combine two instances with `merge`.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: str | torch.device = "cpu"):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.device = torch.device(device)
        self.matrix = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64,
                                  device=self.device)
        self.frames = 0

    def reset(self) -> None:
        self.matrix.zero_()
        self.frames = 0

    def update(self, pred, target) -> None:
        """Count one batch: `pred` and `target` are class-id arrays of the same shape.

        Tensors (any device) or numpy arrays. A leading batch dimension is counted as that
        many frames when the arrays have 3 or more dimensions; a 2-D pair is one frame.
        Raises ValueError for a shape mismatch, a prediction outside 0..num_classes-1, or a
        ground-truth id that is neither a class nor the ignore index.
        """
        p = _as_long_tensor(pred, self.device)
        t = _as_long_tensor(target, self.device)
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {tuple(p.shape)} does not match the ground "
                             f"truth's {tuple(t.shape)}")
        n = self.num_classes
        valid = t != self.ignore_index
        # Out-of-range values are checked on the counted pixels only, in one host sync.
        p_valid = torch.where(valid, p, 0)
        t_valid = torch.where(valid, t, 0)
        bad = (p_valid < 0) | (p_valid >= n) | (t_valid < 0) | (t_valid >= n)
        if bool(bad.any()):
            self._raise_out_of_range(p_valid, t_valid, valid)
        # Ignored pixels land in an extra bin n*n that is dropped: no boolean indexing, so
        # the work stays a fixed-shape device computation.
        index = torch.where(valid, t_valid * n + p_valid, n * n)
        counts = torch.bincount(index.reshape(-1), minlength=n * n + 1)
        self.matrix += counts[: n * n].reshape(n, n)
        self.frames += int(p.shape[0]) if p.dim() >= 3 else 1

    def _raise_out_of_range(self, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor):
        n = self.num_classes
        bad_p = torch.unique(p[valid & ((p < 0) | (p >= n))]).tolist()
        if bad_p:
            raise ValueError(f"prediction holds class ids {bad_p[:10]} outside 0..{n - 1} "
                             f"({n} classes)")
        bad_t = torch.unique(t[valid & ((t < 0) | (t >= n))]).tolist()
        raise ValueError(f"ground truth holds class ids {bad_t[:10]} that are neither a class "
                         f"(0..{n - 1}) nor the ignore index {self.ignore_index}")

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts and frames to this one (same class count)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class confusion matrix into "
                             f"a {self.num_classes}-class one")
        self.matrix += other.matrix.to(self.device)
        self.frames += other.frames
        return self

    def all_reduce(self) -> None:
        """Sum the counts and frames of every rank of the default torch.distributed group.

        The matrix must live on a device the backend supports (CPU for gloo, CUDA for nccl).
        """
        import torch.distributed as dist

        frames = torch.tensor([self.frames], dtype=torch.int64, device=self.device)
        dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        dist.all_reduce(frames, op=dist.ReduceOp.SUM)
        self.frames = int(frames.item())

    # results ------------------------------------------------------------------------------

    def _counts(self) -> np.ndarray:
        return self.matrix.detach().to("cpu").numpy().astype(np.float64)

    @property
    def pixels(self) -> int:
        return int(self.matrix.sum().item())

    def iou(self) -> np.ndarray:
        """Per-class IoU as float64; NaN for a class absent from truth and prediction."""
        m = self._counts()
        tp = np.diag(m)
        union = m.sum(axis=0) + m.sum(axis=1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present in the truth or the prediction; NaN if none."""
        iou = self.iou()
        present = ~np.isnan(iou)
        return float(iou[present].mean()) if present.any() else math.nan

    def pixel_accuracy(self) -> float:
        """Correct pixels over counted (non-ignored) pixels; NaN before any pixel."""
        m = self._counts()
        total = m.sum()
        return float(np.trace(m) / total) if total > 0 else math.nan

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall (correct / ground-truth pixels); NaN for a class not in the truth."""
        m = self._counts()
        gt = m.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gt > 0, np.diag(m) / gt, np.nan)

    def _names(self, class_names) -> list[str]:
        if class_names is None:
            return [str(i) for i in range(self.num_classes)]
        names = [str(c) for c in class_names]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for a {self.num_classes}-class matrix")
        return names

    def as_dict(self, class_names=None) -> dict:
        """JSON-ready results: miou and accuracies in 0-1, None where undefined."""
        names = self._names(class_names)
        iou = self.iou()
        acc = self.class_accuracy()
        return {
            "miou": _none_if_nan(self.miou()),
            "pixel_accuracy": _none_if_nan(self.pixel_accuracy()),
            "per_class": {name: _none_if_nan(v) for name, v in zip(names, iou, strict=True)},
            "per_class_accuracy": {name: _none_if_nan(v)
                                   for name, v in zip(names, acc, strict=True)},
            "absent_classes": [name for name, v in zip(names, iou, strict=True)
                               if math.isnan(v)],
            "frames": int(self.frames),
            "pixels": self.pixels,
        }

    def format_table(self, class_names=None) -> str:
        """A plain-text table of per-class IoU and accuracy (percent) with the summary lines."""
        names = self._names(class_names)
        width = max([len("class")] + [len(n) for n in names])

        def pct(v: float) -> str:
            return "absent" if math.isnan(v) else f"{100 * v:6.2f}"

        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'acc %':>7}",
                 f"{'-' * width}  {'-' * 7}  {'-' * 7}"]
        for name, iou, acc in zip(names, self.iou(), self.class_accuracy(), strict=True):
            acc_text = "-" if math.isnan(acc) and not math.isnan(iou) else pct(acc)
            lines.append(f"{name:<{width}}  {pct(iou):>7}  {acc_text:>7}")
        lines.append(f"{'-' * width}  {'-' * 7}  {'-' * 7}")
        present = int((~np.isnan(self.iou())).sum())
        if present == 0:
            lines.append(f"no labelled pixels counted ({self.frames} frames)")
        else:
            lines.append(f"mIoU {100 * self.miou():.2f}% over {present} present classes, pixel "
                         f"accuracy {100 * self.pixel_accuracy():.2f}%, {self.frames} frames")
        return "\n".join(lines)
