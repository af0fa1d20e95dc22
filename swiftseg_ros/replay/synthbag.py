"""A synthetic camera bag with ground truth: a `swiftseg-synth --sequence` drive as rosbag2.

Image messages (`rgb8`, or CompressedImage PNG/JPEG as image_transport's compressed
plugin writes them) on one topic and the exact class ids (`mono8`) with the same header
on another, at a camera rate with the small timing jitter of a real driver: the header
stamp is the capture time, the bag (receive) time a few milliseconds later. For the demo,
for tests, and for checking a set-up end to end without a recorded bag. The bag folder
also holds `classes.yaml`, the ground truth's class set, which replay checks checkpoints
against (`swiftseg_ros.replay.classcheck`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.progress import progress as progress_display
from swiftseg_ros.replay.bagio import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    OUTPUT_STORAGES,
    OutputBag,
    msg_class,
)
from swiftseg_ros.replay.classcheck import BAG_CLASSES_FILE
from swiftseg_ros.ros.conversions import build_image
from swiftseg_ros.synthetic.frames import generate_frame
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE

COMPRESSIONS = ("png", "jpeg")
# 2023-11-14T22:13:20Z: a fixed, plausible wall-clock start, so bags are reproducible
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000


@dataclass(frozen=True)
class CameraBagSpec:
    """What `write_camera_bag` writes."""

    frames: int = 120
    width: int = 512
    height: int = 256
    seed: int = 0
    rate_hz: float = 20.0
    jitter: float = 0.1       # capture interval varies by up to this fraction of 1/rate
    storage: str = "mcap"
    image_topic: str = "/camera/image_raw"
    label_topic: str | None = "/camera/labels"
    compression: str | None = None  # None: sensor_msgs/Image rgb8
    frame_id: str = "camera"
    start_ns: int = DEFAULT_START_NS

    def __post_init__(self):
        if self.frames < 1:
            raise ConfigError(f"frames {self.frames}: at least 1")
        # up to 100 Hz the 2-6 ms transport delay never reorders frames (intervals >= 5 ms)
        if not 0 < self.rate_hz <= 100:
            raise ConfigError(f"rate {self.rate_hz} Hz: expected 0 < rate <= 100")
        if not 0 <= self.jitter < 0.5:
            raise ConfigError(f"jitter {self.jitter}: expected 0 <= jitter < 0.5")
        if self.storage not in OUTPUT_STORAGES:
            raise ConfigError(f"storage {self.storage!r}: one of {', '.join(OUTPUT_STORAGES)}")
        if self.compression not in (None, *COMPRESSIONS):
            raise ConfigError(f"compression {self.compression!r}: one of "
                              f"{', '.join(COMPRESSIONS)}, or none for raw images")

    @property
    def image_type(self) -> str:
        return IMAGE_TYPE if self.compression is None else COMPRESSED_IMAGE_TYPE


def capture_times_ns(spec: CameraBagSpec) -> tuple[np.ndarray, np.ndarray]:
    """(header stamps, bag receive times) in ns: a jittered camera clock, 2-6 ms transport."""
    rng = np.random.default_rng([spec.seed, 7])
    period = 1e9 / spec.rate_hz
    intervals = period * (1.0 + rng.uniform(-spec.jitter, spec.jitter, spec.frames))
    intervals[0] = 0.0
    stamps = spec.start_ns + np.cumsum(intervals).astype(np.int64)
    receive = stamps + rng.integers(2_000_000, 6_000_000, spec.frames)
    return stamps, receive


def compressed_image(rgb: np.ndarray, compression: str, header):
    """A CompressedImage as image_transport's compressed plugin makes it from rgb8."""
    ext = ".png" if compression == "png" else ".jpg"
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ConfigError(f"OpenCV cannot encode {compression} images in this build")
    return msg_class(COMPRESSED_IMAGE_TYPE)(
        header=header, format=f"rgb8; {compression} compressed bgr8",
        data=np.frombuffer(data.tobytes(), dtype=np.uint8))


def write_camera_bag(path: str | Path, spec: CameraBagSpec = CameraBagSpec(), *,
                     progress: bool = True) -> Path:
    """Write the bag folder `path` (it must not exist); returns it."""
    path = Path(path)
    header_cls = msg_class("std_msgs/msg/Header")
    time_cls = msg_class("builtin_interfaces/msg/Time")
    image_cls = msg_class(IMAGE_TYPE)
    stamps, receive = capture_times_ns(spec)
    with OutputBag(path, spec.storage) as bag:
        for k in progress_display(range(spec.frames), desc="synthetic bag", unit="frame",
                                  enabled=progress):
            rgb, label = generate_frame(spec.seed, k, spec.width, spec.height, sequence=True)
            stamp = int(stamps[k])
            header = header_cls(stamp=time_cls(sec=stamp // 1_000_000_000,
                                               nanosec=stamp % 1_000_000_000),
                                frame_id=spec.frame_id)
            if spec.compression is None:
                image = build_image(image_cls, rgb, "rgb8", header)
            else:
                image = compressed_image(rgb, spec.compression, header)
            bag.write(spec.image_topic, int(receive[k]), image)
            if spec.label_topic is not None:
                # the labeller's output arrives just after the image it describes
                bag.write(spec.label_topic, int(receive[k]) + 1000,
                          build_image(image_cls, label, "mono8", header))
    write_bag_classes(path)
    return path


def write_bag_classes(path: Path) -> None:
    """The synthetic classes beside a bag (BAG_CLASSES_FILE), as a labeller's would be."""
    classes = [{"name": name, "color": list(colour)}
               for name, colour in zip(CLASS_NAMES, PALETTE, strict=True)]
    (path / BAG_CLASSES_FILE).write_text(yaml.safe_dump({"name": "synthetic", "classes": classes},
                                                        sort_keys=False))
