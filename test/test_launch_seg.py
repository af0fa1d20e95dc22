"""launch_testing: `seg.launch.py` starts the node and drives it to active by itself.

Needs a ROS 2 installation with launch_testing and this package installed (`colcon
test --packages-select swiftseg_ros`); skipped otherwise. The node runs in the
namespace /swiftseg_launch_test on the CPU with the default demo weights.

The module-level skip is safe here, unlike in the other test modules: it fires only where
launch_testing is missing, and so is launch_testing's pytest plugin, the one that imports
every test module while collecting and would turn the skip into a skipped session.
"""

import os
import time
import unittest

import pytest

pytest.importorskip("launch_testing")
rclpy = pytest.importorskip("rclpy")

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable  # noqa: E402
from launch.launch_description import LaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402

NAMESPACE = "swiftseg_launch_test"
ACTIVE_TIMEOUT_S = 120.0  # start, configure (engine build and warm-up on a CPU), activate


@pytest.mark.launch_test
def generate_test_description():
    launch_file = os.path.join(
        get_package_share_directory("swiftseg_ros"), "launch", "seg.launch.py")
    return LaunchDescription([
        # rcutils logs to stderr (since Foxy, ros2/rcutils#196) and proc_output.assertWaitFor
        # reads stderr by default (since ros2/launch#378, Foxy; Humble and Jazzy alike); the
        # test names the stream anyway. Line-buffered, so each line arrives when logged.
        SetEnvironmentVariable("RCUTILS_LOGGING_BUFFERED_STREAM", "1"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(launch_file),
            launch_arguments={"namespace": NAMESPACE, "device": "cpu"}.items(),
        ),
        launch_testing.actions.ReadyToTest(),
    ])


class TestSegLaunch(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("seg_launch_test_probe")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_node_reaches_active(self):
        client = self.node.create_client(GetState, f"/{NAMESPACE}/swiftseg/get_state")
        deadline = time.monotonic() + ACTIVE_TIMEOUT_S
        label = "unknown (get_state never answered)"
        while time.monotonic() < deadline:
            if not client.wait_for_service(timeout_sec=1.0):
                continue
            future = client.call_async(GetState.Request())
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=5.0)
            if future.done() and future.result() is not None:
                label = future.result().current_state.label
                if label == "active":
                    return
            time.sleep(0.5)
        self.fail(f"/{NAMESPACE}/swiftseg did not become active within "
                  f"{ACTIVE_TIMEOUT_S:g} s; last state: {label}")

    def test_node_logs_that_it_is_segmenting(self, proc_output):
        proc_output.assertWaitFor("active: segmenting", timeout=ACTIVE_TIMEOUT_S,
                                  stream="stderr")


@launch_testing.post_shutdown_test()
class TestSegLaunchShutdown(unittest.TestCase):

    def test_node_exits_cleanly_on_shutdown(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
