"""sensor_msgs Image and CompressedImage to numpy and back, duck-typed, without rclpy.

Input: `decode_image(msg)` and `decode_compressed(msg)` return `(array, pixel_format)`
where `array` is uint8, HxWxC (HxW for mono8) and `pixel_format` is one of the engine's
pixel formats (rgb8, bgr8, rgba8, bgra8, mono8: `swiftseg_ros.engine.PIXEL_FORMATS`). They read only the message fields (`height`, `width`, `encoding`,
`is_bigendian`, `step`, `data`; `format` and `data` for CompressedImage), so rclpy's
classes, the `rosbags` dataclasses and any look-alike work. `data` may be bytes,
bytearray, memoryview, array.array('B') (rclpy), a uint8 numpy array (rosbags) or a
list of ints (slow, but accepted).

Encodings and what they become:

| encoding | result | how |
|---|---|---|
| rgb8, bgr8, rgba8, bgra8, mono8 | same | a view of `data`, no copy (a padded `step` gives a strided view) |
| mono16 | mono8 | `value >> 8`: a fixed scale, so brightness is comparable across frames |
| 16UC1 | mono8 | per-frame min-max of the non-zero pixels to 1..255 (linear, rounded), 0 (no depth) stays 0, like rviz2's "normalize range" |
| yuv422 / uyvy, yuv422_yuy2 / yuyv | rgb8 | OpenCV, BT.601 video range (Y 16-235) as V4L2 cameras send it; width must be even |
| nv12, nv21 | rgb8 | OpenCV, BT.601 video range; `data` holds `step * height * 3 / 2` bytes (sensor_msgs' height scaling 1.5), even width and height |
| bayer_rggb8, bayer_bggr8, bayer_gbrg8, bayer_grbg8 | rgb8 | OpenCV demosaicing |

16-bit data with `is_bigendian` set is byte-swapped, so it is never a reason to reject;
for 8-bit encodings the flag has no meaning and is ignored.

CompressedImage: the `format` is what image_transport's compressed plugin writes
(`"jpeg"`, `"png"`, `"rgb8; jpeg compressed bgr8"`, `"mono16; png compressed mono16"`...).
The bytes are decoded with `cv2.imdecode(..., IMREAD_UNCHANGED)`: colour comes out in the
order the publisher compressed (`bgr8` unless the format says `compressed rgb8`), 16-bit
PNG is scaled like mono16, or like 16UC1 when the original encoding was 16UC1. The
`compressedDepth` transport (a different byte layout) is rejected with a reason, and so
is JPEG or PNG data that ends before its end marker (truncated: OpenCV 4.6 would decode
it with only a warning).

A malformed message raises `ImageRejected` (a ValueError) whose message is the reason;
no other exception leaves `decode_image` or `decode_compressed`.

Output: `image_fields`, `fill_image`, `build_image` and `to_rosbags_image` turn an engine
result (label/confidence `mono8`, color/overlay `rgb8`, see `OUTPUT_ENCODINGS`) into Image
fields with the input header unchanged, `step` set and `data` copied in one block (the
engine's arrays are reused buffers, so a message must not keep a view of them). rclpy
messages get an `array.array('B')` (its `data` setter checks every element of anything
else), rosbags messages a numpy array.
"""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Mapping

import cv2
import numpy as np

OUTPUT_ENCODINGS: Mapping[str, str] = {
    "label": "mono8",
    "confidence": "mono8",
    "color": "rgb8",
    "overlay": "rgb8",
}

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_SIXTEEN_BIT = ("mono16", "16UC1")
# ROS names the deprecated and the fourcc spelling of the same layout (image_encodings.hpp)
_YUV422 = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}
_NV420 = {"nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21}
# OpenCV names a Bayer pattern by the second row's 2nd and 3rd pixels, so ROS's rggb
# (top-left red) is OpenCV's "BG" (the same mapping cv_bridge uses); the classic names
# exist in every OpenCV 4 and 5 release.
_BAYER = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}

SUPPORTED_ENCODINGS = (*_CHANNELS, *_SIXTEEN_BIT, *_YUV422, *_NV420, *_BAYER)
_BY_LOWER = {name.lower(): name for name in SUPPORTED_ENCODINGS}


class ImageRejected(ValueError):
    """An image message that cannot be used; the message says why."""


