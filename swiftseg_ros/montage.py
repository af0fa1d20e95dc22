"""PNG montages: a grid of images with row titles and a legend (OpenCV and numpy only).

`frame_montage` is the one layout of evaluated frames, shared by `swiftseg-eval` and
replay: a row per frame, input | prediction over the input | ground truth | errors, or
input | prediction over the input | confidence where there is no ground truth. Images
are uint8 RGB (H x W x 3) or grey (H x W); every cell is scaled to the size of the
first image, fitted to `cell_width`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from swiftseg_ros import files
from swiftseg_ros.errors import ConfigError

BACKGROUND = (245, 245, 245)
TEXT = (20, 20, 20)
GAP = 4
TITLE_HEIGHT = 22
FONT = cv2.FONT_HERSHEY_SIMPLEX
OVERLAY_ALPHA = 0.5  # the node's overlay_alpha default
# On the greyed input of an error map only these two colours appear. Cyan is far (147 in
# RGB distance) from every colour of the shipped palettes (config/palettes/, the synthetic
# scenes) and from the grey; magenta, the first choice, was the sidewalk's.
WRONG_COLOUR = (40, 255, 255)
IGNORED_COLOUR = (0, 0, 0)
CONFIDENCE_MAP = cv2.COLORMAP_VIRIDIS  # dark blue: unsure, yellow: certain


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


def legend_strip(entries: Sequence[tuple[str, Sequence[int]]], width: int) -> np.ndarray:
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


def _confidence_scale(width: int) -> np.ndarray:
    """A strip with the confidence colour scale from 0 % to 100 %."""
    strip = np.full((24, width, 3), BACKGROUND, np.uint8)
    _text(strip, "confidence  0 %", GAP, 16, 0.45)
    left, right = GAP + 130, min(width - 60, GAP + 430)
    ramp = np.linspace(0, 255, max(1, right - left)).astype(np.uint8)[None, :]
    strip[5:19, left:right] = confidence_image(np.repeat(ramp, 14, axis=0))
    _text(strip, "100 %", right + 6, 16, 0.45)
    return strip


def make_montage(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None,
                 path: str | Path | None = None, *, cell_width: int = 320,
                 legend: Sequence[tuple[str, Sequence[int]]] | None = None,
                 confidence_scale: bool = False) -> np.ndarray:
    """A grid image (RGB uint8) of `rows` of images, each row under its title; written as a
    PNG to `path` when given. `legend` is a list of (name, [r, g, b]); `confidence_scale`
    adds the confidence colour scale under it."""
    rows = [[_as_rgb(im) for im in row] for row in rows]
    if not rows or not any(rows):
        raise ValueError("montage needs at least one image")
    if titles is not None and len(titles) != len(rows):
        raise ValueError(f"{len(titles)} titles for {len(rows)} montage rows")
    first = next(im for row in rows for im in row)
    cell_w = int(cell_width)
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
        parts.append(legend_strip(legend, width))
    if confidence_scale:
        parts.append(_confidence_scale(width))
    montage = np.concatenate([np.full((GAP, width, 3), BACKGROUND, np.uint8), *parts])
    if path is not None:
        save_montage(path, montage)
    return montage


def save_montage(path: str | Path, montage: np.ndarray) -> None:
    path = Path(path)
    if not _write_image(path, montage):
        raise OSError(f"cannot write the montage to {files.shown(path)} (is it a .png path "
                      f"in a writable folder?)")


@dataclass
class MontageFrame:
    """One evaluated frame for `frame_montage`: the input (RGB), the predicted class ids,
    and the ground-truth ids (ignore index where not scored) and/or the confidence (uint8,
    the winning class probability times 255) when there are."""

    title: str
    image: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray | None = None
    confidence: np.ndarray | None = None


def colour_ids(ids: np.ndarray, palette, ignore_index: int | None = None) -> np.ndarray:
    """Class ids as palette colours; the ignore index (and ids beyond the palette) in
    IGNORED_COLOUR."""
    table = np.tile(np.asarray(IGNORED_COLOUR, np.uint8), (256, 1))
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    table[:len(colours)] = colours
    if ignore_index is not None and 0 <= ignore_index < 256:
        table[ignore_index] = IGNORED_COLOUR
    return table[np.asarray(ids, np.uint8)]


def blend(image: np.ndarray, colours: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """`colours` laid over `image` with weight `alpha` (the node's ~/overlay)."""
    image = _fit(_as_rgb(image), colours.shape[1], colours.shape[0])
    return cv2.addWeighted(colours, alpha, image, 1.0 - alpha, 0.0)


def _grey(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The input, greyed and dimmed: the background on which one colour stands out."""
    grey = cv2.cvtColor(_fit(_as_rgb(image), width, height), cv2.COLOR_RGB2GRAY)
    return np.repeat((grey // 2 + 64)[:, :, None], 3, axis=2)


def error_map(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray,
              ignore_index: int) -> tuple[np.ndarray, float | None]:
    """(the greyed input with wrong pixels in WRONG_COLOUR and ignored ones in
    IGNORED_COLOUR, the share of scored pixels that are wrong or None)."""
    if prediction.shape != truth.shape:
        prediction = cv2.resize(prediction, (truth.shape[1], truth.shape[0]),
                                interpolation=cv2.INTER_NEAREST)
    shown = _grey(image, *truth.shape[:2])
    ignored = truth == ignore_index
    wrong = (prediction != truth) & ~ignored
    shown[wrong] = WRONG_COLOUR
    shown[ignored] = IGNORED_COLOUR
    scored = int((~ignored).sum())
    return shown, (float(wrong.sum()) / scored if scored else None)


def confidence_image(confidence: np.ndarray) -> np.ndarray:
    """Confidence (uint8, 255 = certain) in the CONFIDENCE_MAP colours, RGB."""
    coloured = cv2.applyColorMap(np.asarray(confidence, np.uint8), CONFIDENCE_MAP)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def frame_montage(frames: Sequence[MontageFrame], path: str | Path | None = None, *,
                  class_names=None, palette=None, ignore_index: int = 255,
                  alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """A row per frame, the one layout of evaluated frames (`swiftseg-eval`, replay):

    - with ground truth: input | prediction over the input | ground truth | errors (the
      greyed input, wrong pixels in WRONG_COLOUR, ignored pixels in IGNORED_COLOUR);
    - without: input | prediction over the input | confidence (CONFIDENCE_MAP), or the
      prediction's colours when there is no confidence either.

    The legend lists what is drawn: the classes that appear, the error and ignored
    colours when an error map or ignored pixels are shown, the confidence scale."""
    rows, titles, seen = [], [], set()
    drawn = {"errors": False, "ignored": False, "confidence": False}
    for frame in frames:
        colours = colour_ids(frame.prediction, palette)
        row = [frame.image, blend(frame.image, colours, alpha)]
        seen.update(np.unique(frame.prediction).tolist())
        if frame.truth is not None:
            seen.update(np.unique(frame.truth).tolist())
            errors, wrong = error_map(frame.image, frame.prediction, frame.truth, ignore_index)
            row += [colour_ids(frame.truth, palette, ignore_index), errors]
            drawn["errors"] = True
            drawn["ignored"] |= bool((frame.truth == ignore_index).any())
            share = "no scored pixel" if wrong is None else f"{100 * wrong:.1f} % wrong"
            columns = f"input | prediction | ground truth | errors ({share})"
        elif frame.confidence is not None:
            row.append(confidence_image(frame.confidence))
            drawn["confidence"] = True
            columns = (f"input | prediction | confidence (mean "
                       f"{100 * float(np.mean(frame.confidence)) / 255:.0f} %)")
        else:
            row.append(colours)
            columns = "input | prediction over the input | prediction"
        rows.append(row)
        titles.append(f"{frame.title}: {columns}")
    legend = []
    if class_names is not None and palette is not None:
        legend = [(name, colour) for i, (name, colour) in
                  enumerate(zip(class_names, np.asarray(palette).tolist(), strict=False))
                  if i in seen]
    if drawn["errors"]:
        legend.append(("wrong (errors)", WRONG_COLOUR))
    if drawn["ignored"]:
        legend.append(("ignored, not scored", IGNORED_COLOUR))
    montage = make_montage(rows, titles, None, legend=legend or None,
                           confidence_scale=drawn["confidence"])
    if path is not None:
        save_montage(path, montage)
    return montage


def _write_image(path: Path, rgb: np.ndarray) -> bool:
    """The montage as an image file (encoded in memory: OpenCV never sees the path), False
    for a path without an image extension or a folder."""
    try:
        files.write_image(path, rgb)
    except (cv2.error, ConfigError, IsADirectoryError):
        return False
    return True
