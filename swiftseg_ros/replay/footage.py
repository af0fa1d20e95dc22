"""Footage without ROS: a video file or an image folder read as a one-topic camera bag.

A robot's recordings are often a video or a folder of images, not a rosbag with ground
truth. `FootageInput` offers what replay reads from an `InputBag` (topics, messages in
order, their times), so the footage goes through the same replay loop, node pipeline
and engine as a bag: each frame becomes a `sensor_msgs/Image` (bgr8, as OpenCV decodes
it) on FOOTAGE_TOPIC, stamped by its place in the recording.

- A video: whatever OpenCV reads (mp4, avi, mkv, ...); its frame rate is the clock of
  realtime mode (or `fps` when given).
- An image folder: its images in sorted name order at `fps` (default DEFAULT_FPS).

`input_kind` tells a rosbag2 input, a video and an image folder apart by what they are,
with one line for a path that is none of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterator
from pathlib import Path

import cv2
import numpy as np

from swiftseg_ros import files
from swiftseg_ros.replay.bagio import (
    IMAGE_TYPE,
    STORAGE_SUFFIXES,
    BagError,
    BagMessage,
    TopicInfo,
    msg_class,
    open_bag,
    serialize,
)
from swiftseg_ros.ros.conversions import build_image

FOOTAGE_TOPIC = "/camera/image_raw"
FRAME_ID = "camera"
DEFAULT_FPS = 10.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                  ".wmv", ".flv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
KINDS = ("rosbag", "video", "images")
WHAT_TO_GIVE = "give a rosbag2 folder (or its .mcap/.db3 file), a video file or an image folder"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def input_kind(path) -> str:
    """"rosbag", "video" or "images", from what `path` is; BagError (one line) otherwise."""
    path = Path(path)
    shown = files.shown(path)
    if not path.exists():
        raise BagError(f"{shown} not found; {WHAT_TO_GIVE}")
    if path.is_dir():
        if (path / "metadata.yaml").is_file() or any(
                p.suffix in STORAGE_SUFFIXES for p in path.iterdir()):
            return "rosbag"
        if _images_in(path):
            return "images"
        raise BagError(f"{shown}: a folder with no rosbag2 files and no images "
                       f"({', '.join(IMAGE_SUFFIXES)}); {WHAT_TO_GIVE}")
    suffix = path.suffix.lower()
    if suffix in STORAGE_SUFFIXES:
        return "rosbag"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        raise BagError(f"{shown} is a single image; put it (and more) in a folder and give "
                       "the folder")
    raise BagError(f"{shown}: not a rosbag2 file ({', '.join(STORAGE_SUFFIXES)}), a video "
                   f"({', '.join(VIDEO_SUFFIXES[:4])}, ...) or an image folder; {WHAT_TO_GIVE}")


def open_input(path, fps: float | None = None):
    """The rosbag2 bag (`open_bag`) or the footage (`FootageInput`) at `path`."""
    kind = input_kind(path)
    if kind == "rosbag":
        if fps is not None:
            raise BagError("--fps is for a video or an image folder; a rosbag has its own clock")
        return open_bag(path)
    return FootageInput(Path(path), kind, fps)


class FootageInput:
    """A video or an image folder as a camera bag with one topic (see the module doc)."""

    def __init__(self, path: Path, kind: str, fps: float | None = None):
        if kind not in ("video", "images"):
            raise ValueError(f"footage kind {kind!r}")
        if fps is not None and not (math.isfinite(fps) and 0 < fps <= 1000):
            raise BagError(f"--fps {fps:g}: expected a frame rate above 0 and at most 1000")
        self.path, self.storage, self.damage = path, kind, None
        if kind == "images":
            self._images = _images_in(path)
            self.fps = float(fps or DEFAULT_FPS)
            count = len(self._images)
        else:
            self._images = []
            capture = self._open_video()
            try:
                native = capture.get(cv2.CAP_PROP_FPS)
                frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            finally:
                capture.release()
            if fps is None and not (math.isfinite(native) and 0 < native <= 1000):
                raise BagError(f"{files.shown(path)}: the video states no frame rate; give "
                               "--fps")
            self.fps = float(fps or native)
            count = frames if frames > 0 else None
        self.topics = {FOOTAGE_TOPIC: TopicInfo(IMAGE_TYPE, count)}
        self._image_cls = msg_class(IMAGE_TYPE)

    @property
    def salvaged(self) -> bool:
        return False

    def image_topics(self) -> list[str]:
        return [FOOTAGE_TOPIC]

    def _open_video(self):
        # OpenCV's video reader takes a path only, and a str it cannot encode as UTF-8
        # would crash it: refuse such a path in one line instead
        try:
            os.fsdecode(self.path).encode("utf-8")
        except UnicodeEncodeError:
            raise BagError(f"{files.shown(self.path)}: OpenCV's video reader cannot open a "
                           "path that is not UTF-8; rename the file") from None
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise BagError(f"{files.shown(self.path)}: OpenCV cannot read this video (its "
                           "codec or container); convert it, e.g. ffmpeg -i IN -c:v libx264 "
                           "out.mp4, or give its frames as an image folder")
        return capture

    def _frames(self) -> Iterator[np.ndarray | None]:
        """BGR frames in order (None for an image file that does not decode)."""
        if self.storage == "images":
            for image in self._images:
                frame = files.read_image(image, cv2.IMREAD_COLOR)
                yield frame
            return
        capture = self._open_video()
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        """Each frame as a serialized Image at k / fps seconds (stamp and bag time alike)."""
        if FOOTAGE_TOPIC not in topics:
            return
        header_cls = msg_class("std_msgs/msg/Header")
        time_cls = msg_class("builtin_interfaces/msg/Time")
        for k, frame in enumerate(self._frames()):
            stamp = round(k * 1e9 / self.fps)
            if frame is None:  # the replay rejects it as undecodable, counted and named
                yield BagMessage(FOOTAGE_TOPIC, IMAGE_TYPE, stamp, b"")
                continue
            header = header_cls(stamp=time_cls(sec=stamp // 1_000_000_000,
                                               nanosec=stamp % 1_000_000_000),
                                frame_id=FRAME_ID)
            image = build_image(self._image_cls, frame, "bgr8", header)
            yield BagMessage(FOOTAGE_TOPIC, IMAGE_TYPE, stamp, serialize(image))

    def close(self) -> None:
        pass

    def __enter__(self) -> FootageInput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
