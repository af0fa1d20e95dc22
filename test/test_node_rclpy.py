"""The lifecycle node under rclpy: transitions, images in and masks out, parameters.

Needs a ROS 2 installation (Humble or newer) with this package built: `colcon test
--packages-select swiftseg_ros`. Without rclpy the whole module is skipped. The nodes
run in the namespace /swiftseg_test on the CPU with Fast-SCNN and 64x128 images.
"""

import array
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.msg import State  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import LabelInfo  # noqa: E402

from swiftseg_ros.checkpoint import make_meta, save_checkpoint  # noqa: E402
from swiftseg_ros.nets import build_model  # noqa: E402
from swiftseg_ros.ros.node import SegmentationNode  # noqa: E402

NAMESPACE = "/swiftseg_test"
OUTPUTS = f"{NAMESPACE}/swiftseg"
HEIGHT, WIDTH = 64, 128
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
RELIABLE = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def peer(ros):
    """A plain node playing the camera and the consumers of the masks."""
    node = rclpy.create_node("swiftseg_test_peer", namespace=NAMESPACE)
    yield node
    node.destroy_node()


@pytest.fixture
def make_node(ros):
    made = []

    def make(**parameters):
        overrides = [Parameter(name, value=value)
                     for name, value in {"device": "cpu", **parameters}.items()]
        node = SegmentationNode(namespace=NAMESPACE, parameter_overrides=overrides)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
        node.destroy_node()


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "fastscnn_4_classes.pt"
    save_checkpoint(path, build_model("fastscnn", 4),
                    make_meta("fastscnn", 4, class_names=["road", "car", "sky", "tree"]))
    return path


def camera_image(sec: int = 42, nanosec: int = 7) -> Image:
    msg = Image()
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.header.frame_id = "camera_optical"
    msg.height, msg.width, msg.encoding, msg.step = HEIGHT, WIDTH, "rgb8", WIDTH * 3
    pixels = bytearray(HEIGHT * WIDTH * 3)
    pixels[: len(pixels) // 2] = b"\x50" * (len(pixels) // 2)
    msg.data = array.array("B", pixels)
    return msg


def spin_until(executor, predicate, timeout_s: float = 60.0, every=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        if every is not None:
            every()
        executor.spin_once(timeout_sec=0.05)


def state_of(node) -> int:
    return node._state_machine.current_state[0]


def test_lifecycle_walk_publishes_label_and_color_with_the_input_header(make_node, peer):
    node = make_node()
    received = {}
    for name in ("label", "color"):
        peer.create_subscription(Image, f"{OUTPUTS}/{name}",
                                 lambda msg, name=name: received.setdefault(name, msg), RELIABLE)
    camera = peer.create_publisher(Image, "image", RELIABLE)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    try:
        assert node.trigger_configure() == SUCCESS
        assert node.trigger_activate() == SUCCESS
        spin_until(executor, lambda: len(received) == 2,
                   every=lambda: camera.publish(camera_image()))
        assert node.trigger_deactivate() == SUCCESS
        assert node.trigger_cleanup() == SUCCESS
        assert state_of(node) == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        executor.shutdown()
    sent = camera_image()
    for msg in received.values():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (42, 7)
        assert msg.header.frame_id == sent.header.frame_id
        assert (msg.height, msg.width) == (HEIGHT, WIDTH)
    assert received["label"].encoding == "mono8"
    assert received["color"].encoding == "rgb8"


def test_configure_fails_on_a_missing_weights_file_then_succeeds_once_fixed(
        make_node, tmp_path, checkpoint):
    node = make_node(weights=str(tmp_path / "missing.pt"))
    assert node.trigger_configure() == FAILURE
    assert state_of(node) == State.PRIMARY_STATE_UNCONFIGURED
    result = node.set_parameters([Parameter("weights", value=str(checkpoint))])[0]
    assert result.successful, result.reason
    assert node.trigger_configure() == SUCCESS
    assert state_of(node) == State.PRIMARY_STATE_INACTIVE


def test_label_info_lists_the_checkpoint_classes_for_late_subscribers(
        make_node, peer, checkpoint):
    node = make_node(weights=str(checkpoint))
    assert node.trigger_configure() == SUCCESS
    infos = []
    peer.create_subscription(LabelInfo, f"{OUTPUTS}/label_info", infos.append, LATCHED)
    executor = SingleThreadedExecutor()
    executor.add_node(peer)
    try:
        spin_until(executor, lambda: infos, timeout_s=30.0)
    finally:
        executor.shutdown()
    classes = [(c.class_id, c.class_name) for c in infos[0].class_map]
    assert classes == [(0, "road"), (1, "car"), (2, "sky"), (3, "tree")]


def test_static_parameter_is_refused_while_configured_with_a_reason(make_node):
    node = make_node()
    assert node.trigger_configure() == SUCCESS
    result = node.set_parameters([Parameter("network", value="swiftnet_mnv2")])[0]
    assert not result.successful
    assert "read-only while the node is configured" in result.reason
    # unchanged: the default "" (the checkpoint's network); configure does not write it
    assert node.get_parameter("network").value == ""


def test_static_parameter_can_change_again_after_cleanup(make_node):
    node = make_node()
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_cleanup() == SUCCESS
    result = node.set_parameters([Parameter("upsample", value="labels")])[0]
    assert result.successful, result.reason


def test_dynamic_parameter_applies_while_active(make_node):
    node = make_node(publish_overlay=True)
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    result = node.set_parameters([Parameter("overlay_alpha", value=0.25)])[0]
    assert result.successful, result.reason
    assert node.get_parameter("overlay_alpha").value == 0.25


def test_dynamic_parameter_out_of_range_is_refused(make_node):
    node = make_node()
    assert node.trigger_configure() == SUCCESS
    result = node.set_parameters([Parameter("overlay_alpha", value=1.5)])[0]
    assert not result.successful


def test_shutdown_from_active_releases_the_engine(make_node):
    node = make_node()
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    assert node.trigger_shutdown() == SUCCESS
    assert state_of(node) == State.PRIMARY_STATE_FINALIZED
