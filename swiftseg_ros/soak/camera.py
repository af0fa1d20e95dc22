"""The synthetic camera: Image or CompressedImage messages of a moving scene, at a size,
encoding and stamp the fault schedule decides, or deliberately broken ones.

Messages are built with the classes the target gives (rclpy's under ROS, rosbags' without),
through the same `conversions` helpers the node uses for its outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

import cv2
import numpy as np

from swiftseg_ros.ros.conversions import build_image

# The ways a frame is broken on purpose; each must be rejected (counted), never crash.
RAW_CORRUPTIONS = ("wrong_step", "truncated_data", "zero_size")
COMPRESSED_CORRUPTIONS = ("garbage_bytes", "truncated_jpeg", "empty_data")
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


@dataclass(frozen=True)
class Shot:
    """What the camera sends next: size, encoding (raw: rgb8/bgr8/mono8; compressed: the
    format's codec, jpeg or png, of bgr8 or mono8), an optional corruption, and how far
    the stamp is moved from the wall clock (jumps backwards and far ahead)."""

    width: int
    height: int
    encoding: str = "rgb8"
    codec: str = "jpeg"
    corruption: str | None = None
    stamp_offset_s: float = 0.0

    def but(self, **changes) -> Shot:
        return replace(self, **changes)


class SyntheticCamera:
    """Builds the messages; `image_cls`, `compressed_cls`, `header_factory(sec, nanosec,
    frame_id)` come from the target."""

    def __init__(self, *, compressed: bool, image_cls, compressed_cls, header_factory):
        self.compressed = compressed
        self._image_cls = image_cls
        self._compressed_cls = compressed_cls
        self._header = header_factory
        self._scenes: dict[tuple[int, int], np.ndarray] = {}
        self.index = 0

    def message(self, shot: Shot, stamp_s: float):
        """The next frame as a message stamped `stamp_s` + the shot's offset."""
        self.index += 1
        stamp = max(stamp_s + shot.stamp_offset_s, 0.0)
        sec = int(stamp)
        header = self._header(sec, int(round((stamp - sec) * 1e9)) % 1_000_000_000,
                              "soak_camera")
        rgb = self._frame(shot.width, shot.height)
        if self.compressed:
            return self._compressed(rgb, shot, header)
        return self._raw(rgb, shot, header)

    def _frame(self, width: int, height: int) -> np.ndarray:
        """A scene (sky, road, two boxes) shifted a little every frame."""
        scene = self._scenes.get((width, height))
        if scene is None:
            scene = np.zeros((height, width, 3), np.uint8)
            scene[: height // 2] = (110, 160, 230)
            scene[height // 2:] = (90, 90, 90)
            scene[height // 3: height // 2 + height // 6, width // 5: width // 3] = (200, 30, 30)
            scene[height // 2: height - height // 8, width // 2: width // 2 + width // 5] = \
                (40, 140, 40)
            self._scenes[(width, height)] = scene
        return np.roll(scene, self.index % max(width // 8, 1), axis=1)

    def _raw(self, rgb: np.ndarray, shot: Shot, header):
        encoding = shot.encoding
        if encoding == "bgr8":
            array = rgb[..., ::-1]
        elif encoding == "mono8":
            array = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        else:
            array = rgb
        msg = build_image(self._image_cls, np.ascontiguousarray(array), encoding, header)
        if shot.corruption == "wrong_step":
            msg.step = msg.step - 1
        elif shot.corruption == "truncated_data":
            msg.data = msg.data[: len(msg.data) // 3]
        elif shot.corruption == "zero_size":
            msg.height = msg.width = msg.step = 0
            msg.data = msg.data[:0]
        return msg

    def _compressed(self, rgb: np.ndarray, shot: Shot, header):
        mono = shot.encoding == "mono8"
        array = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if mono else rgb[..., ::-1]
        ok, encoded = cv2.imencode(".png" if shot.codec == "png" else ".jpg", array)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {shot.codec} frame")
        data = encoded.tobytes()
        if shot.corruption == "garbage_bytes":
            data = np.random.default_rng(self.index).integers(
                0, 256, len(data), dtype=np.uint8).tobytes()
        elif shot.corruption == "truncated_jpeg":
            data = data[: len(data) // 3]
        elif shot.corruption == "empty_data":
            data = b""
        color = "mono8" if mono else "bgr8"
        fmt = f"{color}; {shot.codec} compressed {color}"
        if dataclasses.is_dataclass(self._compressed_cls):  # rosbags: data is an array
            return self._compressed_cls(header=header, format=fmt,
                                        data=np.frombuffer(data, np.uint8).copy())
        return self._compressed_cls(header=header, format=fmt, data=data)
