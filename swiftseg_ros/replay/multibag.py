"""A synthetic bag of several cameras at different rates and sizes, with ground truth.

Each camera is a `write_camera_bag` camera (`synthbag.py`: a synthetic drive, a jittered
camera clock, a few milliseconds of transport delay) with its own scene seed, size and
rate, on the topics the node derives from the camera's name: images on `/<camera>/image`
(or `/<camera>/image/compressed`) and mono8 class ids on `/<camera>/labels`, each header
with the camera's frame_id `<camera>_optical`. All cameras' messages are written in
receive-time order into one bag, for the multi-camera demo, replay tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.replay.bagio import IMAGE_TYPE, OutputBag, msg_class
from swiftseg_ros.replay.synthbag import (
    DEFAULT_START_NS,
    CameraBagSpec,
    capture_times_ns,
    compressed_image,
    write_bag_classes,
)
from swiftseg_ros.ros.cameras import camera_topics, check_camera_names
from swiftseg_ros.ros.conversions import build_image
from swiftseg_ros.synthetic.frames import generate_frame


@dataclass(frozen=True)
class CameraSpec:
    """One camera of a multi-camera bag."""

    name: str
    width: int
    height: int
    rate_hz: float
    seed: int = 0


# the demo's cameras: a drone's front camera, its down camera and a small rear one
DEMO_CAMERAS = (
    CameraSpec("front", 512, 256, 20.0, seed=0),
    CameraSpec("down", 320, 256, 10.0, seed=1),
    CameraSpec("rear", 256, 128, 5.0, seed=2),
)


def write_multi_camera_bag(path: str | Path, cameras=DEMO_CAMERAS, *, seconds: float = 4.0,
                           storage: str = "mcap", compression: str | None = None,
                           labels: bool = True, start_ns: int = DEFAULT_START_NS) -> Path:
    """Write the bag folder `path` (it must not exist) with `seconds` of every camera."""
    path = Path(path)
    check_camera_names([camera.name for camera in cameras], max_cameras=None)
    if seconds <= 0:
        raise ConfigError(f"seconds {seconds}: more than 0")
    header_cls = msg_class("std_msgs/msg/Header")
    time_cls = msg_class("builtin_interfaces/msg/Time")
    image_cls = msg_class(IMAGE_TYPE)
    messages = []  # (receive ns, order, topic, message factory)
    for order, camera in enumerate(cameras):
        spec = CameraBagSpec(frames=max(1, int(seconds * camera.rate_hz)), width=camera.width,
                             height=camera.height, seed=camera.seed, rate_hz=camera.rate_hz,
                             storage=storage, compression=compression,
                             frame_id=f"{camera.name}_optical", start_ns=start_ns)
        spec = replace(spec, image_topic="/" + camera_topics(
            camera.name, compressed=compression is not None).image,
            label_topic=f"/{camera.name}/labels" if labels else None)
        stamps, receive = capture_times_ns(spec)
        for k in range(spec.frames):
            messages.append((int(receive[k]), order, k, spec, int(stamps[k])))
    messages.sort(key=lambda item: (item[0], item[1]))
    with OutputBag(path, storage) as bag:
        for receive_ns, _, k, spec, stamp in messages:
            rgb, label = generate_frame(spec.seed, k, spec.width, spec.height, sequence=True)
            header = header_cls(stamp=time_cls(sec=stamp // 1_000_000_000,
                                               nanosec=stamp % 1_000_000_000),
                                frame_id=spec.frame_id)
            image = (build_image(image_cls, rgb, "rgb8", header) if spec.compression is None
                     else compressed_image(rgb, spec.compression, header))
            bag.write(spec.image_topic, receive_ns, image)
            if spec.label_topic is not None:
                bag.write(spec.label_topic, receive_ns + 1000,
                          build_image(image_cls, label, "mono8", header))
    write_bag_classes(path)
    return path
