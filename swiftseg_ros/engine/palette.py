"""Palettes as lookup tables: class id -> RGB colour, on the device and in numpy."""

from __future__ import annotations

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


def colorize(label: np.ndarray, table: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image of `label` (class ids) through the palette `table`.

    Ids outside the palette (e.g. the ignore label 255) become black.
    """
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(table)] = table[:256]
    return lut[np.asarray(label, dtype=np.uint8)]
