"""swiftseg-replay with several cameras: a synthetic three-camera bag (different sizes and
rates) through the node's multi-camera path; per-camera report and output bag."""

import json

import cv2
import pytest
from replay_helpers import assert_one_line_error, checkpoint, run

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.replay.bagio import deserialize, open_bag
from swiftseg_ros.replay.multibag import CameraSpec, write_multi_camera_bag
from swiftseg_ros.replay.multicam import (
    MultiReplay,
    MultiReplayOptions,
    camera_name_of,
    streams_from_cameras,
    streams_from_topics,
)

CAMERAS = (CameraSpec("front", 96, 64, 20.0, seed=0), CameraSpec("down", 64, 64, 10.0, seed=1),
           CameraSpec("rear", 128, 64, 5.0, seed=2))
SECONDS = 1.0
FRAMES = {camera.name: int(SECONDS * camera.rate_hz) for camera in CAMERAS}
LABELS = [f"/{camera.name}/labels" for camera in CAMERAS]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt", train_size=[64, 128])


@pytest.fixture(scope="module")
def cameras_bag(tmp_path_factory):
    return write_multi_camera_bag(tmp_path_factory.mktemp("bags") / "three", CAMERAS,
                                  seconds=SECONDS)


def test_synthetic_bag_holds_each_cameras_topics_at_its_rate_and_size(cameras_bag):
    with open_bag(cameras_bag) as bag:
        for camera in CAMERAS:
            assert bag.topics[f"/{camera.name}/image"].count == FRAMES[camera.name]
            assert bag.topics[f"/{camera.name}/labels"].count == FRAMES[camera.name]
        times = [m.timestamp for m in bag.messages([f"/{c.name}/image" for c in CAMERAS])]
        assert times == sorted(times)
        first = next(bag.messages(["/down/image"]))
        msg = deserialize(first)
        assert (msg.width, msg.height, msg.header.frame_id) == (64, 64, "down_optical")


def test_replay_of_three_cameras_writes_a_report_and_topics_per_camera(capsys, cameras_bag,
                                                                       weights, tmp_path):
    out = tmp_path / "out"
    status, stdout, err = run(capsys, cameras_bag, "--cameras", "front,down,rear",
                              *[a for label in LABELS for a in ("--label-topic", label)],
                              "--weights", weights, "--backend", "torch", "--out", out,
                              "--no-progress")
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert list(report["cameras"]) == ["front", "down", "rear"]
    for camera in CAMERAS:
        entry = report["cameras"][camera.name]
        frames = entry["frames"]
        assert frames["read"] == frames["processed"] == FRAMES[camera.name]
        assert entry["accuracy"]["ground_truth"]["matched"] == FRAMES[camera.name]
        assert entry["outputs"][f"/swiftseg/{camera.name}/label"] == FRAMES[camera.name]
    # front and down are in the first batches together (different sizes: two forwards)
    assert any(int(size) > 1 for size in report["cameras"]["front"]["batch_sizes"])
    assert "| rear |" in (out / "report.md").read_text()
    assert "front:" in stdout and "batches by size" in stdout
    # one panel per camera: the picture grows with the cameras
    picture = cv2.imread(str(out / "cameras.png"))
    assert report["outputs"]["cameras_png"] == str(out / "cameras.png")
    assert picture is not None and picture.shape[0] > picture.shape[1] * 0.5
    assert "](cameras.png)" in (out / "report.md").read_text()
    with open_bag(out / "bag") as bag:
        assert set(bag.topics) == {f"/swiftseg/{c.name}/{o}" for c in CAMERAS
                                   for o in ("label", "color")}
        for camera in CAMERAS:
            for message in bag.messages([f"/swiftseg/{camera.name}/label"]):
                msg = deserialize(message)
                assert msg.header.frame_id == f"{camera.name}_optical"
                assert (msg.width, msg.height) == (camera.width, camera.height)


def test_labels_at_the_networks_resolution_are_scored_at_the_ground_truths(capsys, cameras_bag,
                                                                         weights, tmp_path):
    params = tmp_path / "network_size.yaml"
    params.write_text("/**:\n  ros__parameters:\n    output_size: network\n"
                      "    inference_size: 64x32\n")
    out = tmp_path / "out"
    status, _, err = run(capsys, cameras_bag, "--cameras", "front,down",
                         "--label-topic", LABELS[0], "--label-topic", LABELS[1],
                         "--params", params, "--weights", weights, "--backend", "torch",
                         "--out", out, "--no-progress")
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    for camera in ("front", "down"):
        truth = report["cameras"][camera]["accuracy"]["ground_truth"]
        assert truth["matched"] == FRAMES[camera] and truth["rejected"] == 0, truth


