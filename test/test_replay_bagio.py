"""Reading and writing rosbag2 bags for replay: both storages, single files, folders without
metadata, damaged files salvaged up to the damage. Bags are written here with rosbags."""

import numpy as np
import pytest
import yaml
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from swiftseg_ros.replay.bagio import (
    TYPESTORE,
    BagDamaged,
    BagError,
    BagMessage,
    MalformedMessage,
    OutputBag,
    deserialize,
    node_offered_qos,
    open_bag,
)
from swiftseg_ros.replay.synthbag import CameraBagSpec, write_camera_bag

FRAMES = 30
SPEC = CameraBagSpec(frames=FRAMES, width=64, height=32)


def storage_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def read_all(bag, topics):
    return [(m.topic, m.timestamp, bytes(m.data)) for m in bag.messages(topics)]


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def camera_bag(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "bag"
    return write_camera_bag(path, CameraBagSpec(**{**SPEC.__dict__, "storage": request.param}),
                            progress=False)


def test_bag_folder_reads_images_and_labels_in_receive_order(camera_bag):
    with open_bag(camera_bag) as bag:
        assert bag.damage is None
        assert {t: i.msgtype for t, i in bag.topics.items()} == {
            "/camera/image_raw": "sensor_msgs/msg/Image",
            "/camera/labels": "sensor_msgs/msg/Image"}
        messages = read_all(bag, ["/camera/image_raw", "/camera/labels"])
    assert len(messages) == 2 * FRAMES
    times = [t for _, t, _ in messages]
    assert times == sorted(times)
    assert [topic for topic, _, _ in messages[:2]] == ["/camera/image_raw", "/camera/labels"]


def test_single_storage_file_reads_like_its_folder(camera_bag):
    with open_bag(camera_bag) as folder, open_bag(storage_file(camera_bag)) as single:
        assert read_all(single, ["/camera/labels"]) == read_all(folder, ["/camera/labels"])


def test_folder_whose_metadata_was_never_written_reads_from_its_storage_file(camera_bag,
                                                                            tmp_path):
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    source = storage_file(camera_bag)
    (crashed / source.name).write_bytes(source.read_bytes())
    with open_bag(crashed) as bag, open_bag(camera_bag) as intact:
        assert read_all(bag, ["/camera/image_raw"]) == read_all(intact, ["/camera/image_raw"])


def test_image_topics_list_only_image_types(tmp_path):
    with OutputBag(tmp_path / "bag") as out:
        String = TYPESTORE.types["std_msgs/msg/String"]
        out.write("/chatter", 1, String(data="hi"))
    with open_bag(tmp_path / "bag") as bag:
        assert bag.image_topics() == []
        assert bag.topics["/chatter"].msgtype == "std_msgs/msg/String"


def test_missing_bag_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(BagError, match="nowhere.mcap not found"):
        open_bag(tmp_path / "nowhere.mcap")


def test_file_that_is_not_a_bag_is_refused_by_its_suffix(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        open_bag(tmp_path / "notes.txt")


def test_empty_folder_is_not_a_bag(tmp_path):
    with pytest.raises(BagError, match="no metadata.yaml and no .mcap or .db3"):
        open_bag(tmp_path)


def test_folder_with_binary_garbage_metadata_is_not_a_bag(tmp_path):
    (tmp_path / "metadata.yaml").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        open_bag(tmp_path)


def test_mcap_with_garbage_content_is_a_bag_error(tmp_path):
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(BagError, match="junk.mcap"):
        open_bag(tmp_path / "junk.mcap")


def test_truncated_bag_is_salvaged_up_to_the_damage(camera_bag, tmp_path):
    source = storage_file(camera_bag)
    data = source.read_bytes()
    cut = tmp_path / source.name
    cut.write_bytes(data[: len(data) // 2])
    with open_bag(camera_bag) as intact:
        original = read_all(intact, ["/camera/image_raw"])
    with open_bag(cut) as bag:
        assert bag.salvaged
        salvaged = []
        with pytest.raises(BagDamaged):
            for m in bag.messages(["/camera/image_raw"]):
                salvaged.append((m.topic, m.timestamp, bytes(m.data)))
    assert 0 < len(salvaged) < FRAMES
    assert salvaged == original[: len(salvaged)]


def test_salvage_of_an_intact_mcap_reads_every_message(tmp_path):
    bag_path = write_camera_bag(tmp_path / "bag", SPEC, progress=False)
    source = storage_file(bag_path)
    # without its footer, an MCAP file has no index: the salvage scanner reads it
    no_footer = tmp_path / "no_footer.mcap"
    no_footer.write_bytes(source.read_bytes()[:-37])
    with open_bag(no_footer) as bag, open_bag(bag_path) as intact:
        assert bag.salvaged
        topics = ["/camera/image_raw", "/camera/labels"]
        assert read_all(bag, topics) == read_all(intact, topics)


def test_undecodable_message_bytes_are_a_malformed_message():
    message = BagMessage("/camera/image_raw", "sensor_msgs/msg/Image", 1, b"\x00\x01\x00\x00")
    with pytest.raises(MalformedMessage, match="undecodable sensor_msgs/msg/Image"):
        deserialize(message)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_output_bag_reads_back_types_stamps_and_counts(tmp_path, storage):
    Image = TYPESTORE.types["sensor_msgs/msg/Image"]
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    with OutputBag(tmp_path / "out", storage) as out:
        for k in range(3):
            out.write("/swiftseg/label", 10 + k, Image(
                header=Header(stamp=Time(sec=5, nanosec=k), frame_id="cam"), height=1, width=2,
                encoding="mono8", is_bigendian=0, step=2, data=np.array([k, 1], np.uint8)))
    assert out.counts == {"/swiftseg/label": 3}
    with open_bag(tmp_path / "out") as bag:
        assert bag.storage == storage
        messages = list(bag.messages(["/swiftseg/label"]))
    assert [m.timestamp for m in messages] == [10, 11, 12]
    decoded = [deserialize(m) for m in messages]
    assert [d.header.stamp.nanosec for d in decoded] == [0, 1, 2]
    assert decoded[2].header.frame_id == "cam" and decoded[2].data.tolist() == [2, 1]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_output_bag_records_the_qos_the_node_offers(tmp_path, storage):
    # the QoS follows the topic; rosbags' Humble type store has no vision_msgs/LabelInfo,
    # so a std_msgs/String stands in for the message on ~/label_info
    String = TYPESTORE.types["std_msgs/msg/String"]
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    Status = TYPESTORE.types["diagnostic_msgs/msg/DiagnosticArray"]
    header = Header(stamp=Time(sec=1, nanosec=0), frame_id="")
    with OutputBag(tmp_path / "out", storage) as out:
        out.write("/swiftseg/label_info", 1, String(data="road"))
        out.write("/diagnostics", 2, Status(header=header, status=[]))
    with Reader(tmp_path / "out") as reader:
        offered = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert offered == {topic: list(node_offered_qos(topic)) for topic in offered}
    (label_info,) = offered["/swiftseg/label_info"]
    assert label_info.durability == QosDurability.TRANSIENT_LOCAL
    assert label_info.reliability == QosReliability.RELIABLE and label_info.depth == 1
    assert offered["/diagnostics"][0].durability == QosDurability.VOLATILE
    metadata = yaml.safe_load((tmp_path / "out" / "metadata.yaml").read_text())
    topics = metadata["rosbag2_bagfile_information"]["topics_with_message_count"]
    assert all(t["topic_metadata"]["offered_qos_profiles"] for t in topics)


def test_output_bag_refuses_an_existing_folder(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(BagError, match="exists already"):
        OutputBag(tmp_path / "out")


def test_corrupt_pages_in_a_sqlite3_bag_stop_reading_with_bag_damaged(tmp_path):
    path = write_camera_bag(tmp_path / "bag", CameraBagSpec(**{**SPEC.__dict__,
                                                                "storage": "sqlite3"}),
                            progress=False)
    db = storage_file(path)
    data = bytearray(db.read_bytes())
    page = 4096
    # overwrite the later half of the file (message pages) with junk, keep the schema pages
    start = (len(data) // page // 2) * page
    data[start:] = b"\xa5" * (len(data) - start)
    db.write_bytes(bytes(data))
    with open_bag(path) as bag:
        read = 0
        with pytest.raises(BagDamaged):
            for _ in bag.messages(["/camera/image_raw"]):
                read += 1
    assert read < FRAMES


def test_writer_with_raw_bytes_fixture_is_readable(tmp_path):
    """rosbags' own writer (as a recorder would use it) makes bags open_bag reads."""
    with Writer(tmp_path / "raw", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam", "sensor_msgs/msg/CompressedImage",
                                     typestore=TYPESTORE)
        writer.write(conn, 42, b"\x00\x01\x00\x00")
    with open_bag(tmp_path / "raw") as bag:
        assert bag.image_topics() == ["/cam"]
        assert [m.timestamp for m in bag.messages(["/cam"])] == [42]
