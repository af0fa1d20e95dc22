"""The lifecycle node under rclpy: parameters, transitions, images in and masks out.

Runs with rclpy from PyPI's ros-jazzy wheels (`make setup` installs them where they
exist: CPython 3.11 on Linux x86_64/aarch64) or from a ROS 2 installation (Humble or newer,
`colcon test --packages-select swiftseg_ros`). Without rclpy every test here skips itself
(through the `ros` fixture, not at import: launch_testing's pytest plugin imports every
test module while collecting, and a skip raised then would end the whole session). The
nodes run in the namespace /swiftseg_test on the CPU with Fast-SCNN and 64x128 images, on
a ROS domain of this module's own, on this host only (ros_helpers.isolate_ros_domain).
"""


import pytest
from ros_helpers import (
    camera_image,
    change_state,
    four_class_checkpoint,
    node_maker,
    ros_session,
    spin_until,
)

from swiftseg_ros.ros.params import PARAMETERS

NAMESPACE = "/swiftseg_test"
OUTPUTS = f"{NAMESPACE}/swiftseg"
HEIGHT, WIDTH = 64, 128
# The CPU, and PyTorch alone: with backend auto every first prepare exports an ONNX graph
# and times both runtimes (seconds each), which these tests of the ROS side do not need;
# the memory test keeps auto, whose ONNX Runtime sessions are among what it checks.
FAST = {"device": "cpu", "backend": "torch"}


@pytest.fixture(scope="module")
def ros():
    """rclpy initialised, and the ROS names the tests use (or a skip of the test)."""
    yield from ros_session()


@pytest.fixture
def peer(ros):
    """A plain node playing the camera and the consumers of the masks."""
    node = ros.rclpy.create_node("swiftseg_test_peer", namespace=NAMESPACE)
    yield node
    node.destroy_node()


@pytest.fixture
def make_node(ros):
    yield from node_maker(ros, NAMESPACE, FAST)


@pytest.fixture
def checkpoint(tmp_path):
    return four_class_checkpoint(tmp_path)


def state_of(node) -> int:
    return node._state_machine.current_state[0]


def test_lifecycle_walk_publishes_label_and_color_with_the_input_header(ros, make_node, peer):
    node = make_node()
    received = {}
    for name in ("label", "color"):
        peer.create_subscription(ros.Image, f"{OUTPUTS}/{name}",
                                 lambda msg, name=name: received.setdefault(name, msg), ros.RELIABLE)
    camera = peer.create_publisher(ros.Image, "image", ros.RELIABLE)
    executor = ros.SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    try:
        assert node.trigger_configure() == ros.SUCCESS
        assert node.trigger_activate() == ros.SUCCESS
        spin_until(executor, lambda: len(received) == 2,
                   every=lambda: camera.publish(camera_image(ros)))
        assert node.trigger_deactivate() == ros.SUCCESS
        assert node.trigger_cleanup() == ros.SUCCESS
        assert state_of(node) == ros.State.PRIMARY_STATE_UNCONFIGURED
    finally:
        executor.shutdown()
    sent = camera_image(ros)
    for msg in received.values():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (42, 7)
        assert msg.header.frame_id == sent.header.frame_id
        assert (msg.height, msg.width) == (HEIGHT, WIDTH)
    assert received["label"].encoding == "mono8"
    assert received["color"].encoding == "rgb8"


def test_configure_fails_on_a_missing_weights_file_then_succeeds_once_fixed(ros,
        make_node, tmp_path, checkpoint):
    node = make_node(weights=str(tmp_path / "missing.pt"))
    assert node.trigger_configure() == ros.FAILURE
    assert state_of(node) == ros.State.PRIMARY_STATE_UNCONFIGURED
    result = node.set_parameters([ros.Parameter("weights", value=str(checkpoint))])[0]
    assert result.successful, result.reason
    assert node.trigger_configure() == ros.SUCCESS
    assert state_of(node) == ros.State.PRIMARY_STATE_INACTIVE


def test_label_info_lists_the_checkpoint_classes_for_late_subscribers(ros,
        make_node, peer, checkpoint):
    LabelInfo = pytest.importorskip(  # noqa: N806 (a message class)
        "vision_msgs.msg", reason="vision_msgs is not installed (a ROS install has it)"
    ).LabelInfo
    node = make_node(weights=str(checkpoint))
    assert node.trigger_configure() == ros.SUCCESS
    infos = []
    peer.create_subscription(LabelInfo, f"{OUTPUTS}/label_info", infos.append, ros.LATCHED)
    executor = ros.SingleThreadedExecutor()
    executor.add_node(peer)
    try:
        spin_until(executor, lambda: infos, timeout_s=30.0)
    finally:
        executor.shutdown()
    classes = [(c.class_id, c.class_name) for c in infos[0].class_map]
    assert classes == [(0, "road"), (1, "car"), (2, "sky"), (3, "tree")]


