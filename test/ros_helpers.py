"""What the rclpy tests share: a ROS 2 domain of their own on this host only.

DDS discovers every participant on the network with the same ROS_DOMAIN_ID, so two test
processes (pytest-xdist workers, another engineer's run, a robot on the LAN) would see each
other's /swiftseg_test nodes and topics. Each test module that uses rclpy picks a random
domain before `rclpy.init()` (the rmw reads both variables then) and limits discovery to
this host; node processes it starts inherit both.
"""

from __future__ import annotations

import os
import random

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
