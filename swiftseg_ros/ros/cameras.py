"""Camera names of a multi-camera node and the topic names derived from them.

With the `cameras` parameter the node serves several cameras with one model. Each camera
name becomes a namespace of relative topic names, so that the node's own namespace and
ROS remapping apply to them as to any topic:

    inputs   <camera>/image  (or <camera>/image/compressed)   <camera>/camera_info
    outputs  ~/<camera>/label  ~/<camera>/color  ~/<camera>/confidence
             ~/<camera>/overlay  ~/<camera>/camera_info        (and one ~/label_info)

A name is therefore checked as a relative ROS name (rcl's topic name rules: tokens of
letters, digits and underscores, not starting with a digit, joined by single slashes; no
leading slash or tilde, no substitution braces), because a bad one would otherwise fail
only later, inside rclpy, when a subscription is created.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from swiftseg_ros.errors import ConfigError

# The default of the `max_cameras` parameter: one worker serves every camera, so beyond a
# dozen or so a second node (or a GPU) is the better answer than a longer round robin.
DEFAULT_MAX_CAMERAS = 16
OUTPUT_NAMES = ("label", "color", "confidence", "overlay")

_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(rf"^{_TOKEN}(/{_TOKEN})*$")
_NAME_RULE = ("letters, digits and underscores, not starting with a digit, optionally "
              "in parts joined by single slashes (front, arm/left)")


def check_camera_name(name) -> str:
    """`name` if it is a usable relative ROS name for a camera, else a one-line ConfigError."""
    if not isinstance(name, str):
        raise ConfigError(f"parameter 'cameras': {name!r} is not a string: give camera "
                          "names such as [front, down]")
    if not _NAME_RE.match(name):
        raise ConfigError(f"parameter 'cameras': {name!r} is not a valid camera name (a "
                          f"relative ROS name): use {_NAME_RULE}")
    if "__" in name:
        # ROS reserves double underscores (__node, __ns) for its own arguments
        raise ConfigError(f"parameter 'cameras': {name!r} contains '__', which ROS "
                          "reserves: use single underscores")
    return name


def check_camera_names(names: Sequence, max_cameras: int | None = DEFAULT_MAX_CAMERAS
                       ) -> tuple[str, ...]:
    """The camera names as a tuple, each checked, with no duplicates and at most
    `max_cameras` of them (None: any number); the first problem as a one-line ConfigError."""
    if isinstance(names, (str, bytes)):
        raise ConfigError(f"parameter 'cameras' is {names!r}, a single string: give a list "
                          "of camera names such as [front, down]")
    checked = tuple(check_camera_name(name) for name in names)
    seen: set[str] = set()
    for name in checked:
        if name in seen:
            raise ConfigError(f"parameter 'cameras' names {name!r} twice: each camera once")
        seen.add(name)
    if max_cameras is not None and len(checked) > max_cameras:
        raise ConfigError(f"parameter 'cameras' has {len(checked)} cameras, more than "
                          f"max_cameras ({max_cameras}): run a second node for the others, "
                          "or raise max_cameras")
    return checked


@dataclass(frozen=True)
class CameraTopics:
    """The topic names of one camera, relative (as the node creates them)."""

    camera: str
    image: str
    camera_info: str
    outputs: dict[str, str]
    camera_info_out: str


def camera_topics(camera: str, compressed: bool = False) -> CameraTopics:
    """The input and output topics of `camera` (see the module docstring)."""
    return CameraTopics(
        camera=camera,
        image=f"{camera}/image/compressed" if compressed else f"{camera}/image",
        camera_info=f"{camera}/camera_info",
        outputs={name: f"~/{camera}/{name}" for name in OUTPUT_NAMES},
        camera_info_out=f"~/{camera}/camera_info",
    )