def test_static_parameter_is_refused_while_configured_with_a_reason(ros, make_node):
    node = make_node()
    assert node.trigger_configure() == ros.SUCCESS
    result = node.set_parameters([ros.Parameter("network", value="swiftnet_mnv2")])[0]
    assert not result.successful
    assert "read-only while the node is configured" in result.reason
    # unchanged: the default "" (the checkpoint's network); configure does not write it
    assert node.get_parameter("network").value == ""


def test_static_parameter_can_change_again_after_cleanup(ros, make_node):
    node = make_node()
    assert node.trigger_configure() == ros.SUCCESS
    assert node.trigger_cleanup() == ros.SUCCESS
    result = node.set_parameters([ros.Parameter("upsample", value="labels")])[0]
    assert result.successful, result.reason


def test_dynamic_parameter_applies_while_active(ros, make_node):
    node = make_node(publish_overlay=True)
    assert node.trigger_configure() == ros.SUCCESS
    assert node.trigger_activate() == ros.SUCCESS
    result = node.set_parameters([ros.Parameter("overlay_alpha", value=0.25)])[0]
    assert result.successful, result.reason
    assert node.get_parameter("overlay_alpha").value == 0.25


def test_dynamic_parameter_out_of_range_is_refused(ros, make_node):
    node = make_node()
    assert node.trigger_configure() == ros.SUCCESS
    result = node.set_parameters([ros.Parameter("overlay_alpha", value=1.5)])[0]
    assert not result.successful


def test_shutdown_from_active_releases_the_engine(ros, make_node):
    node = make_node()
    assert node.trigger_configure() == ros.SUCCESS
    assert node.trigger_activate() == ros.SUCCESS
    assert node.trigger_shutdown() == ros.SUCCESS
    assert state_of(node) == ros.State.PRIMARY_STATE_FINALIZED


# ----------------------------------------------------------------- parameters at startup


def test_every_parameter_is_declared_with_its_descriptor_before_configure(ros, make_node):
    node = make_node()
    for definition in PARAMETERS:
        assert node.has_parameter(definition.name), definition.name
        descriptor = node.describe_parameter(definition.name)
        assert descriptor.description == definition.description
        assert f"type {definition.type_name}" in descriptor.additional_constraints
    assert node.get_parameter("device").value == "cpu"  # the override, before configure


def test_integer_for_a_double_at_startup_is_stored_as_that_double(ros, make_node):
    node = make_node(overlay_alpha=1)
    parameter = node.get_parameter("overlay_alpha")
    assert parameter.type_ == ros.Parameter.Type.DOUBLE and parameter.value == 1.0
    assert node.trigger_configure() == ros.SUCCESS


def test_wrongly_typed_startup_value_fails_configure_until_set(ros, make_node):
    node = make_node(overlay_alpha="high")  # the node is made: no exception at startup
    assert node.trigger_configure() == ros.FAILURE
    assert node._refused_at_startup["overlay_alpha"] == (
        "parameter 'overlay_alpha' is 'high', a string: expected a double (0.0 to 1.0)")
    result = node.set_parameters([ros.Parameter("overlay_alpha", value=0.4)])[0]
    assert result.successful, result.reason
    assert node.trigger_configure() == ros.SUCCESS


def test_out_of_range_startup_value_fails_configure_until_set(ros, make_node):
    node = make_node(depth=0)
    assert node.get_parameter("depth").value == 1  # declared with its default
    assert node.trigger_configure() == ros.FAILURE
    assert node.set_parameters([ros.Parameter("depth", value=2)])[0].successful
    assert node.trigger_configure() == ros.SUCCESS


def test_wrongly_typed_set_is_refused_with_the_type_expected(ros, make_node):
    node = make_node()
    result = node.set_parameters([ros.Parameter("depth", value="deep")])[0]
    assert not result.successful
    assert result.reason == "parameter 'depth' is 'deep', a string: expected an integer (1 to 100)"


# ------------------------------------------------------------- signals while frames flow


# ---------------------------------------------------------------- what a real ROS 2 showed


