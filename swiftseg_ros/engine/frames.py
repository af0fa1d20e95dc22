"""Pixel formats the engine takes, the check every frame passes, and the host copy that
puts any of them into the engine's interleaved RGB buffer.

A frame is a numpy uint8 array (height, width, channels) with any strides (a padded
row step, a flipped or Fortran-ordered view). Other encodings (yuv, 16-bit,
compressed) are converted before the engine.

Channel order is settled during the host copy, which has to happen anyway (into the
pinned buffer on CUDA): OpenCV's SIMD colour conversion runs at memcpy speed (0.03 ms
for 1024x512 here, where a strided numpy copy takes 1.3 ms and per-channel device ops
~1 ms on the CPU), a 4-channel frame uploads only 3 channels, and the device side
is then one fused normalization op for every format.
"""

from __future__ import annotations

import cv2
import numpy as np

from swiftseg_ros.errors import SwiftsegError

# channels in memory, and the OpenCV conversion to RGB (None: already RGB)
PIXEL_FORMATS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


class FrameError(SwiftsegError, ValueError):
    """A frame the engine cannot take (dtype, shape, size); the engine stays usable."""


def channels_of(pixel_format: str) -> int:
    if pixel_format not in PIXEL_FORMATS:
        raise FrameError(f"pixel format {pixel_format!r} is not supported; use one of "
                         f"{', '.join(PIXEL_FORMATS)} (convert other encodings first)")
    return PIXEL_FORMATS[pixel_format][0]


def copy_as_rgb(frame: np.ndarray, pixel_format: str, out: np.ndarray) -> None:
    """Write a checked (height, width, channels) frame into `out` (height, width, 3) as RGB."""
    code = PIXEL_FORMATS[pixel_format][1]
    if code is None:
        np.copyto(out, frame, casting="no")
        return
    # OpenCV reads any strides (copying internally only for ones a Mat cannot describe:
    # negative or non-packed pixels) and writes into `out`, whose shape and type fit
    cv2.cvtColor(frame, code, dst=out)


def frame_as_hwc(frame, pixel_format: str, max_size: tuple[int, int]) -> np.ndarray:
    """The frame as a (height, width, channels) uint8 view, or FrameError saying why not.

    mono8 may come as (height, width). Never copies; strides are kept as they are.
    """
    channels = channels_of(pixel_format)
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame is a {type(frame).__name__}, expected a numpy uint8 array")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame dtype is {frame.dtype}, expected uint8 for {pixel_format} "
                         f"(convert 16-bit or float images before the engine)")
    if frame.ndim == 2 and channels == 1:
        frame = frame[:, :, None]
    if frame.ndim != 3:
        raise FrameError(f"frame shape {frame.shape} is not (height, width, {channels}) "
                         f"for {pixel_format}")
    if frame.shape[2] != channels:
        raise FrameError(f"frame has {frame.shape[2]} channels but {pixel_format} has "
                         f"{channels}; check the image encoding")
    height, width = frame.shape[:2]
    if height == 0 or width == 0:
        raise FrameError(f"frame is empty ({width}x{height})")
    max_width, max_height = max_size
    if width > max_width or height > max_height:
        raise FrameError(f"frame {width}x{height} is larger than max_input_size "
                         f"{max_width}x{max_height}; raise max_input_size if intended")
    return frame
