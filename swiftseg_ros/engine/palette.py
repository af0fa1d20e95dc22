"""Palettes as lookup tables: class id -> RGB colour, on the device and in numpy."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from swiftseg_ros.classes import validate_palette


def palette_table(palette, num_classes: int, source: str = "palette") -> np.ndarray:
    """A (num_classes, 3) uint8 table from a list of [r, g, b]; extra colours are dropped."""
    rows = validate_palette(palette, num_classes, source)
    return np.asarray(rows[:num_classes], dtype=np.uint8).reshape(num_classes, 3)


def palette_tensor(table: np.ndarray, device) -> torch.Tensor:
    """The table as a (num_classes, 3) uint8 tensor on `device`, for index_select lookups."""
    return torch.from_numpy(np.ascontiguousarray(table)).to(device)


def lookup_table(table: np.ndarray) -> np.ndarray:
    """The palette as a 256-entry (256, 3) table: ids beyond it are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(table)] = table[:256]
    return lut


class CpuColorLookup:
    """Colours of a fixed (H, W) uint8 label tensor into a fixed (H, W, 3) uint8 tensor, on
    the CPU: OpenCV's table lookup with the colours packed as 32-bit RGBX words, then one
    RGBX -> RGB conversion (0.4 ms at 1024x512 on one core, where torch's index_select of
    3-byte palette rows takes 3.5 ms and three 8-bit lookups and a merge 1.4 ms)."""

    def __init__(self, palette: torch.Tensor, labels: torch.Tensor, color: torch.Tensor):
        rgbx = np.zeros((256, 4), np.uint8)
        rgbx[:, :3] = lookup_table(palette.cpu().numpy())
        self.table = rgbx.view(np.int32).reshape(256)
        self.labels, self.color = labels.numpy(), color.numpy()
        self.words = np.empty(self.labels.shape, np.int32)
        self.rgbx = self.words.view(np.uint8).reshape(*self.labels.shape, 4)

    def run(self) -> None:
        cv2.LUT(self.labels, self.table, dst=self.words)
        cv2.cvtColor(self.rgbx, cv2.COLOR_RGBA2RGB, dst=self.color)


def colorize(label: np.ndarray, table: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image of `label` (class ids) through the palette `table`.

    Ids outside the palette (e.g. the ignore label 255) become black.
    """
    return lookup_table(table)[np.asarray(label, dtype=np.uint8)]
