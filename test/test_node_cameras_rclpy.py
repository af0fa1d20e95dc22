"""The lifecycle node with the `cameras` parameter under rclpy: three cameras of different
sizes and rates through one node, each output topic carrying only its own camera's frames
with their headers; the lifecycle walk with cameras; bad camera lists.

Runs where rclpy is importable (PyPI's ros-jazzy wheels from `make setup`, or a ROS 2
installation); skips through the `ros` fixture otherwise (see test_node_rclpy.py for why
not at import). Fast-SCNN with random weights on the CPU, tiny images, a ROS domain of
this module's own on this host only.
"""

import array

import pytest
from ros_helpers import node_maker, ros_session, spin_until

NAMESPACE = "/swiftseg_cameras_test"
OUTPUTS = f"{NAMESPACE}/swiftseg"
# camera -> (width, height, frames per round): different sizes and rates
CAMERAS = {"front": (128, 64, 3), "down": (64, 64, 2), "rear": (96, 64, 1)}


@pytest.fixture(scope="module")
def ros():
    yield from ros_session()


@pytest.fixture
def peer(ros):
    node = ros.rclpy.create_node("swiftseg_cameras_peer", namespace=NAMESPACE)
    yield node
    node.destroy_node()


@pytest.fixture
def make_node(ros):
    yield from node_maker(ros, NAMESPACE, {"device": "cpu"})


def image(ros, camera: str, seq: int):
    width, height, _ = CAMERAS[camera]
    msg = ros.Image()
    msg.header.stamp.sec = 1000 + seq
    msg.header.stamp.nanosec = list(CAMERAS).index(camera)  # which camera, in the stamp too
    msg.header.frame_id = f"{camera}_optical"
    msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
    pixels = bytearray(height * width * 3)
    pixels[: len(pixels) // 2] = b"\x60" * (len(pixels) // 2)
    msg.data = array.array("B", pixels)
    return msg


def camera_info(ros, camera: str):
    width, height, _ = CAMERAS[camera]
    msg = ros.CameraInfo()
    msg.header.frame_id = f"{camera}_optical"
    msg.width, msg.height = width, height
    msg.k = [100.0, 0.0, width / 2, 0.0, 100.0, height / 2, 0.0, 0.0, 1.0]
    msg.p = [100.0, 0.0, width / 2, 0.0, 0.0, 100.0, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def state_of(node) -> int:
    return node._state_machine.current_state[0]


def test_three_cameras_each_output_topic_carries_only_its_cameras_frames(ros, make_node, peer):
    node = make_node(cameras=list(CAMERAS), backend="torch", diagnostics_period=0.2)
    received = {camera: {"label": [], "color": [], "camera_info": []} for camera in CAMERAS}
    for camera, topics in received.items():
        for name, messages in topics.items():
            kind = ros.CameraInfo if name == "camera_info" else ros.Image
            peer.create_subscription(kind, f"{OUTPUTS}/{camera}/{name}", messages.append,
                                     ros.QOS)
    diagnostics = []
    peer.create_subscription(ros.DiagnosticArray, "/diagnostics", diagnostics.append, ros.QOS)
    images = {camera: peer.create_publisher(ros.Image, f"{camera}/image", ros.QOS)
              for camera in CAMERAS}
    infos = {camera: peer.create_publisher(ros.CameraInfo, f"{camera}/camera_info", ros.QOS)
             for camera in CAMERAS}
    executor = ros.SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    sent = {camera: 0 for camera in CAMERAS}
    tick = [0]

    def publish_round():
        tick[0] += 1
        for camera, (_, _, per_round) in CAMERAS.items():
            if tick[0] % per_round == 0 or camera == "front":
                images[camera].publish(image(ros, camera, sent[camera]))
                sent[camera] += 1
            infos[camera].publish(camera_info(ros, camera))

    try:
        assert node.trigger_configure() == ros.SUCCESS
        assert node.trigger_activate() == ros.SUCCESS
        spin_until(executor, lambda: all(len(topics[name]) >= 2 for topics in received.values()
                                         for name in topics), every=publish_round)
        spin_until(executor, lambda: any(len(array.status) == 4 for array in diagnostics))
        assert node.trigger_deactivate() == ros.SUCCESS
    finally:
        executor.shutdown()
    for camera, topics in received.items():
        width, height, _ = CAMERAS[camera]
        for name, messages in topics.items():
            for msg in messages:
                assert msg.header.frame_id == f"{camera}_optical", (camera, name)
                assert msg.header.stamp.nanosec == list(CAMERAS).index(camera), (camera, name)
                assert msg.header.stamp.sec < 1000 + sent[camera]
                assert (msg.width, msg.height) == (width, height), (camera, name)
    report = next(array for array in diagnostics if len(array.status) == 4)
    assert [status.name for status in report.status] == [
        "swiftseg: camera front", "swiftseg: camera down", "swiftseg: camera rear",
        "swiftseg: engine"]


def test_lifecycle_walk_with_cameras(ros, make_node):
    node = make_node(cameras=["front", "down"])
    assert node.trigger_configure() == ros.SUCCESS
    assert set(node._camera_pubs) == {"front", "down"}
    refused = node.set_parameters([ros.Parameter("cameras", value=["front"])])[0]
    assert not refused.successful and "read-only while the node is configured" in refused.reason
    assert node.set_parameters([ros.Parameter("batch_wait_ms", value=5.0)])[0].successful
    assert node.trigger_activate() == ros.SUCCESS
    assert len(node._camera_subs) == 4  # image and camera_info per camera
    topics = {name for name, _ in node.get_topic_names_and_types()}
    assert f"{OUTPUTS}/front/label" in topics and f"{OUTPUTS}/down/camera_info" in topics
    assert f"{OUTPUTS}/label" not in topics
    assert node.trigger_deactivate() == ros.SUCCESS
    assert node._camera_subs == []
    assert node.trigger_cleanup() == ros.SUCCESS
    assert node._camera_pubs == {}
    assert node.set_parameters([ros.Parameter("cameras", value=["rear"])])[0].successful
    assert node.trigger_configure() == ros.SUCCESS
    assert set(node._camera_pubs) == {"rear"}
    assert node.trigger_shutdown() == ros.SUCCESS
    assert state_of(node) == ros.State.PRIMARY_STATE_FINALIZED


def test_duplicate_cameras_are_refused_when_set(ros, make_node):
    node = make_node()
    result = node.set_parameters([ros.Parameter("cameras", value=["front", "front"])])[0]
    assert not result.successful
    assert result.reason == "parameter 'cameras' names 'front' twice: each camera once"


def test_more_cameras_than_max_cameras_fail_configure_and_the_node_stays_usable(ros,
                                                                              make_node):
    node = make_node(cameras=["a", "b", "c"], max_cameras=2)
    assert node.trigger_configure() == ros.FAILURE
    assert state_of(node) == ros.State.PRIMARY_STATE_UNCONFIGURED
    assert node.set_parameters([ros.Parameter("max_cameras", value=3)])[0].successful
    assert node.trigger_configure() == ros.SUCCESS


def test_an_invalid_camera_name_at_startup_fails_configure_with_its_line(ros, make_node):
    node = make_node(cameras=["front", "0down"])
    assert node.trigger_configure() == ros.FAILURE
    assert "'0down' is not a valid camera name" in node._refused_at_startup["cameras"]
