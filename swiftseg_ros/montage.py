"""PNG montages: a grid of images with row titles and an optional class legend (OpenCV only).

`frame_montage` is the one layout of evaluated frames, shared by `swiftseg-eval` and
replay: a row per frame, input | ground truth | prediction, titled with the frame.
Images are uint8 RGB (H x W x 3) or grey (H x W); every cell is scaled to the size of
the first image, fitted to `cell_width`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

BACKGROUND = (245, 245, 245)
TEXT = (20, 20, 20)
GAP = 4
TITLE_HEIGHT = 22
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"montage images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3]
    raise ValueError(f"montage images must be HxW or HxWx3, got shape {image.shape}")


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[1] > width
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_NEAREST)


def _text(canvas: np.ndarray, text: str, x: int, baseline: int, scale: float = 0.5) -> None:
    cv2.putText(canvas, text, (x, baseline), FONT, scale, TEXT, 1, cv2.LINE_AA)


def _legend(entries: Sequence[tuple[str, Sequence[int]]], width: int) -> np.ndarray:
    """Colour swatches with class names, wrapped into lines of `width` pixels."""
    line_height, swatch = 20, 14
    placed, x, line = [], GAP, 0
    for name, colour in entries:
        (text_w, _), _ = cv2.getTextSize(str(name), FONT, 0.45, 1)
        item_w = swatch + 4 + text_w + 12
        if x + item_w > width and x > GAP:
            x, line = GAP, line + 1
        placed.append((x, line, str(name), tuple(int(c) for c in colour)))
        x += item_w
    strip = np.full(((line + 1) * line_height + GAP, width, 3), BACKGROUND, np.uint8)
    for x, line, name, colour in placed:
        top = line * line_height + 3
        cv2.rectangle(strip, (x, top), (x + swatch, top + swatch), colour, -1)
        cv2.rectangle(strip, (x, top), (x + swatch, top + swatch), TEXT, 1)
        _text(strip, name, x + swatch + 4, top + swatch - 2, 0.45)
    return strip


def make_montage(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None,
                 path: str | Path | None = None, *, cell_width: int = 320,
                 legend: Sequence[tuple[str, Sequence[int]]] | None = None) -> np.ndarray:
    """A grid image (RGB uint8) of `rows` of images, each row under its title; written as a
    PNG to `path` when given. `legend` is a list of (class name, [r, g, b])."""
    rows = [[_as_rgb(im) for im in row] for row in rows]
    if not rows or not any(rows):
        raise ValueError("montage needs at least one image")
    if titles is not None and len(titles) != len(rows):
        raise ValueError(f"{len(titles)} titles for {len(rows)} montage rows")
    first = next(im for row in rows for im in row)
    cell_w = min(int(cell_width), first.shape[1])
    cell_h = max(1, round(first.shape[0] * cell_w / first.shape[1]))
    columns = max(len(row) for row in rows)
    width = GAP + columns * (cell_w + GAP)
    title_h = TITLE_HEIGHT if titles is not None else 0
    parts = []
    for r, row in enumerate(rows):
        band = np.full((title_h + cell_h + GAP, width, 3), BACKGROUND, np.uint8)
        if titles is not None:
            _text(band, str(titles[r]), GAP, TITLE_HEIGHT - 6)
        for c, image in enumerate(row):
            x = GAP + c * (cell_w + GAP)
            band[title_h:title_h + cell_h, x:x + cell_w] = _fit(image, cell_w, cell_h)
        parts.append(band)
    if legend:
        parts.append(_legend(legend, width))
    montage = np.concatenate([np.full((GAP, width, 3), BACKGROUND, np.uint8), *parts])
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _write_image(path, montage):
            raise OSError(f"cannot write the montage to {path} (is it a .png path in a "
                          f"writable folder?)")
    return montage


def frame_montage(frames: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]],
                  path: str | Path | None = None, *, class_names=None,
                  palette=None) -> np.ndarray:
    """Rows of input | ground truth | prediction (colour images), one per frame, each under
    "TITLE: input | ground truth | prediction"; `frames` holds (title, input, ground truth
    or None, prediction). A frame without ground truth shows input | prediction."""
    rows, titles = [], []
    for title, image, truth, prediction in frames:
        rows.append([image, prediction] if truth is None else [image, truth, prediction])
        columns = "input | prediction" if truth is None else \
            "input | ground truth (black: ignored) | prediction"
        titles.append(f"{title}: {columns}")
    legend = None
    if class_names is not None and palette is not None:
        legend = list(zip(class_names, np.asarray(palette).tolist(), strict=False))
    return make_montage(rows, titles, path, legend=legend)


def _write_image(path: Path, rgb: np.ndarray) -> bool:
    """cv2.imwrite, False (not cv2.error) for a path without an image extension or a folder."""
    try:
        return bool(cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
    except cv2.error:
        return False
