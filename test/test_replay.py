"""The replay loop on bags written here: labels equal the engine's, the output bag is the
node's, realtime mode drops what the policy says, scores equal the metrics module's."""

import numpy as np
import pytest
import torch
from replay_helpers import small_engine

from swiftseg_ros.metrics import ConfusionMatrix
from swiftseg_ros.replay.bagio import TYPESTORE, OutputBag, deserialize, open_bag
from swiftseg_ros.replay.run import Replay, ReplayOptions
from swiftseg_ros.replay.synthbag import CameraBagSpec, capture_times_ns, write_camera_bag
from swiftseg_ros.ros.conversions import build_image, decode_compressed
from swiftseg_ros.ros.frames import simulate_latest_frame
from swiftseg_ros.synthetic.frames import generate_frame

FRAMES = 6
WIDTH, HEIGHT = 64, 32
# realtime: processing times against frames arriving every ~0.1 s, so that some are dropped
DURATIONS = [0.25, 0.05, 0.05, 0.3, 0.05, 0.05]
IMAGE, LABELS = "/camera/image_raw", "/camera/labels"
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]


def spec(**changes) -> CameraBagSpec:
    values = dict(frames=FRAMES, width=WIDTH, height=HEIGHT, rate_hz=10.0)
    values.update(changes)
    return CameraBagSpec(**values)



@pytest.fixture(scope="module")
def engine():
    yield from small_engine()


@pytest.fixture(scope="module")
def raw_bag(tmp_path_factory):
    return write_camera_bag(tmp_path_factory.mktemp("raw") / "bag", spec(), progress=False)


def replay(bag_path, engine, out_path=None, **options):
    options.setdefault("label_topic", LABELS)
    with open_bag(bag_path) as bag:
        output = OutputBag(out_path) if out_path is not None else None
        try:
            return Replay(bag, engine, ReplayOptions(IMAGE, progress=False, **options),
                          output).run()
        finally:
            if output is not None:
                output.close()


def read_topic(path, topic):
    with open_bag(path) as bag:
        return [(m.timestamp, deserialize(m)) for m in bag.messages([topic])]


@pytest.fixture(scope="module")
def expected_labels(engine):
    """The engine's labels for the bag's frames, computed directly (not through replay)."""
    out = []
    for k in range(FRAMES):
        rgb, _ = generate_frame(0, k, WIDTH, HEIGHT, sequence=True)
        out.append(engine.infer(rgb, "rgb8").label.copy())
    return out


@pytest.fixture(scope="module")
def replayed(engine, raw_bag, tmp_path_factory):
    """(result, output bag) of the raw bag replayed in all mode."""
    out = tmp_path_factory.mktemp("replayed") / "out"
    return replay(raw_bag, engine, out), out


def test_replayed_labels_equal_the_engines_labels_for_the_same_frames(replayed,
                                                                      expected_labels):
    result, out = replayed
    assert result.count("processed") == FRAMES
    labels = [msg for _, msg in read_topic(out, "/swiftseg/label")]
    for msg, want in zip(labels, expected_labels, strict=True):
        assert np.array_equal(msg.data.reshape(HEIGHT, WIDTH), want)


def test_compressed_images_in_sqlite3_replay_to_the_engines_labels_of_the_decoded_frames(
        engine, tmp_path):
    # the raw bag is MCAP with Image messages: this one covers the other storage and type
    bag_path = write_camera_bag(tmp_path / "bag", spec(compression="png", storage="sqlite3",
                                                       frames=3), progress=False)
    replay(bag_path, engine, tmp_path / "out")
    labels = [msg for _, msg in read_topic(tmp_path / "out", "/swiftseg/label")]
    inputs = [msg for _, msg in read_topic(bag_path, IMAGE)]
    assert len(labels) == len(inputs) == 3
    for label, image in zip(labels, inputs, strict=True):
        frame, pixel_format = decode_compressed(image)
        assert pixel_format == "bgr8"
        want = engine.infer(frame, pixel_format).label
        assert np.array_equal(label.data.reshape(HEIGHT, WIDTH), want)


