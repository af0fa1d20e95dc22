"""What the rclpy tests share: a ROS 2 domain of their own on this host only, and the
ways they spin, call lifecycle services and make camera images.

DDS discovers every participant on the network with the same ROS_DOMAIN_ID, so two test
processes (pytest-xdist workers, another engineer's run, a robot on the LAN) would see each
other's /swiftseg_test nodes and topics. Each test module that uses rclpy picks a random
domain before `rclpy.init()` (the rmw reads both variables then) and limits discovery to
this host; node processes it starts inherit both.
"""

from __future__ import annotations

import array
import os
import random
import time

# Fast DDS maps a domain to UDP ports 7400 + 250 * id and up; 1..100 stays below the
# ephemeral range on Linux (ROS 2's own guidance for domain ids is 0-101).
DOMAINS = range(1, 101)


def isolate_ros_domain() -> int:
    """Set a random ROS_DOMAIN_ID and localhost-only discovery (ROS_AUTOMATIC_DISCOVERY_RANGE
    from Iron on; ROS_LOCALHOST_ONLY under Humble) for this process and its children;
    returns the domain id."""
    domain = random.SystemRandom().choice(DOMAINS)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if os.environ.get("ROS_DISTRO") == "humble":  # Jazzy warns that it is deprecated
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    return domain


def ros_session():
    """rclpy initialised on a domain of its own (no signal handlers: pytest keeps its own),
    with the message classes, QoS profiles and the node class the rclpy tests use; or a skip
    of the test when rclpy is not installed. A generator for a module-scoped fixture:
    `yield from ros_session()`. The skip comes from the fixture, not at import:
    launch_testing's pytest plugin imports every test module while collecting, and a skip
    raised then would end the whole session."""
    import types

    import pytest

    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup "
                                "installs PyPI's ros-jazzy wheels where they exist)")
    isolate_ros_domain()
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import State
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image

    from swiftseg_ros.ros.node import SegmentationNode

    def reliable(depth: int = 1, latched: bool = False) -> QoSProfile:
        durability = (DurabilityPolicy.TRANSIENT_LOCAL if latched
                      else DurabilityPolicy.VOLATILE)
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE, durability=durability)

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield types.SimpleNamespace(
            rclpy=rclpy, State=State, SingleThreadedExecutor=SingleThreadedExecutor,
            Parameter=Parameter, Image=Image, CameraInfo=CameraInfo,
            DiagnosticArray=DiagnosticArray, SegmentationNode=SegmentationNode,
            SUCCESS=TransitionCallbackReturn.SUCCESS,
            FAILURE=TransitionCallbackReturn.FAILURE,
            RELIABLE=reliable(), LATCHED=reliable(latched=True), QOS=reliable(depth=10),
        )
    finally:
        rclpy.shutdown()


def node_maker(ros, namespace: str, defaults: dict):
    """A generator for a fixture that makes SegmentationNodes in `namespace` with `defaults`
    under the given parameters, and closes and destroys each at the end of the test."""
    made = []

    def make(**parameters):
        overrides = [ros.Parameter(name, value=value)
                     for name, value in {**defaults, **parameters}.items()]
        node = ros.SegmentationNode(namespace=namespace, parameter_overrides=overrides)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
        node.destroy_node()


def spin_until(executor, predicate, timeout_s: float = 60.0, every=None,
               expect_timeout: bool = False) -> None:
    """Spin until `predicate()`, calling `every()` before each spin; a timeout fails the
    test, or, with `expect_timeout`, is how a wait of `timeout_s` ends."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            assert expect_timeout, "timed out"
            return
        if every is not None:
            every()
        executor.spin_once(timeout_sec=0.02)


def change_state(ros, executor, client, transition_id: int = 0, label: str = ""):
    """The change_state service's answer (the node spun by `executor` too)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    future = client.call_async(ChangeState.Request(
        transition=Transition(id=transition_id, label=label)))
    spin_until(executor, future.done, timeout_s=120.0)
    return future.result()


def camera_image(ros, width: int = 128, height: int = 64, sec: int = 42, nanosec: int = 7):
    """An rgb8 Image, its upper half grey, stamped `sec`.`nanosec`, frame camera_optical."""
    msg = ros.Image()
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.header.frame_id = "camera_optical"
    msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
    pixels = bytearray(height * width * 3)
    pixels[: len(pixels) // 2] = b"\x50" * (len(pixels) // 2)
    msg.data = array.array("B", pixels)
    return msg


def four_class_checkpoint(folder):
    """A Fast-SCNN checkpoint of random weights and four named classes in `folder`."""
    from swiftseg_ros.checkpoint import make_meta, save_checkpoint
    from swiftseg_ros.nets import build_model

    path = folder / "fastscnn_4_classes.pt"
    save_checkpoint(path, build_model("fastscnn", 4),
                    make_meta("fastscnn", 4, class_names=["road", "car", "sky", "tree"]))
    return path
