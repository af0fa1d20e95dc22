"""SegmentationPipeline: messages through a real engine (Fast-SCNN, random weights, CPU),
with rosbags' message classes and CDR round trips standing in for rclpy's."""

import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.ros.conversions import ImageRejected
from swiftseg_ros.ros.diagnostics import ERROR, OK
from swiftseg_ros.ros.pipeline import (
    SegmentationPipeline,
    camera_info_fields,
    camera_info_topic,
    wanted_outputs,
)

TS = get_typestore(Stores.ROS2_HUMBLE)
Image = TS.types["sensor_msgs/msg/Image"]
CompressedImage = TS.types["sensor_msgs/msg/CompressedImage"]
CameraInfo = TS.types["sensor_msgs/msg/CameraInfo"]
RegionOfInterest = TS.types["sensor_msgs/msg/RegionOfInterest"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]

HEIGHT, WIDTH = 64, 128


def make_engine(outputs=("label", "color")) -> SegmentationEngine:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return SegmentationEngine(EngineConfig(network="fastscnn", device="cpu", outputs=outputs,
                                           warmup_iters=1))


@pytest.fixture(scope="module")
def engine():
    engine = make_engine()
    yield engine
    engine.release()


def scene(seed: int = 0) -> np.ndarray:
    """A synthetic rgb8 scene: two coloured halves and a bright square."""
    rng = np.random.default_rng(seed)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, : WIDTH // 2] = (40, 120, 30)
    image[:, WIDTH // 2:] = (90, 90, 200)
    top, left = rng.integers(0, HEIGHT // 2), rng.integers(0, WIDTH // 2)
    image[top:top + 16, left:left + 16] = 250
    return image


def header(sec: int, nanosec: int = 500, frame_id: str = "camera_optical"):
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def cdr_round_trip(msg):
    return TS.deserialize_cdr(TS.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def image_msg(pixels: np.ndarray, sec: int = 7, encoding: str = "rgb8"):
    msg = Image(header=header(sec), height=pixels.shape[0], width=pixels.shape[1],
                encoding=encoding, is_bigendian=0, step=pixels.shape[1] * pixels.shape[2],
                data=np.ascontiguousarray(pixels).reshape(-1))
    return cdr_round_trip(msg)


def camera_info(width=640, height=480):
    k = np.array([500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0])
    p = np.array([500.0, 0.0, 320.0, 10.0, 0.0, 505.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    return CameraInfo(
        header=header(3), height=height, width=width, distortion_model="plumb_bob",
        d=np.array([0.1, -0.2, 0.0, 0.0, 0.0]), k=k, r=np.eye(3).reshape(-1), p=p,
        binning_x=0, binning_y=0,
        roi=RegionOfInterest(x_offset=64, y_offset=48, height=240, width=320, do_rectify=True))


class Collector:
    """A publish callback that keeps what the worker published, and can be slow."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.published = []
        self.lock = threading.Lock()

    def __call__(self, segmented, messages):
        time.sleep(self.delay_s)
        with self.lock:
            self.published.append(messages)


def finished(counters) -> tuple[int, int, int]:
    return counters.processed, counters.rejected, counters.failed


def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -------------------------------------------------------------------- one frame


def test_output_messages_carry_the_input_header_unchanged(engine):
    pipeline = SegmentationPipeline(engine, Image)
    msg = image_msg(scene(), sec=1234)
    messages = pipeline.output_messages(pipeline.segment(msg))
    assert set(messages) == {"label", "color"}
    for out in messages.values():
        assert out.header.stamp.sec == 1234 and out.header.stamp.nanosec == 500
        assert out.header.frame_id == "camera_optical"


def test_label_is_mono8_and_color_rgb8_at_the_input_size(engine):
    pipeline = SegmentationPipeline(engine, Image)
    messages = pipeline.output_messages(pipeline.segment(image_msg(scene())))
    label, color = messages["label"], messages["color"]
    assert (label.encoding, label.height, label.width, label.step) == ("mono8", HEIGHT, WIDTH,
                                                                       WIDTH)
    assert (color.encoding, color.height, color.width, color.step) == ("rgb8", HEIGHT, WIDTH,
                                                                       WIDTH * 3)
    assert int(label.data.max()) < engine.num_classes


def test_output_messages_survive_a_cdr_round_trip_unchanged(engine):
    pipeline = SegmentationPipeline(engine, Image)
    label = pipeline.output_messages(pipeline.segment(image_msg(scene())))["label"]
    again = cdr_round_trip(label)
    assert np.array_equal(again.data, label.data)
    assert again.header.stamp.sec == label.header.stamp.sec


def test_output_messages_do_not_change_when_the_next_frame_is_segmented(engine):
    pipeline = SegmentationPipeline(engine, Image)
    first = pipeline.output_messages(pipeline.segment(image_msg(scene(1))))["color"]
    kept = first.data.copy()
    pipeline.segment(image_msg(np.full((HEIGHT, WIDTH, 3), 255, np.uint8)))
    assert np.array_equal(first.data, kept)


def test_bgr8_input_gives_the_same_labels_as_the_rgb8_image(engine):
    pipeline = SegmentationPipeline(engine, Image)
    rgb = scene(2)
    from_rgb = pipeline.segment(image_msg(rgb)).result.label.copy()
    from_bgr = pipeline.segment(image_msg(rgb[:, :, ::-1].copy(), encoding="bgr8")).result.label
    assert np.array_equal(from_rgb, from_bgr)


def test_compressed_png_is_decoded_and_segmented_at_its_size(engine):
    pipeline = SegmentationPipeline(engine, Image, compressed=True)
    ok, png = cv2.imencode(".png", scene(3)[:, :, ::-1])
    assert ok
    msg = cdr_round_trip(CompressedImage(header=header(99), format="rgb8; png compressed bgr8",
                                         data=png.reshape(-1)))
    segmented = pipeline.segment(msg)
    assert segmented.output_size() == (WIDTH, HEIGHT)
    assert segmented.pixel_format == "bgr8"
    assert segmented.header.stamp.sec == 99


def test_malformed_image_is_rejected_with_its_reason(engine):
    pipeline = SegmentationPipeline(engine, Image)
    msg = image_msg(scene())
    msg.height = HEIGHT + 1  # data no longer step * height
    with pytest.raises(ImageRejected, match="data has"):
        pipeline.segment(msg)


# ------------------------------------------------------------------ worker mode


def test_worker_publishes_each_processed_frame_with_its_own_header(engine):
    collector = Collector()
    pipeline = SegmentationPipeline(engine, Image, publish=collector)
    pipeline.start()
    try:
        for sec in range(3):
            pipeline.offer(image_msg(scene(sec), sec=100 + sec))
            wait_for(lambda n=sec: pipeline.counters().processed == n + 1)
    finally:
        assert pipeline.stop(timeout=30.0)
    stamps = [messages["label"].header.stamp.sec for messages in collector.published]
    assert stamps == [100, 101, 102]
    assert all(messages["color"].header.stamp.sec == messages["label"].header.stamp.sec
               for messages in collector.published)


def test_stop_returns_after_the_frame_in_progress_is_published(engine):
    collector = Collector(delay_s=0.3)
    pipeline = SegmentationPipeline(engine, Image, publish=collector)
    pipeline.start()
    pipeline.offer(image_msg(scene()))
    wait_for(lambda: pipeline.counters().in_flight == 1)
    pipeline.offer(image_msg(scene(1)))  # waits in the slot, dropped by stop
    assert pipeline.stop(timeout=30.0)
    counters = pipeline.counters()
    assert counters.processed == len(collector.published) == 1
    assert counters.dropped == 1 and counters.in_flight == 0 and counters.pending == 0
    assert counters.balanced()


def offer_one_unsupported_frame(pipeline):
    """Start `pipeline`, offer it one yuv444 frame, wait until it is rejected, stop it."""
    bad = image_msg(scene())
    bad.encoding = "yuv444"
    pipeline.start()
    try:
        pipeline.offer(bad)
        wait_for(lambda: pipeline.counters().rejected == 1)
    finally:
        pipeline.stop(timeout=30.0)


def test_rejected_frame_is_counted_reported_and_not_published(engine):
    collector, reasons = Collector(), []
    pipeline = SegmentationPipeline(engine, Image, publish=collector, on_rejected=reasons.append)
    offer_one_unsupported_frame(pipeline)
    assert collector.published == []
    assert len(reasons) == 1 and "unsupported encoding 'yuv444'" in reasons[0]


def test_frame_larger_than_max_input_size_is_rejected_not_failed():
    engine = SegmentationEngine(EngineConfig(network="fastscnn", device="cpu", warmup_iters=1,
                                             max_input_size=(WIDTH // 2, HEIGHT)))
    reasons = []
    pipeline = SegmentationPipeline(engine, Image, publish=Collector(), on_rejected=reasons.append)
    pipeline.start()
    try:
        pipeline.offer(image_msg(scene()))
        wait_for(lambda: pipeline.counters().rejected == 1)
    finally:
        pipeline.stop(timeout=30.0)
        engine.release()
    assert pipeline.counters().failed == 0
    assert "max_input_size" in reasons[0]


def test_failed_frame_goes_to_on_failed_and_the_worker_goes_on(engine):
    failures = []

    def publish(segmented, messages):
        if segmented.header.stamp.sec == 1:
            raise RuntimeError("publisher gone")

    pipeline = SegmentationPipeline(engine, Image, publish=publish, on_failed=failures.append)
    pipeline.start()
    try:
        pipeline.offer(image_msg(scene(), sec=1))
        wait_for(lambda: pipeline.counters().failed == 1)
        pipeline.offer(image_msg(scene(), sec=2))
        wait_for(lambda: pipeline.counters().processed == 1)
    finally:
        pipeline.stop(timeout=30.0)
    assert [str(f) for f in failures] == ["publisher gone"]


def test_start_without_a_publish_callback_is_refused(engine):
    with pytest.raises(RuntimeError, match="publish callback"):
        SegmentationPipeline(engine, Image).start()


def test_report_counts_frames_and_turns_error_after_a_failure(engine):
    clock = [0.0]

    def publish(segmented, messages):
        if segmented.header.stamp.sec == 1:
            raise RuntimeError("boom")

    pipeline = SegmentationPipeline(engine, Image, publish=publish, now_s=lambda: clock[0],
                                    on_failed=lambda exc: None)
    pipeline.start()
    try:
        for done, sec in enumerate((2, 3, 1), start=1):
            clock[0] += 0.1
            pipeline.offer(image_msg(scene(), sec=sec))
            wait_for(lambda n=done: sum(finished(pipeline.counters())) == n)
    finally:
        pipeline.stop(timeout=30.0)
    status = pipeline.report()
    values = dict(status.values)
    assert status.level == ERROR
    assert values["frames processed"] == "2" and values["frames failed"] == "1"
    assert values["network"] == "fastscnn"
    assert pipeline.report().level == OK  # no new failure since the previous report


# ------------------------------------------------------------ run-time changes


def test_requested_outputs_apply_from_the_next_frame():
    engine = make_engine(("label", "color"))
    try:
        pipeline = SegmentationPipeline(engine, Image)
        assert set(pipeline.output_messages(pipeline.segment(image_msg(scene())))) == {
            "label", "color"}
        pipeline.request_outputs(["label"])
        assert set(pipeline.output_messages(pipeline.segment(image_msg(scene())))) == {"label"}
    finally:
        engine.release()


def test_requesting_an_unknown_output_is_refused_at_once(engine):
    with pytest.raises(ValueError, match="unknown 'depth'"):
        SegmentationPipeline(engine, Image).request_outputs(["label", "depth"])


def test_overlay_alpha_change_applies_to_the_next_frame():
    engine = make_engine(("label", "color", "overlay"))
    try:
        pipeline = SegmentationPipeline(engine, Image)
        image = scene(4)
        pipeline.request_overlay_alpha(0.0)
        camera_only = pipeline.segment(image_msg(image)).result.overlay.copy()
        pipeline.request_overlay_alpha(1.0)
        result = pipeline.segment(image_msg(image)).result
        assert np.abs(camera_only.astype(int) - image).max() <= 1
        assert np.abs(result.overlay.astype(int) - result.color).max() <= 1
    finally:
        engine.release()


def test_prepare_allocates_before_the_first_frame(engine):
    pipeline = SegmentationPipeline(engine, Image)
    pipeline.prepare(WIDTH * 2, HEIGHT * 2, "rgb8")
    assert engine.input_size == (WIDTH * 2, HEIGHT * 2)


# ---------------------------------------------------------------- helpers


def test_wanted_outputs_are_the_switched_on_ones_with_subscribers():
    wanted = wanted_outputs(("label", "color", "overlay"), {"label": 1, "color": 0, "overlay": 2})
    assert wanted == ("label", "overlay")


def test_wanted_outputs_fall_back_to_the_label_when_nobody_listens():
    assert wanted_outputs(("label", "color"), {"label": 0, "color": 0}) == ("label",)


def test_camera_info_for_half_size_outputs_has_halved_intrinsics():
    fields = camera_info_fields(camera_info(640, 480), header(42), 320, 240)
    assert (fields["width"], fields["height"]) == (320, 240)
    assert fields["k"].tolist() == [250.0, 0.0, 160.0, 0.0, 252.5, 120.0, 0.0, 0.0, 1.0]
    assert fields["p"][[0, 2, 3, 5, 6]].tolist() == [250.0, 160.0, 5.0, 252.5, 120.0]
    roi = fields["roi"]
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (32, 24, 160, 120)
    assert fields["header"].stamp.sec == 42


def test_camera_info_at_the_same_size_keeps_the_calibration():
    info = camera_info(640, 480)
    fields = camera_info_fields(info, header(42), 640, 480)
    assert np.array_equal(fields["k"], info.k) and np.array_equal(fields["p"], info.p)
    assert fields["distortion_model"] == "plumb_bob"
    assert np.array_equal(fields["d"], info.d)


def test_camera_info_fields_build_a_message_that_serializes():
    msg = CameraInfo(**camera_info_fields(camera_info(), header(5), 320, 240))
    again = cdr_round_trip(msg)
    assert again.width == 320 and again.k[0] == 250.0


def test_uncalibrated_camera_info_is_passed_unscaled():
    fields = camera_info_fields(camera_info(0, 0), header(5), 320, 240)
    assert fields["k"][0] == 500.0 and (fields["width"], fields["height"]) == (320, 240)


@pytest.mark.parametrize(("image_topic", "compressed", "expected"), [
    ("/camera/image_raw", False, "/camera/camera_info"),
    ("/robot1/front/image", False, "/robot1/front/camera_info"),
    ("/image", False, "/camera_info"),
    ("/camera/image_raw/compressed", True, "/camera/camera_info"),
])
def test_camera_info_topic_is_next_to_the_image(image_topic, compressed, expected):
    assert camera_info_topic(image_topic, compressed) == expected


def test_node_is_the_only_module_that_imports_rclpy():
    # besides the soak's in-process target, which runs that node with a camera peer node
    package = Path(__file__).resolve().parent.parent / "swiftseg_ros"
    importing = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if re.search(r"^\s*(import rclpy|from rclpy[ .])", path.read_text(encoding="utf-8"),
                     re.MULTILINE)
    )
    assert importing == ["ros/node.py", "soak/targets.py"]


# -------------------------------------------------------------- pipelined worker


def test_pipelined_worker_publishes_every_frame_with_its_own_header_and_labels(engine):
    serial = {sec: engine.infer(scene(sec), "rgb8").label.copy() for sec in range(4)}
    published = []

    def publish(segmented, messages):
        published.append((messages["label"].header.stamp.sec, segmented.arrays()["label"].copy()))

    pipeline = SegmentationPipeline(engine, Image, publish=publish, pipelined=True)
    pipeline.start()
    try:
        for sec in range(4):
            pipeline.offer(image_msg(scene(sec), sec=sec))
            wait_for(lambda n=sec: len(published) == n + 1)  # idle: flushed at once
    finally:
        assert pipeline.stop(timeout=30.0)
    assert [sec for sec, _ in published] == [0, 1, 2, 3]
    for sec, label in published:
        np.testing.assert_array_equal(label, serial[sec])
    assert pipeline.counters().balanced()


def test_pipelined_worker_overlaps_a_waiting_frame_and_stop_publishes_the_last():
    engine = make_engine()
    collector = Collector(delay_s=0.2)  # slow publishing: the next frame waits meanwhile
    pipeline = SegmentationPipeline(engine, Image, publish=collector, pipelined=True)
    pipeline.start()
    try:
        pipeline.offer(image_msg(scene(0), sec=0))
        wait_for(lambda: len(collector.published) == 1)
        pipeline.offer(image_msg(scene(1), sec=1))
        pipeline.offer(image_msg(scene(2), sec=2))  # replaces 1 if it still waited
        wait_for(lambda: pipeline.counters().pending == 0)
    finally:
        assert pipeline.stop(timeout=30.0)
        engine.release()
    stamps = [m["label"].header.stamp.sec for m in collector.published]
    assert stamps[0] == 0 and stamps[-1] == 2 and stamps == sorted(stamps)
    counters = pipeline.counters()
    assert counters.processed == len(stamps) and counters.balanced()


def test_pipelined_worker_publishes_the_frame_in_flight_before_a_rejection(engine):
    collector, reasons = Collector(), []
    pipeline = SegmentationPipeline(engine, Image, publish=collector, pipelined=True,
                                    on_rejected=reasons.append)
    engine.infer_pipelined(scene(5), "rgb8", tag=(header(5), "rgb8"))  # one in flight
    offer_one_unsupported_frame(pipeline)
    assert [m["label"].header.stamp.sec for m in collector.published] == [5]
    assert len(reasons) == 1


def test_pipelining_is_on_by_default_only_on_cuda(engine):
    assert SegmentationPipeline(engine, Image).pipelined is engine.on_cuda


def test_camera_info_size_prepares_before_the_first_frame_but_not_after_it():
    engine = make_engine()
    pipeline = SegmentationPipeline(engine, Image)
    try:
        assert pipeline.prepare_unless_prepared(WIDTH, HEIGHT, "rgb8")
        assert engine.input_size == (WIDTH, HEIGHT)
        assert not pipeline.prepare_unless_prepared(2 * WIDTH, 2 * HEIGHT, "rgb8")
        assert engine.input_size == (WIDTH, HEIGHT)
    finally:
        engine.release()