def test_repeated_image_topics_name_the_cameras_after_the_topics(capsys, cameras_bag, weights,
                                                                 tmp_path):
    out = tmp_path / "out"
    status, _, err = run(capsys, cameras_bag, "--image-topic", "/front/image",
                         "--image-topic", "/rear/image", "--weights", weights, "--backend",
                         "torch", "--out", out, "--no-progress")
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert list(report["cameras"]) == ["front", "rear"]
    assert report["cameras"]["rear"]["accuracy"] is None


def test_realtime_mode_drops_per_camera_and_accounts_for_every_frame(cameras_bag, weights):
    from swiftseg_ros.engine import EngineConfig, SegmentationEngine

    engine = SegmentationEngine(EngineConfig(weights=str(weights), device="cpu",
                                             backend="torch", warmup_iters=1))
    try:
        with open_bag(cameras_bag) as bag:
            options = MultiReplayOptions(streams_from_cameras(bag, ["front", "down", "rear"]),
                                         mode="realtime", progress=False,
                                         batch_time=lambda indices, measured: 0.12)
            result = MultiReplay(bag, engine, options).run()
    finally:
        engine.release()
    by_camera = {c.name: [f for f in result.frames if f.camera == c.name] for c in CAMERAS}
    for camera, frames in by_camera.items():
        assert len(frames) == FRAMES[camera]
        assert all(f.outcome in ("processed", "dropped") for f in frames)
        assert any(f.outcome == "processed" for f in frames), camera
    # 120 ms per batch: the 20 Hz front camera loses frames, the 5 Hz rear none
    assert any(f.outcome == "dropped" for f in by_camera["front"])
    assert all(f.outcome == "processed" for f in by_camera["rear"])
    processed = [f for f in result.frames if f.outcome == "processed"]
    assert all(f.finish - f.start == pytest.approx(0.12) for f in processed)
    assert max(f.batch_size for f in processed) >= 2


def test_camera_names_come_from_the_image_topics():
    assert camera_name_of("/drone/front/image_raw") == "drone/front"
    assert camera_name_of("/down/image/compressed") == "down"
    assert camera_name_of("/left/image_rect_color") == "left"
    streams = streams_from_topics(["/a/image", "/b/image"], ["/a/labels", "/b/labels"])
    assert [(s.camera, s.label_topic) for s in streams] == [("a", "/a/labels"),
                                                            ("b", "/b/labels")]
    with pytest.raises(ConfigError, match="repeat"):
        streams_from_topics(["/a/image", "/a/image_raw"])
    with pytest.raises(ConfigError, match="one per image topic"):
        streams_from_topics(["/a/image", "/b/image"], ["/a/labels"])


@pytest.mark.parametrize("argv, words", [
    (["--cameras", "front,side"], "no topic '/side/image'"),
    (["--cameras", "front,front"], "names 'front' twice"),
    (["--cameras", "front", "--image-topic", "/down/image"], "not both"),
    (["--cameras", "front,down", "--pipelined", "on"], "batches"),
    (["--cameras", "front,down", "--label-topic", "/front/labels"], "one per camera"),
])
def test_bad_multi_camera_input_is_one_line_and_exit_2(capsys, cameras_bag, weights, tmp_path,
                                                       argv, words):
    status, _, err = run(capsys, cameras_bag, *argv, "--weights", weights, "--out",
                         tmp_path / "out", "--no-progress")
    assert status == 2
    assert_one_line_error(err)
    assert words in err
    assert not (tmp_path / "out").exists()


def test_demo_with_cameras_replays_three_cameras(capsys, tmp_path):
    from swiftseg_ros.cli import demo

    status = demo(["--cameras", "--frames", "6", "--backend", "torch", "--out",
                   str(tmp_path), "--quiet"])
    stdout, err = capsys.readouterr()
    assert status == 0, err
    for camera in ("front", "down", "rear"):
        assert f"{camera}: " in stdout
    report = json.loads((tmp_path / "replay_cameras" / "report.json").read_text())
    assert report["cameras"]["front"]["accuracy"]["ground_truth"]["matched"] > 0
