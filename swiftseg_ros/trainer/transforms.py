"""Training augmentations of the papers, on numpy arrays with OpenCV (DataLoader workers).

SwiftNet: random scale in [0.5, 2], a random crop padded with the mean colour (image)
and the ignore label (label), horizontal flip. Fast-SCNN adds photometric jitter
(brightness, contrast, saturation). Scale, crop, padding and flip are one affine warp
per array, so only the output crop is ever computed, however large the scale.

Every random draw comes from the `numpy.random.Generator` passed in; the dataset
wrapper makes it from (seed, epoch, index), so an augmented sample does not depend on
the worker that made it nor on where a resumed run restarted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swiftseg_ros.classes import IGNORE_INDEX


@dataclass(frozen=True)
class TrainTransform:
    """Random scale + crop (+ padding) + flip + photometric jitter of an (image, label) pair.

    `image` is HxWx3 uint8 RGB, `label` HxW uint8 class ids; the result has the crop size
    (height, width). `prescale` resizes every frame first (half-resolution training).
    """

    crop: tuple[int, int]
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ignore_index: int = IGNORE_INDEX
    prescale: float = 1.0

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        height, width = label.shape
        crop_h, crop_w = self.crop
        low, high = self.scale_range
        scale = self.prescale * float(rng.uniform(low, high))
        scaled_h, scaled_w = height * scale, width * scale
        # Offset of the crop in the scaled frame; negative when the frame is smaller than
        # the crop, which places the frame at a random position inside the padding.
        y0 = _offset(rng, scaled_h, crop_h)
        x0 = _offset(rng, scaled_w, crop_w)
        flip = self.flip and bool(rng.integers(2))
        matrix = _crop_matrix(scale, x0, y0, crop_w, flip)
        pad = tuple(int(round(m)) for m in self.mean)
        out_image = cv2.warpAffine(image, matrix, (crop_w, crop_h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=pad)
        out_label = cv2.warpAffine(label, matrix, (crop_w, crop_h), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=int(self.ignore_index))
        if self.brightness or self.contrast or self.saturation:
            out_image = photometric_jitter(out_image, rng, self.brightness, self.contrast,
                                           self.saturation)
        return out_image, out_label


@dataclass(frozen=True)
class EvalTransform:
    """Validation: only the optional resize of every frame (`prescale`), no randomness."""

    prescale: float = 1.0

    def __call__(self, image: np.ndarray, label: np.ndarray, rng=None):
        if self.prescale == 1.0:
            return image, label
        height, width = label.shape
        size = (max(1, round(width * self.prescale)), max(1, round(height * self.prescale)))
        shrink = self.prescale < 1.0
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink
                           else cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        return image, label


def photometric_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float,
                       contrast: float, saturation: float) -> np.ndarray:
    """Scale brightness, contrast (around the mean grey) and saturation by random factors
    in 1 +- each amount; uint8 RGB in and out."""
    out = image.astype(np.float32)
    if brightness:
        out *= rng.uniform(1.0 - brightness, 1.0 + brightness)
    if contrast:
        factor = rng.uniform(1.0 - contrast, 1.0 + contrast)
        grey_mean = float(_grey(out).mean())
        out = grey_mean + factor * (out - grey_mean)
    if saturation:
        factor = rng.uniform(1.0 - saturation, 1.0 + saturation)
        grey = _grey(out)[..., None]
        out = grey + factor * (out - grey)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _offset(rng: np.random.Generator, scaled: float, crop: int) -> int:
    span = int(np.floor(scaled)) - crop
    return int(rng.integers(0, span + 1)) if span >= 0 else int(rng.integers(span, 1))


def _crop_matrix(scale: float, x0: int, y0: int, crop_w: int, flip: bool) -> np.ndarray:
    """The 2x3 source-to-crop affine map: pixel centres scaled by `scale` (as cv2.resize
    aligns them), shifted by the crop offset, mirrored inside the crop when flipping."""
    shift = 0.5 * scale - 0.5
    if flip:
        return np.array([[-scale, 0.0, crop_w - 1 - shift + x0],
                         [0.0, scale, shift - y0]])
    return np.array([[scale, 0.0, shift - x0], [0.0, scale, shift - y0]])
