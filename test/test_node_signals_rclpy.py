"""The node as a process under rclpy, ended by signals: SIGINT or SIGTERM while frames
flow, and at any moment (preparing in configure, preparing a new size in the worker, idle;
once, or twice 0.9 s apart as launch sends them) within 3 s and with exit status 0.

A module of its own beside test_node_rclpy.py, so that the rclpy session of `make test` can
balance its two workers by module (the order of the Makefile's ROS_TESTS). Skips through
the `ros` fixture where rclpy is missing (see test_node_rclpy.py).
"""

import array
import os
import signal
import subprocess
import sys
import time

import pytest
from ros_helpers import camera_image, change_state, four_class_checkpoint, ros_session, spin_until


@pytest.fixture(scope="module")
def ros():
    yield from ros_session()


@pytest.fixture
def peer(ros):
    """A plain node playing the camera, the consumer of labels and the lifecycle client."""
    node = ros.rclpy.create_node("swiftseg_signal_test_peer")
    yield node
    node.destroy_node()


@pytest.fixture
def checkpoint(tmp_path):
    return four_class_checkpoint(tmp_path)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_frames_flow_ends_the_node_without_an_error(
        ros, peer, checkpoint, signal_number):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    namespace = f"/swiftseg_signal_{signal_number}"
    env = {**os.environ, "RCUTILS_LOGGING_BUFFERED_STREAM": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "swiftseg_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}",
         "-p", "device:=cpu", "-p", "backend:=torch", "-p", f"weights:={checkpoint}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        client = peer.create_client(ChangeState, f"{namespace}/swiftseg/change_state")
        camera = peer.create_publisher(ros.Image, f"{namespace}/image", ros.RELIABLE)
        labels = []
        peer.create_subscription(ros.Image, f"{namespace}/swiftseg/label", labels.append,
                                 ros.RELIABLE)
        executor = ros.SingleThreadedExecutor()
        executor.add_node(peer)
        assert client.wait_for_service(timeout_sec=60.0)
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            future = client.call_async(ChangeState.Request(
                transition=Transition(id=transition)))
            spin_until(executor, future.done, timeout_s=120.0)
            assert future.result().success
        spin_until(executor, lambda: len(labels) >= 3,
                   every=lambda: camera.publish(camera_image(ros)))
        for _ in range(5):  # frames in flight when the signal comes
            camera.publish(camera_image(ros))
            executor.spin_once(timeout_sec=0.02)
        process.send_signal(signal_number)
        output, _ = process.communicate(timeout=60.0)
        executor.shutdown()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "ERROR" not in output and "Failed to publish" not in output, output


def big_image(ros, width: int, height: int):
    msg = ros.Image()
    msg.header.frame_id = "camera_optical"
    msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
    msg.data = array.array("B", bytes(height * width * 3))
    return msg


def start_node_process(checkpoint, namespace: str, *params: str):
    env = {**os.environ, "RCUTILS_LOGGING_BUFFERED_STREAM": "1"}
    arguments = [arg for param in ("device:=cpu", "backend:=torch", f"weights:={checkpoint}",
                                   *params)
                 for arg in ("-p", param)]
    return subprocess.Popen(
        [sys.executable, "-m", "swiftseg_ros.ros.node", "--ros-args", "-r",
         f"__ns:={namespace}", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def signal_and_time_the_exit(process, signals, gap_s: float = 0.9):
    """Send the signals `gap_s` apart (launch, not on a terminal, sends its own SIGINT
    0.9 s after the process group's); the seconds from the first to the exit, the output."""
    started = time.monotonic()
    for index, number in enumerate(signals):
        if index:
            try:
                process.wait(timeout=gap_s)
            except subprocess.TimeoutExpired:
                process.send_signal(number)
        else:
            process.send_signal(number)
    output, _ = process.communicate(timeout=60.0)
    return time.monotonic() - started, output


@pytest.mark.parametrize("moment,signals", [
    ("preparing_in_the_worker", (signal.SIGINT, signal.SIGINT)),
    ("preparing_in_configure", (signal.SIGTERM,)),
    # launch not on a terminal: its own SIGINT 0.9 s after the group's, once closed
    ("idle", (signal.SIGINT, signal.SIGINT)),
])
def test_the_node_exits_cleanly_within_3_s_of_a_signal_at_any_moment(
        ros, peer, checkpoint, moment, signals):
    # a real ROS 2: Ctrl-C while preparing a new input size ended in SIGKILL (exit -9),
    # and launch's second SIGINT 0.9 s later killed the node by signal (exit -2)
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    namespace = f"/swiftseg_exit_{moment}"
    # reliable: a best-effort 6 MB image may not make it through the default buffers
    params = ("reliability:=reliable",
              *(("input_size:=1920x1080",) if moment == "preparing_in_configure" else ()))
    process = start_node_process(checkpoint, namespace, *params)
    try:
        client = peer.create_client(ChangeState, f"{namespace}/swiftseg/change_state")
        camera = peer.create_publisher(ros.Image, f"{namespace}/image", ros.RELIABLE)
        executor = ros.SingleThreadedExecutor()
        executor.add_node(peer)
        assert client.wait_for_service(timeout_sec=60.0)
        if moment == "preparing_in_configure":
            client.call_async(ChangeState.Request(
                transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
            spin_until(executor, lambda: False, timeout_s=1.0, expect_timeout=True)
        elif moment == "preparing_in_the_worker":
            for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                assert change_state(ros, executor, client, transition).success
            spin_until(executor, lambda: camera.get_subscription_count() > 0, timeout_s=30.0)
            camera.publish(big_image(ros, 1920, 1080))  # a new size: seconds to prepare
            spin_until(executor, lambda: False, timeout_s=1.5, expect_timeout=True)
        elapsed, output = signal_and_time_the_exit(process, signals)
        executor.shutdown()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert elapsed < 3.0, (elapsed, output)
    assert "Traceback" not in output and "ERROR" not in output, output
    if moment == "preparing_in_the_worker":
        assert "did not finish within" in output, output  # it was preparing
