"""The status's advice on frames lost before the node, by middleware and by share lost."""

from pathlib import Path

import pytest
from test_stamps import camera_stamps

from swiftseg_ros.ros.diagnostics import DiagnosticsReporter
from swiftseg_ros.ros.frames import FrameCounters
from swiftseg_ros.ros.transport_hint import (
    PROFILE_NAME,
    hint_applies,
    lost_frames_hint,
    shipped_profile,
)


@pytest.mark.parametrize("environ", [{}, {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"},
                                     {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"},
                                     {"RMW_IMPLEMENTATION": " "}, {"ROS_DISTRO": "jazzy"},
                                     {"ROS_DISTRO": "humble"}])
def test_fast_dds_2_without_a_profile_is_told_to_use_the_shipped_one(environ):
    hint = lost_frames_hint(environ)
    assert f"FASTRTPS_DEFAULT_PROFILES_FILE={shipped_profile()} " in hint
    assert hint.startswith("if the images are over 512 KB")
    assert "camera driver" in hint and "Large best-effort images" in hint


def test_fast_dds_3_is_told_its_own_variable():
    hint = lost_frames_hint({"ROS_DISTRO": "kilted"})
    assert f"FASTDDS_DEFAULT_PROFILES_FILE={shipped_profile()} " in hint


@pytest.mark.parametrize("environ,variable", [
    ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/dds/mine.xml"}, "FASTRTPS_DEFAULT_PROFILES_FILE"),
    ({"ROS_DISTRO": "kilted", "FASTDDS_DEFAULT_PROFILES_FILE": "/etc/dds/mine.xml"},
     "FASTDDS_DEFAULT_PROFILES_FILE"),
    ({"ROS_DISTRO": "kilted", "FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/dds/mine.xml"},
     "FASTRTPS_DEFAULT_PROFILES_FILE")])
def test_fast_dds_with_a_profile_is_told_the_camera_needs_it_with_a_large_segment(environ,
                                                                                    variable):
    hint = lost_frames_hint(environ)
    assert hint.startswith(f"Fast DDS with the XML profile of {variable}:")
    assert "shared-memory segment larger than its images" in hint
    assert PROFILE_NAME not in hint


def test_a_profile_variable_fast_dds_2_does_not_read_counts_as_no_profile():
    # Jazzy's Fast DDS 2.14 reads FASTRTPS_DEFAULT_PROFILES_FILE only
    hint = lost_frames_hint({"ROS_DISTRO": "jazzy",
                             "FASTDDS_DEFAULT_PROFILES_FILE": "/etc/dds/mine.xml"})
    assert f"FASTRTPS_DEFAULT_PROFILES_FILE={shipped_profile()} " in hint


def test_cyclone_is_told_about_its_socket_buffer():
    hint = lost_frames_hint({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})
    assert "SocketReceiveBufferSize" in hint and "rmem_max" in hint
    assert "FASTRTPS" not in hint


def test_another_middleware_is_named_with_the_docs():
    hint = lost_frames_hint({"RMW_IMPLEMENTATION": "rmw_zenoh_cpp"})
    assert "rmw_zenoh_cpp" in hint and "docs/ros.md" in hint


def test_the_shipped_profile_is_where_the_hint_says():
    text = Path(shipped_profile()).read_text()
    assert "<segment_size>16777216</segment_size>" in text
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in text


@pytest.mark.parametrize("lost,received,applies", [
    (0, 100, False), (5, 95, False), (9, 91, False), (10, 90, True), (60, 40, True),
    (3, 0, True)])
def test_the_hint_needs_a_tenth_of_the_camera_frames_lost(lost, received, applies):
    assert hint_applies(lost, received) is applies


def report_losing(lost_of_20: set[int], hint: str):
    """A reporter's status after 60 frames of a 10 Hz camera, those at the positions
    `lost_of_20` of every 20 lost."""
    reporter = DiagnosticsReporter(lost_frames_hint=hint)
    stamps = camera_stamps(10.0, 60, jitter=0.0)
    kept = [s for i, s in enumerate(stamps) if i % 20 not in lost_of_20]
    for stamp in kept:
        reporter.frame_received(stamp, stamp)
    counters = FrameCounters(received=len(kept), processed=len(kept))
    return reporter.report(stamps[-1] + 0.05, counters, None)


def test_heavy_losses_carry_the_hint_in_the_status_message():
    status = report_losing({3, 4, 9, 10, 15, 16}, "use the profile")  # 30% lost
    assert "~18 camera frames lost" in status.message
    assert status.message.endswith("(camera at 10.0 Hz by its stamps): use the profile")


def test_light_losses_and_replay_carry_no_hint():
    light = report_losing({7}, "use the profile")  # 5% lost
    assert "~3 camera frames lost" in light.message and "use the profile" not in light.message
    assert report_losing({3, 4, 9, 10, 15, 16}, "").message.endswith("by its stamps)")


def test_a_camera_started_after_the_node_is_no_transport_loss():
    # activate at t, the camera's first frame 3.05 s later, then every frame of a 10 Hz
    # camera: the 30 frames stamped before the first arrival count as lost, no hint
    reporter = DiagnosticsReporter(lost_frames_hint="use the profile")
    start = 1000.0
    reporter.subscribed(start)
    stamps = [start + 3.05 + k * 0.1 for k in range(40)]
    for stamp in stamps:
        reporter.frame_received(stamp, stamp)
    status = reporter.report(stamps[-1] + 0.05, FrameCounters(received=40, processed=40),
                             None)
    assert dict(status.values)["frames lost before the node (estimated)"] == "30"
    assert "~30 camera frames lost" in status.message
    assert "use the profile" not in status.message