def test_an_invalid_transition_is_refused_and_the_node_keeps_running(ros, make_node, peer):
    # rclpy 7.1.x raises RCLError out of spin_once for it (ros2/rclpy#1209): two launch
    # files starting the same node name killed it
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    node = make_node()
    client = peer.create_client(ChangeState, f"{OUTPUTS}/change_state")
    executor = ros.SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    try:
        assert client.wait_for_service(timeout_sec=30.0)
        assert change_state(ros, executor, client, Transition.TRANSITION_CONFIGURE).success
        assert change_state(ros, executor, client, Transition.TRANSITION_ACTIVATE).success
        assert not change_state(ros, executor, client, Transition.TRANSITION_CONFIGURE).success
        assert not change_state(ros, executor, client, label="configure").success
        assert not change_state(ros, executor, client, label="no_such_transition").success
        assert state_of(node) == ros.State.PRIMARY_STATE_ACTIVE
        assert change_state(ros, executor, client, Transition.TRANSITION_DEACTIVATE).success
        assert state_of(node) == ros.State.PRIMARY_STATE_INACTIVE
    finally:
        executor.shutdown()


def test_memory_stays_flat_over_cleanup_and_configure_alternating_the_networks(
        ros, make_node):
    # a real ROS 2: 736 -> 821 ... 951 MB over Fast-SCNN cycles, 1075-1505 MB alternating
    # with SwiftNet-MNV2; glibc's arenas kept the freed buffers (swiftseg_ros/memory.py)
    from swiftseg_ros.memory import resident_mb

    # configure prepares (the plans are made too); auto: ONNX Runtime sessions as well
    node = make_node(input_size="64x32", backend="auto")
    levels = []
    for cycle in range(4):
        weights = ("fastscnn_synth.pt", "swiftnet_mnv2_synth.pt")[cycle % 2]
        assert node.set_parameters([ros.Parameter("weights", value=weights)])[0].successful
        assert node.trigger_configure() == ros.SUCCESS
        assert node.trigger_cleanup() == ros.SUCCESS
        levels.append(resident_mb())
    shown = [f"{level:.0f} MB" for level in levels]
    # the first SwiftNet configure of the process keeps a share for good (14 MB at this
    # size, docs/reliability.md; 5 MB when SwiftNet comes first); without malloc_trim
    # that step was +67 MB here and the next SwiftNet added 13 more
    assert levels[1] - levels[0] <= 60.0, shown
    assert max(levels[1:]) - levels[1] <= 10.0, shown


def test_each_new_rejection_reason_reaches_the_log_despite_the_throttle(ros, make_node, capfd):
    # a real ROS 2: behind the 5 s throttle, "truncated data" and "0x0" never showed up
    node = make_node()
    for reason in ("encoding 'yuv9' is not supported", "encoding 'yuv9' is not supported",
                   "data has 8 bytes, expected step 6 x 2 rows = 12",
                   "image is empty (0x0 pixels)"):
        node._log_rejected(reason)
    logged = capfd.readouterr()
    lines = [line for line in (logged.out + logged.err).splitlines() if "image rejected" in line]
    assert len(lines) == 3, lines
    assert any("expected step" in line for line in lines)
    assert any("0x0" in line for line in lines)


def test_heavy_losses_before_the_node_say_what_to_change_once_in_the_log(ros, make_node,
                                                                          peer, capfd):
    # a camera at 50 Hz by its stamps, 6 frames in 20 never sent (lost before the node)
    node = make_node(diagnostics_period=0.3, reliability="reliable", depth=10)
    hint = node._lost_frames_hint
    messages = []
    peer.create_subscription(ros.DiagnosticArray, "/diagnostics",
                             lambda msg: messages.extend(s.message for s in msg.status),
                             ros.QOS)
    camera = peer.create_publisher(ros.Image, "image", ros.QOS)
    executor = ros.SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    sent = []

    def publish_due():
        now = node.get_clock().now().nanoseconds * 1e-9
        index = len(sent)
        if now >= start + index * 0.02:
            sent.append(index)
            if index % 20 not in (3, 4, 9, 10, 15, 16):
                stamp = start + index * 0.02
                camera.publish(camera_image(ros, sec=int(stamp),
                                            nanosec=int((stamp % 1) * 1e9)))

    try:
        assert node.trigger_configure() == ros.SUCCESS
        assert node.trigger_activate() == ros.SUCCESS
        start = node.get_clock().now().nanoseconds * 1e-9 + 0.1
        spin_until(executor, lambda: any(hint in message for message in messages),
                   timeout_s=30.0, every=publish_due)
        shown_at = len(messages)
        spin_until(executor, lambda: len(messages) >= shown_at + 3, timeout_s=30.0,
                   every=publish_due)  # more reports with losses: no second log line
        assert node.trigger_deactivate() == ros.SUCCESS
    finally:
        executor.shutdown()
    logged = capfd.readouterr()
    lines = [line for line in (logged.out + logged.err).splitlines() if hint in line]
    assert len(lines) == 1, lines
    assert "lost before the node since the last report" in lines[0]