def test_output_bag_has_the_node_topics_with_input_headers_and_bag_times(raw_bag, replayed):
    _, out_path = replayed
    inputs = read_topic(raw_bag, IMAGE)
    for topic, encoding in (("/swiftseg/label", "mono8"), ("/swiftseg/color", "rgb8")):
        outputs = read_topic(out_path, topic)
        assert len(outputs) == FRAMES
        for (out_time, out), (in_time, msg) in zip(outputs, inputs, strict=True):
            assert out.__msgtype__ == "sensor_msgs/msg/Image"
            assert out.encoding == encoding and (out.width, out.height) == (WIDTH, HEIGHT)
            assert out_time == in_time
            assert (out.header.stamp.sec, out.header.stamp.nanosec) == (
                msg.header.stamp.sec, msg.header.stamp.nanosec)
            assert out.header.frame_id == "camera"
    diagnostics = read_topic(out_path, "/diagnostics")
    assert diagnostics and diagnostics[0][1].__msgtype__ == "diagnostic_msgs/msg/DiagnosticArray"
    last = dict((kv.key, kv.value) for kv in diagnostics[-1][1].status[0].values)
    assert last["frames received"] == str(FRAMES)
    assert last["frames processed"] == str(FRAMES)
    assert last["input size"] == f"{WIDTH}x{HEIGHT}"  # the node's WxH, not transposed
    # replay feeds the stamps like the node; 6 frames are too few for the estimate
    assert last["frames lost before the node (estimated)"] == "n/a"


@pytest.fixture(scope="module")
def realtime(engine, raw_bag, tmp_path_factory):
    """(result, output bag) of the raw bag in realtime mode with DURATIONS pinned."""
    out = tmp_path_factory.mktemp("realtime") / "out"
    result = replay(raw_bag, engine, out, mode="realtime",
                    processing_time=lambda index, measured: DURATIONS[index])
    return result, out


def test_realtime_mode_drops_what_the_policy_says_for_given_processing_times(realtime):
    result, out = realtime
    _, receive = capture_times_ns(spec())
    arrivals = [(t - receive[0]) / 1e9 for t in receive]
    policy = simulate_latest_frame(arrivals, DURATIONS)
    assert [r.outcome == "processed" for r in result.records] == [o.processed for o in policy]
    assert result.count("dropped") == sum(not o.processed for o in policy) > 0
    for record, outcome in zip(result.records, policy, strict=True):
        assert (record.start, record.finish) == (outcome.start, outcome.finish)
    kept = {r.bag_ns for r in result.records if r.outcome == "processed"}
    assert [t for t, _ in read_topic(out, "/swiftseg/label")] == sorted(kept)


def test_realtime_image_age_is_publish_time_minus_header_stamp(realtime):
    result, _ = realtime
    stamps, receive = capture_times_ns(spec())
    # the first frame finds the worker free: transport delay + its processing time
    expected = (receive[0] - stamps[0]) / 1e6 + DURATIONS[0] * 1000.0
    assert result.records[0].age_ms == pytest.approx(expected)


def test_miou_equals_the_metrics_modules_on_the_same_frames(replayed, expected_labels):
    result, _ = replayed
    reference = ConfusionMatrix(result.confusion.num_classes)
    for k, prediction in enumerate(expected_labels):
        reference.update(prediction, generate_frame(0, k, WIDTH, HEIGHT, sequence=True)[1])
    assert result.ground_truth.matched == FRAMES
    assert torch.equal(result.confusion.matrix, reference.matrix)
    assert result.confusion.miou() == reference.miou()


def test_frame_counts_add_up_in_realtime_mode(realtime):
    result, _ = realtime
    counts = [result.count(o) for o in ("processed", "dropped", "rejected", "failed")]
    assert sum(counts) == len(result.records) == FRAMES
    assert result.ground_truth.matched + result.ground_truth.image_not_processed == FRAMES


def write_custom_bag(path, images, labels=()):
    """images/labels: (receive ns, message); written in receive order."""
    with OutputBag(path) as out:
        for when, topic, msg in sorted([(t, IMAGE, m) for t, m in images]
                                       + [(t, LABELS, m) for t, m in labels],
                                       key=lambda e: e[0]):
            out.write(topic, when, msg)
    return path


