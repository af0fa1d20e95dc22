"""What to tell a user whose camera frames are lost before the node, by middleware.

Most such losses with large best-effort images are the middleware's, not the node's
(docs/ros.md, "Large best-effort images"): Fast DDS's built-in shared-memory segment is
512 KB, so a 640x480 rgb8 image (921,600 bytes) goes over UDP fragments, and most are
dropped in the receiving socket (measured on one host, docs/bench/dds_large_images.py:
76 of 300 received at 30 Hz, all 300 with the profile this package ships). Cyclone DDS loses them in its socket
buffer. The node cannot change the camera driver's transport; its diagnostics can say
what to change, and that depends on the middleware this process runs, which the
environment tells (`RMW_IMPLEMENTATION`, unset: Fast DDS, the default of Humble and Jazzy).
"""

from __future__ import annotations

from collections.abc import Mapping

from swiftseg_ros.paths import config_dir

DOCS = "docs/ros.md, 'Large best-effort images'"
PROFILE_NAME = "fastdds_large_images.xml"
# Fast DDS reads its XML profile from either variable (FASTDDS_* since 2.x, FASTRTPS_* kept)
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
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


def lost_frames_hint(environ: Mapping[str, str], profile: str | None = None) -> str:
    """The advice for frames lost before the node under the middleware of `environ`;
    `profile` is the Fast DDS profile to point at (default: the shipped one)."""
    rmw = environ.get("RMW_IMPLEMENTATION", "").strip() or "rmw_fastrtps_cpp"
    if rmw.startswith("rmw_fastrtps"):
        if any(environ.get(name, "").strip() for name in PROFILE_VARIABLES):
            return (f"Fast DDS with the XML profile of {PROFILE_VARIABLES[0]}: the camera "
                    f"driver's process needs a shared-memory segment larger than its "
                    f"images ({DOCS})")
        return (f"large images over Fast DDS's built-in transports: start the camera "
                f"driver (and this node) with {PROFILE_VARIABLES[0]}="
                f"{profile or shipped_profile()} ({DOCS})")
    if rmw.startswith("rmw_cyclonedds"):
        return (f"large images over Cyclone DDS: raise net.core.rmem_max and "
                f"SocketReceiveBufferSize in CYCLONEDDS_URI ({DOCS})")
    return f"transport losses under {rmw} ({DOCS})"


def hint_applies(lost_now: int, received_now: int) -> bool:
    """Whether a period's `lost_now` camera frames (beside `received_now` received) are
    enough of its frames to point at the transport."""
    camera_frames = lost_now + max(received_now, 0)
    return lost_now > 0 and lost_now >= HINT_SHARE * camera_frames
