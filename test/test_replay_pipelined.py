"""Replay through the engine's pipelined path (forced on the CPU, where it runs without
overlap) gives what the serial run gives: the same labels in the output bag, the same
scores and the same frame accounting, across a size change and a rejected frame, and
Ctrl-C finishes the frame in flight."""

import numpy as np
import pytest
import torch
from replay_helpers import small_engine

from swiftseg_ros.replay.bagio import TYPESTORE, OutputBag, deserialize, open_bag
from swiftseg_ros.replay.run import Replay, ReplayOptions
from swiftseg_ros.ros.conversions import build_image
from swiftseg_ros.synthetic.frames import generate_frame

IMAGE, LABELS = "/camera/image_raw", "/camera/labels"
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
# (width, height) per frame: a size change after frame 2, back after frame 5; frame 4 bad
SIZES = [(64, 32)] * 3 + [(48, 32)] * 3 + [(64, 32)] * 2
REJECTED = 4


@pytest.fixture(scope="module")
def engine():
    yield from small_engine()


def header(sec):
    return Header(stamp=Time(sec=sec, nanosec=0), frame_id="camera")


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """Images with ground truth (frame 1's recorded before its image), one malformed."""
    path = tmp_path_factory.mktemp("pipelined") / "bag"
    with OutputBag(path) as out:
        for k, (width, height) in enumerate(SIZES):
            rgb, label = generate_frame(0, k, width, height, sequence=True)
            image = build_image(Image, rgb, "rgb8", header(k + 1))
            if k == REJECTED:
                image.height += 1  # data no longer step * height
            when = (k + 1) * 100_000_000
            if k == 1:
                out.write(LABELS, when - 1, build_image(Image, label, "mono8", header(k + 1)))
            out.write(IMAGE, when, image)
            if k != 1:
                out.write(LABELS, when + 1, build_image(Image, label, "mono8", header(k + 1)))
    return path


def replay(bag_path, engine, out_path, **options):
    """The run's result, with `settled`: frame indices in the order their fate was known."""
    with open_bag(bag_path) as bag, OutputBag(out_path) as output:
        run = Replay(bag, engine, ReplayOptions(IMAGE, label_topic=LABELS, progress=False,
                                                **options), output)
        settle, settled = run._settle, []

        def recorded_settle(record):
            settled.append(record.index)
            settle(record)

        run._settle = recorded_settle
        result = run.run()
    result.settled = list(dict.fromkeys(settled))
    return result


def labels_written(path):
    with open_bag(path) as bag:
        return [(m.timestamp, msg.header.stamp.sec, msg.width, msg.height, bytes(msg.data))
                for m in bag.messages(["/swiftseg/label"]) for msg in [deserialize(m)]]


def assert_same_run(serial, pipelined, serial_out, pipelined_out):
    def frames(result):
        return [(r.index, r.bag_ns, r.stamp_ns, r.outcome, r.reason, r.miou)
                for r in result.records]

    assert frames(pipelined) == frames(serial)
    # the frame in flight is finished before a rejection, as in the node's worker
    assert pipelined.settled == serial.settled == list(range(len(SIZES)))
    assert labels_written(pipelined_out) == labels_written(serial_out)
    assert torch.equal(pipelined.confusion.matrix, serial.confusion.matrix)
    assert vars(pipelined.ground_truth) == vars(serial.ground_truth)
    assert [s.index for s in pipelined.samples] == [s.index for s in serial.samples]
    for a, b in zip(pipelined.samples + pipelined.worst, serial.samples + serial.worst,
                    strict=True):
        assert np.array_equal(a.label, b.label) and a.miou == b.miou
    assert pipelined.output_counts == serial.output_counts


@pytest.mark.parametrize("mode", ["all", "realtime"])
def test_pipelined_replay_equals_the_serial_one(engine, bag, tmp_path, mode):
    pinned = {"processing_time": lambda index, measured: 0.05} if mode == "realtime" else {}
    serial = replay(bag, engine, tmp_path / "serial", mode=mode, pipelined=False, **pinned)
    pipelined = replay(bag, engine, tmp_path / "pipelined", mode=mode, pipelined=True,
                       **pinned)
    assert serial.count("processed") == len(SIZES) - 1
    assert serial.records[REJECTED].outcome == "rejected"
    assert serial.ground_truth.matched == len(SIZES) - 1
    assert_same_run(serial, pipelined, tmp_path / "serial", tmp_path / "pipelined")
    processed = [r for r in pipelined.records if r.outcome == "processed"]
    assert all(r.timings["processing"] > 0 and r.finish > r.start for r in processed)
    assert engine.flush_pipelined() is None  # nothing left in flight


def test_ctrl_c_finishes_the_pipelined_frame_in_flight(engine, bag, tmp_path):
    with open_bag(bag) as source, OutputBag(tmp_path / "out") as output:
        run = Replay(source, engine, ReplayOptions(IMAGE, label_topic=LABELS, progress=False,
                                                   pipelined=True), output)
        launch, calls = run.pipeline.launch, []

        def interrupted_launch(msg, tag=None):
            calls.append(msg)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return launch(msg, tag)

        run.pipeline.launch = interrupted_launch
        result = run.run()
    assert result.interrupted
    # frame 0 finished by frame 1's launch, frame 1 (in flight) by the flush
    assert [(r.index, r.outcome) for r in result.records] == [(0, "processed"),
                                                              (1, "processed")]
    assert result.ground_truth.matched == 2
    assert engine.flush_pipelined() is None