def header(sec):
    return Header(stamp=Time(sec=sec, nanosec=0), frame_id="camera")


def test_malformed_image_is_rejected_with_its_reason_and_replay_goes_on(engine, tmp_path):
    rgb, _ = generate_frame(0, 0, WIDTH, HEIGHT, sequence=True)
    good = [build_image(Image, rgb, "rgb8", header(s)) for s in (1, 2, 3)]
    bad = build_image(Image, rgb, "rgb8", header(4))
    bad.height = HEIGHT + 1  # data no longer step * height
    bag = write_custom_bag(tmp_path / "bag", [(1, good[0]), (2, bad), (3, good[1]),
                                              (4, good[2])])
    result = replay(bag, engine, label_topic=None)
    assert [r.outcome for r in result.records] == ["processed", "rejected", "processed",
                                                   "processed"]
    assert "data has" in result.records[1].reason


def test_ground_truth_without_a_matching_image_is_counted(engine, tmp_path):
    rgb, label = generate_frame(0, 0, WIDTH, HEIGHT, sequence=True)
    images = [(s, build_image(Image, rgb, "rgb8", header(s))) for s in (1, 2)]
    labels = [(s, build_image(Image, label, "mono8", header(s))) for s in (1, 2, 9)]
    result = replay(write_custom_bag(tmp_path / "bag", images, labels), engine)
    gt = result.ground_truth
    assert (gt.messages, gt.matched, gt.without_image) == (3, 2, 1)


def test_ground_truth_that_is_not_mono8_is_rejected_not_scored(engine, tmp_path):
    rgb, _ = generate_frame(0, 0, WIDTH, HEIGHT, sequence=True)
    images = [(1, build_image(Image, rgb, "rgb8", header(1)))]
    labels = [(1, build_image(Image, rgb, "rgb8", header(1)))]
    result = replay(write_custom_bag(tmp_path / "bag", images, labels), engine)
    assert (result.ground_truth.rejected, result.ground_truth.matched) == (1, 0)
    assert "expected mono8" in next(iter(result.ground_truth.reasons))


def test_ground_truth_recorded_before_its_image_is_still_matched(engine, tmp_path):
    rgb, label = generate_frame(0, 0, WIDTH, HEIGHT, sequence=True)
    images = [(5, build_image(Image, rgb, "rgb8", header(1)))]
    labels = [(4, build_image(Image, label, "mono8", header(1)))]
    result = replay(write_custom_bag(tmp_path / "bag", images, labels), engine)
    assert result.ground_truth.matched == 1


def test_sample_frames_hold_input_prediction_and_ground_truth(replayed):
    result, _ = replayed
    assert [s.index for s in result.samples] == [0, FRAMES // 4, FRAMES // 2, 3 * FRAMES // 4]
    sample = result.samples[0]
    rgb, truth = generate_frame(0, 0, WIDTH, HEIGHT, sequence=True)
    assert np.array_equal(sample.image, rgb)
    assert np.array_equal(sample.ground_truth, truth)  # class ids, coloured when drawn
    assert sample.label.shape == (HEIGHT, WIDTH) and sample.label.dtype == np.uint8


def test_diagnostics_estimate_the_frames_missing_from_the_bag(engine, tmp_path):
    # a 10 Hz camera whose frames 10, 11 and 20 never reached the recorder
    rgb, _ = generate_frame(0, 0, WIDTH, HEIGHT, sequence=True)
    start_ns = 1_700_000_000 * 10**9
    images = []
    for k in (k for k in range(30) if k not in (10, 11, 20)):
        stamp_ns = start_ns + k * 100_000_000
        stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        images.append((stamp_ns + 5_000_000, build_image(
            Image, rgb, "rgb8", Header(stamp=stamp, frame_id="camera"))))
    bag = write_custom_bag(tmp_path / "bag", images)
    replay(bag, engine, tmp_path / "out", label_topic=None)
    last = dict((kv.key, kv.value)
                for kv in read_topic(tmp_path / "out", "/diagnostics")[-1][1].status[0].values)
    assert last["frames lost before the node (estimated)"] == "3"
    assert last["camera rate from stamps (Hz)"] == "10.00"
    assert last["frames received"] == "27"
