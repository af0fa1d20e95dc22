"""Several cameras through one engine: MultiCameraPipeline with a real engine (Fast-SCNN,
random weights, CPU) and rosbags' message classes standing in for rclpy's; and the
engine's batch of one size against single frames."""

import threading
import time

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.ros.diagnostics import OK, WARN, DiagnosticStatusContent
from swiftseg_ros.ros.frames import FrameCounters
from swiftseg_ros.ros.multicamera import (
    BatchStats,
    MultiCameraPipeline,
    add_latency,
    sum_counters,
)

TS = get_typestore(Stores.ROS2_HUMBLE)
Image = TS.types["sensor_msgs/msg/Image"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]

# three cameras of different sizes (two share one, so they batch together)
SIZES = {"front": (128, 64), "down": (64, 64), "rear": (128, 64)}


@pytest.fixture(scope="module")
def engine():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    engine = SegmentationEngine(EngineConfig(network="fastscnn", device="cpu",
                                             outputs=("label", "color", "overlay"),
                                             warmup_iters=1))
    yield engine
    engine.release()


def pixels(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (40, 120, 30)
    image[:, width // 2:] = (90, 90, 200)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top:top + 16, left:left + 16] = 250
    return image


def image_msg(camera: str, seq: int, size=None, encoding="rgb8", now=None):
    width, height = size or SIZES[camera]
    data = pixels(width, height, seq)
    stamp = time.time() if now is None else now
    header = Header(stamp=Time(sec=int(stamp), nanosec=int(stamp % 1 * 1e9) // 1000 * 1000 + seq),
                    frame_id=f"{camera}_optical")
    return Image(header=header, height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=width * 3, data=data.reshape(-1))


def make_pipeline(engine, published, **options):
    def publish(camera, frame, messages):
        published.append((camera, frame.header, messages))

    return MultiCameraPipeline(engine, Image, list(SIZES), publish=publish, now_s=time.time,
                               node_name="swiftseg", **options)


def test_engine_batch_gives_each_frame_the_labels_of_a_single_frame(engine):
    frames = [pixels(128, 64, seed) for seed in range(3)]
    singles = [engine.infer(frame, "rgb8").copy() for frame in frames]
    batch = engine.infer_batch([(frame, "rgb8") for frame in frames])
    assert len(batch) == 3
    for single, batched in zip(singles, batch, strict=True):
        assert np.array_equal(single.label, batched.label)
        assert np.array_equal(single.overlay, batched.overlay)  # each its own image under it


def test_batch_outputs_carry_each_cameras_own_header_at_its_own_size(engine):
    delivered = []
    pipeline = make_pipeline(engine, [])
    for camera, (width, height) in SIZES.items():
        pipeline.prepare_camera(camera, width, height, "rgb8")
    pipeline._one_by_one[(128, 64, 2)] = False  # batched, whatever this CPU measured
    items = [(camera, image_msg(camera, seq)) for seq, camera in enumerate(SIZES)]
    outcomes = pipeline.process_batch(
        items, lambda index, camera, frame: delivered.append(
            (index, camera, frame.header, pipeline.output_messages(frame))))
    assert outcomes == [None, None, None]
    assert sorted(index for index, *_ in delivered) == [0, 1, 2]
    for index, camera, header, messages in delivered:
        assert items[index][0] == camera
        assert header is items[index][1].header
        for message in messages.values():
            assert message.header.frame_id == f"{camera}_optical"
            assert message.header.stamp == items[index][1].header.stamp
            assert (message.width, message.height) == SIZES[camera]
    # front and rear (128x64) ran as one batch of two, down alone
    assert set(pipeline.batches.summary()) == {1, 2}


def test_a_malformed_image_is_rejected_for_its_camera_and_the_others_are_published(engine):
    pipeline = make_pipeline(engine, [])
    bad = image_msg("down", 1)
    bad.data = bad.data[:100]  # truncated
    delivered = []
    outcomes = pipeline.process_batch(
        [("front", image_msg("front", 0)), ("down", bad), ("rear", image_msg("rear", 2))],
        lambda index, camera, frame: delivered.append(camera))
    assert outcomes[0] is None and outcomes[2] is None
    assert "down" not in delivered and outcomes[1] is not None


def test_a_camera_that_changes_size_mid_stream_is_rejected_with_one_line(engine):
    reasons = []
    pipeline = make_pipeline(engine, [], on_rejected=lambda camera, why: reasons.append(
        (camera, why)))
    deliver = lambda *args: None  # noqa: E731
    assert pipeline.process_batch([("front", image_msg("front", 0))], deliver) == [None]
    [outcome] = pipeline.process_batch([("front", image_msg("front", 1, size=(64, 64)))],
                                       deliver)
    assert outcome is not None
    [(camera, why)] = reasons
    assert camera == "front" and "\n" not in why
    assert "image 64x64 rgb8 differs from its stream's 128x64 rgb8" in why


def wait_for(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_three_cameras_at_their_rates_each_publish_only_their_own_frames(engine):
    published = []
    pipeline = make_pipeline(engine, published)
    pipeline.start()
    sent = {camera: [] for camera in SIZES}
    rates = {"front": 1, "down": 2, "rear": 3}  # frames per tick
    for tick in range(12):
        for camera, every in rates.items():
            if tick % every == 0:
                msg = image_msg(camera, tick)
                sent[camera].append(msg.header)
                pipeline.offer(camera, msg)
        time.sleep(0.01)
    assert pipeline.stop(30)
    counters = pipeline.counters()
    for camera in SIZES:
        mine = [header for cam, header, _ in published if cam == camera]
        assert mine, camera
        assert all(header in sent[camera] for header in mine)
        for cam, _header, messages in published:
            if cam == camera:
                assert all(m.header.frame_id == f"{camera}_optical" for m in messages.values())
        c = counters[camera]
        assert c.received == len(sent[camera])
        assert c.balanced() and c.processed == len(mine)


def test_a_camera_sending_garbage_does_not_slow_the_others(engine):
    published = []
    pipeline = make_pipeline(engine, published)
    pipeline.start()
    for seq in range(10):
        bad = image_msg("down", seq)
        bad.encoding = "yuv422_yuy2_garbage"
        pipeline.offer("down", bad)
        pipeline.offer("front", image_msg("front", seq))
        pipeline.offer("rear", image_msg("rear", seq))
        wait_for(lambda: sum(c.pending + c.in_flight
                             for c in pipeline.counters().values()) == 0)
    assert pipeline.stop(30)
    counters = pipeline.counters()
    assert counters["down"].rejected == 10 and counters["down"].processed == 0
    assert counters["front"].processed == counters["rear"].processed == 10
    assert {camera for camera, *_ in published} == {"front", "rear"}


def test_reports_have_one_status_per_camera_then_the_engines(engine):
    # the worker waits for all three cameras, so front and rear always meet in one batch
    pipeline = make_pipeline(engine, [], batch_wait_s=30.0)
    for camera, (width, height) in SIZES.items():
        pipeline.prepare_camera(camera, width, height, "rgb8")
    pipeline._one_by_one[(128, 64, 2)] = False  # batched, whatever this CPU measured
    pipeline.start()
    for seq in range(3):
        for camera in SIZES:
            pipeline.offer(camera, image_msg(camera, seq))
        wait_for(lambda: sum(c.pending + c.in_flight
                             for c in pipeline.counters().values()) == 0)
    assert pipeline.stop(30)
    statuses = pipeline.reports(latency_budget_ms=60000.0)
    assert [s.name for s in statuses] == ["swiftseg: camera front", "swiftseg: camera down",
                                          "swiftseg: camera rear", "swiftseg: engine"]
    for status in statuses[:3]:
        values = dict(status.values)
        assert values["frames processed"] == "3"
        assert float(values["latency stamp to publish p95 (ms)"]) > 0
    engine_values = dict(statuses[3].values)
    assert engine_values["frames processed"] == "9"
    assert engine_values["cameras"] == "front, down, rear"
    assert "batch sizes seen" in engine_values
    assert any(key.startswith("batch 2 forward") for key in engine_values)


def test_only_the_camera_losing_frames_before_the_node_gets_the_transport_hint(engine):
    # front at 50 Hz by its stamps with 6 frames in 20 never sent; down loses none. The
    # worker is not started: refused frames still count as received, and stamps are what
    # the losses are read from
    pipeline = make_pipeline(engine, [], lost_frames_hint="use the profile")
    start = time.time() - 5.0
    for index in range(100):
        stamp = start + index * 0.02
        if index % 20 not in (3, 4, 9, 10, 15, 16):
            pipeline.offer("front", image_msg("front", index, now=stamp))
        pipeline.offer("down", image_msg("down", index, now=stamp))
    by_name = {status.name: status.message for status in pipeline.reports()}
    assert "lost before the node" in by_name["swiftseg: camera front"]
    assert by_name["swiftseg: camera front"].endswith(": use the profile")
    assert "use the profile" not in by_name["swiftseg: camera down"]
    assert "use the profile" not in by_name["swiftseg: engine"]


def test_latency_over_budget_turns_a_camera_status_warn():
    status = DiagnosticStatusContent("swiftseg: camera front", OK, "segmenting 10.0 Hz in")
    add_latency(status, [10.0, 20.0, 300.0, 300.0], budget_ms=100.0)
    assert status.level == WARN and "over the 100 ms budget" in status.message


def test_a_latency_warning_keeps_the_lost_frames_and_their_hint():
    message = ("segmenting 10.0 Hz in, 9.0 Hz out; ~5 camera frames lost before the node "
               "since the last report (camera at 10.0 Hz by its stamps): use the profile")
    status = DiagnosticStatusContent("swiftseg: camera front", OK, message)
    add_latency(status, [10.0, 20.0, 300.0, 300.0], budget_ms=100.0)
    assert status.message.startswith("p95 latency from stamp to publish")
    assert status.message.endswith("; ~5 camera frames lost before the node since the last "
                                   "report (camera at 10.0 Hz by its stamps): use the profile")


def test_batch_stats_count_batches_by_size():
    stats = BatchStats()
    for size, ms in ((1, 10.0), (2, 15.0), (2, 17.0)):
        stats.record(size, ms, ms - 1)
    summary = stats.summary()
    assert summary[1]["batches"] == 1 and summary[2]["batches"] == 2
    assert summary[2]["total_p50"] == pytest.approx(16.0)


def test_sum_counters_adds_every_camera():
    total = sum_counters([FrameCounters(received=3, processed=2, dropped=1),
                          FrameCounters(received=2, rejected=2, last_rejection="x")])
    assert (total.received, total.processed, total.dropped, total.rejected) == (5, 2, 1, 2)
    assert total.balanced() and total.last_rejection == "x"


def test_prepare_allocates_each_size_once_for_every_camera(engine):
    pipeline = make_pipeline(engine, [])
    assert pipeline.prepare(96, 64, "rgb8") is True
    assert {(96, 64, batch) for batch in (1, 2, 3)} <= pipeline._prepared  # three cameras
    assert pipeline.prepare(96, 64, "rgb8") is False


def test_worker_threads_are_not_left_running(engine):
    pipeline = make_pipeline(engine, [])
    pipeline.start()
    assert pipeline.stop(5)
    assert not any(t.name == "swiftseg-cameras" and t.is_alive()
                   for t in threading.enumerate())


def test_each_cameras_first_frame_prepares_the_batches_of_its_size(engine):
    pipeline = make_pipeline(engine, [])
    prepares = engine.stats()["plans"]["prepares"]
    assert pipeline.prepare_camera("front", 128, 64, "rgb8") in (True, False)
    assert pipeline.prepare_camera("rear", 128, 64, "rgb8") is True  # batch 2 of 128x64
    assert pipeline.prepare_camera("rear", 128, 64, "rgb8") is False
    assert (128, 64, 2) in pipeline._prepared
    before = engine.stats()["plans"]["prepares"]
    assert before >= prepares
    pipeline.process_batch([("front", image_msg("front", 0)), ("rear", image_msg("rear", 1))],
                           lambda *args: None)
    assert engine.stats()["plans"]["prepares"] == before  # no plan made inside the batch


def test_batches_measured_slower_run_frame_by_frame_with_the_same_outputs(engine):
    pipeline = make_pipeline(engine, [])
    for camera, (width, height) in SIZES.items():
        pipeline.prepare_camera(camera, width, height, "rgb8")
    assert (128, 64, 2) in pipeline._one_by_one  # measured when prepared
    assert "batching 2 x 128x64" in pipeline.batching_choices
    items = [("front", image_msg("front", 0)), ("rear", image_msg("rear", 1))]
    labels = {}
    for one_by_one in (False, True):
        pipeline._one_by_one[(128, 64, 2)] = one_by_one
        pipeline.batches = BatchStats()
        pipeline.process_batch(items, lambda index, camera, frame, mode=one_by_one:
                               labels.setdefault((mode, camera), frame.result.label.copy()))
        assert set(pipeline.batches.summary()) == ({1} if one_by_one else {2})
    for camera in ("front", "rear"):
        assert np.array_equal(labels[(False, camera)], labels[(True, camera)])