# ---------------------------------------------------------------------------- input


def decode_image(msg) -> tuple[np.ndarray, str]:
    """A sensor_msgs/Image as (uint8 array, pixel_format); ImageRejected if malformed."""
    try:
        return _decode_image(msg)
    except ImageRejected:
        raise
    except (cv2.error, ValueError, TypeError, OverflowError, MemoryError) as exc:
        # the checks below should leave nothing for OpenCV or numpy to refuse; if one
        # still does, the frame is unusable, not the node
        raise ImageRejected(f"cannot convert the image: {type(exc).__name__}: {exc}") from exc


def decode_compressed(msg) -> tuple[np.ndarray, str]:
    """A sensor_msgs/CompressedImage as (uint8 array, pixel_format); ImageRejected if bad."""
    try:
        return _decode_compressed(msg)
    except ImageRejected:
        raise
    except (cv2.error, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise ImageRejected(f"cannot decode the compressed image: {type(exc).__name__}: {exc}") \
            from exc


def _field(msg, name: str):
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ImageRejected(f"not an image message: it has no {name!r} field") from None


def _count(msg, name: str) -> int:
    value = _field(msg, name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ImageRejected(f"{name} is {value!r}, expected an unsigned integer")
    if value < 0:
        raise ImageRejected(f"{name} is {value}, expected an unsigned integer")
    return int(value)


def _encoding(msg) -> str:
    value = _field(msg, "encoding")
    if not isinstance(value, str):
        raise ImageRejected(f"encoding is {value!r}, expected a string such as 'rgb8'")
    name = _BY_LOWER.get(value.strip().lower())
    if name is None:
        raise ImageRejected(
            f"unsupported encoding {value!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    return name


def _byte_view(data) -> np.ndarray:
    """`data` as a 1-D uint8 array, a view of the caller's buffer wherever it is one."""
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8:
            return data.reshape(-1)
        return _ints_to_bytes(data)
    if isinstance(data, array.array):
        if data.typecode != "B":
            raise ImageRejected(
                f"data is an array.array of type {data.typecode!r}, expected type 'B' (uint8)"
            )
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, (bytes, bytearray)):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            values = np.asarray(data)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ImageRejected(f"data is a list that is not all integers ({exc})") from None
        return _ints_to_bytes(values)
    if isinstance(data, str):
        raise ImageRejected("data is a str, expected bytes or a sequence of 0-255 integers")
    try:
        view = memoryview(data)
    except TypeError:
        raise ImageRejected(
            f"data is a {type(data).__name__}, expected bytes, array.array('B'), "
            "a uint8 numpy array or a list of 0-255 integers"
        ) from None
    if view.c_contiguous:
        return np.frombuffer(view, dtype=np.uint8)
    return _ints_to_bytes(np.asarray(view))


def _ints_to_bytes(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if values.dtype.kind not in "iu":
        raise ImageRejected(f"data holds {values.dtype} values, expected 0-255 integers")
    low, high = values.min(), values.max()
    if low < 0 or high > 255:
        raise ImageRejected(f"data holds values from {low} to {high}, expected 0-255")
    return values.astype(np.uint8).reshape(-1)


def _decode_image(msg) -> tuple[np.ndarray, str]:
    height = _count(msg, "height")
    width = _count(msg, "width")
    step = _count(msg, "step")
    bigendian = _count(msg, "is_bigendian") != 0
    encoding = _encoding(msg)
    if width == 0 or height == 0:
        raise ImageRejected(f"image is empty ({width}x{height} pixels)")

    rows = height
    if encoding in _CHANNELS:
        bytes_per_pixel = _CHANNELS[encoding]
    elif encoding in _SIXTEEN_BIT:
        bytes_per_pixel = 2
    elif encoding in _YUV422:
        bytes_per_pixel = 2
        if width % 2:
            raise ImageRejected(f"{encoding} needs an even width (4:2:2 pairs), got {width}")
    elif encoding in _NV420:
        bytes_per_pixel = 1
        if width % 2 or height % 2:
            raise ImageRejected(
                f"{encoding} needs an even width and height (4:2:0), got {width}x{height}"
            )
        rows = height * 3 // 2
    else:
        bytes_per_pixel = 1

    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageRejected(
            f"step {step} is smaller than width {width} x {bytes_per_pixel} bytes per pixel "
            f"({row_bytes}) for {encoding}"
        )
    data = _byte_view(_field(msg, "data"))
    if data.size != step * rows:
        expected = f"step {step} x {rows} rows" + (
            f" (height {height} x 1.5 for {encoding})" if rows != height else ""
        )
        raise ImageRejected(
            f"data has {data.size} bytes, expected {expected} = {step * rows}"
        )

    # a view: padding bytes at the end of each row are skipped by the row stride
    grid = data.reshape(rows, step)[:, :row_bytes]
    if encoding in _CHANNELS:
        if encoding == "mono8":
            return grid, "mono8"
        return grid.reshape(height, width, bytes_per_pixel), encoding
    if encoding in _SIXTEEN_BIT:
        words = grid.view(">u2" if bigendian else "<u2")
        if encoding == "mono16":
            return (words >> 8).astype(np.uint8), "mono8"
        return _depth_to_mono8(words), "mono8"
    if encoding in _YUV422:
        return cv2.cvtColor(grid.reshape(height, width, 2), _YUV422[encoding]), "rgb8"
    if encoding in _NV420:
        return cv2.cvtColor(grid, _NV420[encoding]), "rgb8"
    return cv2.cvtColor(grid, _BAYER[encoding]), "rgb8"


def _depth_to_mono8(depth: np.ndarray) -> np.ndarray:
    """16-bit depth (0 = no measurement) stretched per frame: nearest 1, farthest 255,
    linear and rounded in between, 0 stays 0."""
    if not depth.dtype.isnative or depth.strides[0] % depth.itemsize:
        # OpenCV takes native byte order and rows aligned to the element size only
        depth = np.ascontiguousarray(depth, dtype=np.uint16)
    high = int(depth.max())
    if high == 0:
        return np.zeros(depth.shape, dtype=np.uint8)
    # the smallest non-zero value in one pass: 0 wraps around to 65535 when 1 is taken off
    low = int((depth - np.uint16(1)).min()) + 1
    if high == low:
        out = np.full(depth.shape, 255, dtype=np.uint8)
    else:
        scale = 254.0 / (high - low)
        out = cv2.convertScaleAbs(depth, alpha=scale, beta=1.0 - low * scale)
    out[depth == 0] = 0
    return out


def _parse_compressed_format(text: str) -> tuple[str, str]:
    """(original encoding, compressed channel order) from image_transport's format string.

    "rgb8; jpeg compressed bgr8" -> ("rgb8", "bgr8"); "jpeg" -> ("", "").
    """
    original, _, rest = text.partition(";")
    if not rest:
        return "", ""
    words = rest.split()
    target = words[words.index("compressed") + 1] if "compressed" in words[:-1] else ""
    return original.strip(), target.strip()


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_SIGNATURE, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


def _check_complete(data: np.ndarray, fmt: str) -> None:
    """Reject JPEG or PNG data that stops before its end marker: OpenCV 4.6 (Ubuntu 24.04's,
    ROS Jazzy's) decodes a JPEG cut short (a frame truncated in transport or by the camera)
    with a grey lower part and only a warning on stderr, so it would be segmented as if it
    were whole; newer OpenCV refuses it without saying why. A few encoders pad the end with
    zero bytes, which are allowed."""
    head = data[:8].tobytes()
    if head.startswith(_JPEG_START):
        if not data[-64:].tobytes().rstrip(b"\x00").endswith(_JPEG_END):
            raise ImageRejected(
                f"truncated JPEG: {data.size} bytes of format {fmt!r} without the "
                "end-of-image marker (cut short in transport or by the camera)")
    elif head == _PNG_SIGNATURE and _PNG_END not in data[-16:].tobytes():
        raise ImageRejected(
            f"truncated PNG: {data.size} bytes of format {fmt!r} without the IEND chunk")


def _decode_compressed(msg) -> tuple[np.ndarray, str]:
    fmt = _field(msg, "format")
    if not isinstance(fmt, str):
        raise ImageRejected(f"format is {fmt!r}, expected a string such as 'jpeg'")
    if "compresseddepth" in fmt.lower():
        raise ImageRejected(
            f"format {fmt!r} is the compressedDepth transport, which is not supported: "
            "use the raw or the compressed transport"
        )
    data = _byte_view(_field(msg, "data"))
    if data.size == 0:
        raise ImageRejected(f"compressed image (format {fmt!r}) has no data")
    _check_complete(data, fmt)
    image = cv2.imdecode(np.ascontiguousarray(data), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageRejected(
            f"cannot decode {data.size} bytes of format {fmt!r} as an image "
            "(corrupt or not JPEG/PNG)"
        )
    original, target = _parse_compressed_format(fmt.lower())
    if image.dtype == np.uint16:
        if original == "16uc1" and image.ndim == 2:
            image = _depth_to_mono8(image)
        else:
            image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageRejected(
            f"compressed image (format {fmt!r}) decodes to {image.dtype} pixels, "
            "expected 8 or 16 bit"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image, "mono8"
    channels = image.shape[2]
    rgb_order = target.startswith("rgb")
    if channels == 3:
        return image, "rgb8" if rgb_order else "bgr8"
    if channels == 4:
        return image, "rgba8" if rgb_order else "bgra8"
    raise ImageRejected(
        f"compressed image (format {fmt!r}) decodes to {channels} channels, expected 1, 3 or 4"
    )


# --------------------------------------------------------------------------- output


def image_fields(array_in: np.ndarray, encoding: str, header) -> dict:
    """The sensor_msgs/Image fields for `array_in`, with `data` as bytes (one copy)."""
    arr, fields = _output_fields(array_in, encoding, header)
    fields["data"] = arr.tobytes()
    return fields


def fill_image(msg, array_in: np.ndarray, encoding: str, header):
    """Set the Image fields of an existing message object (rclpy or rosbags); returns it.

    `data` becomes an array.array('B') (rclpy's own type, which its setter takes without
    checking every element) unless the message already holds a numpy array (rosbags),
    in which case it becomes a fresh uint8 array; either way one block copy.
    """
    numpy_data = isinstance(getattr(msg, "data", None), np.ndarray)
    arr, fields = _output_fields(array_in, encoding, header)
    fields["data"] = _message_data(arr, numpy_data=numpy_data)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def build_image(image_cls, array_in: np.ndarray, encoding: str, header):
    """A new Image of `image_cls`: rclpy's class, or a rosbags dataclass (which has no
    field defaults and keeps `data` as a numpy array)."""
    if dataclasses.is_dataclass(image_cls):
        arr, fields = _output_fields(array_in, encoding, header)
        return image_cls(**fields, data=_message_data(arr, numpy_data=True))
    return fill_image(image_cls(), array_in, encoding, header)


def to_rosbags_image(array_in: np.ndarray, encoding: str, header, typestore=None):
    """A rosbags sensor_msgs/msg/Image (ROS 2 Humble type store unless one is given),
    ready for `typestore.serialize_cdr` and a rosbag2 writer; `header` is a rosbags
    std_msgs/msg/Header, usually the input message's."""
    if typestore is None:
        from rosbags.typesys import Stores, get_typestore

        typestore = get_typestore(Stores.ROS2_HUMBLE)
    return build_image(typestore.types["sensor_msgs/msg/Image"], array_in, encoding, header)


def _output_fields(array_in: np.ndarray, encoding: str, header) -> tuple[np.ndarray, dict]:
    """(C-contiguous array, Image fields without data), or ValueError naming the mismatch."""
    if encoding not in _CHANNELS:
        raise ValueError(f"output encoding {encoding!r} is not one of {', '.join(_CHANNELS)}")
    arr = np.asarray(array_in)
    channels = _CHANNELS[encoding]
    if arr.dtype != np.uint8:
        raise ValueError(f"{encoding} output must be uint8, got {arr.dtype}")
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != (2 if channels == 1 else 3) or (channels > 1 and arr.shape[2] != channels):
        shape = "(height, width)" if channels == 1 else f"(height, width, {channels})"
        raise ValueError(f"{encoding} output must be shaped {shape}, got {arr.shape}")
    height, width = arr.shape[:2]
    fields = {
        "header": header,
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * channels,
    }
    return np.ascontiguousarray(arr), fields


def _message_data(arr: np.ndarray, *, numpy_data: bool):
    flat = arr.reshape(-1)
    if numpy_data:
        return flat.copy()
    out = array.array("B")
    out.frombytes(flat)
    return out
