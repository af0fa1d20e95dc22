"""What to tell a user whose camera frames are lost before the node, by middleware.

Most such losses with large best-effort images are the middleware's, not the node's
(docs/ros.md, "Large best-effort images"): Fast DDS's built-in shared-memory segment is
512 KB, which a 640x480 rgb8 image (921,600 bytes) does not fit, and most such images sent
best effort never arrive (measured on one host, docs/bench/dds_large_images.py: 72 of 300
at 30 Hz; all 300 with the profile this package ships). Cyclone DDS loses them in its
socket buffer. The node cannot change the camera driver's transport; its diagnostics can
say what to change, and that depends on the middleware this process runs, which the
environment tells (`RMW_IMPLEMENTATION`, unset: Fast DDS, the default of Humble and
Jazzy; `ROS_DISTRO` for the variable Fast DDS reads its profile from). Frames lost are
not always the transport's (a busy node's depth-1 queue, a camera's own drops): the
advice says "if".
"""

from __future__ import annotations

from collections.abc import Mapping

from swiftseg_ros.paths import config_dir

DOCS = "docs/ros.md, 'Large best-effort images'"
PROFILE_NAME = "fastdds_large_images.xml"
# The variable Fast DDS reads its XML profile from: FASTRTPS_* in Fast DDS 2.x (Humble,
# Iron, Jazzy), FASTDDS_* in 3.x (Kilted on, which still reads FASTRTPS_* with a warning)
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
PROFILE_VARIABLE_2 = "FASTRTPS_DEFAULT_PROFILES_FILE"
PROFILE_VARIABLE_3 = "FASTDDS_DEFAULT_PROFILES_FILE"
# A period's losses under this share of the camera's frames get no hint: jitter and a
# paused camera read as a few lost frames (stamps.py), a transport that drops large
# images loses far more (three in four in the measurement above)
HINT_SHARE = 0.1


def shipped_profile() -> str:
    """Where this package's Fast DDS profile is (its share folder's config/)."""
    try:
        return str(config_dir() / PROFILE_NAME)
    except FileNotFoundError:  # neither a checkout nor installed: name it as the docs do
        return f"config/{PROFILE_NAME}"


def profile_variables(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The profile variables the Fast DDS of `environ`'s ROS distribution reads, the one to
    advise first. Unknown (PyPI's Jazzy wheels set no ROS_DISTRO): FASTRTPS_* alone, which
    every Fast DDS reads."""
    distro = environ.get("ROS_DISTRO", "").strip().lower()
    if not distro or distro in FAST_DDS_2_DISTROS:
        return (PROFILE_VARIABLE_2,)
    return (PROFILE_VARIABLE_3, PROFILE_VARIABLE_2)


def lost_frames_hint(environ: Mapping[str, str]) -> str:
    """The advice for frames lost before the node under the middleware of `environ`."""
    rmw = environ.get("RMW_IMPLEMENTATION", "").strip() or "rmw_fastrtps_cpp"
    if rmw.startswith("rmw_fastrtps"):
        variables = profile_variables(environ)
        given = next((name for name in variables if environ.get(name, "").strip()), None)
        if given:
            return (f"Fast DDS with the XML profile of {given}: the camera driver's process "
                    f"needs it too, with a shared-memory segment larger than its images "
                    f"({DOCS})")
        return (f"if the images are over 512 KB (640x480 rgb8 is 900 KB), Fast DDS's "
                f"built-in transports lose most of them: start the camera driver (and this "
                f"node) with {variables[0]}={shipped_profile()} ({DOCS})")
    if rmw.startswith("rmw_cyclonedds"):
        return (f"if the images are large, Cyclone DDS loses them in its socket buffer: "
                f"raise net.core.rmem_max and SocketReceiveBufferSize in CYCLONEDDS_URI "
                f"({DOCS})")
    return f"transport losses under {rmw}? ({DOCS})"


def hint_applies(lost_now: int, received_now: int) -> bool:
    """Whether a period's `lost_now` camera frames (beside `received_now` received) are
    enough of its frames to point at the transport."""
    camera_frames = lost_now + max(received_now, 0)
    return lost_now > 0 and lost_now >= HINT_SHARE * camera_frames
