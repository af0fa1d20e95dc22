"""swiftseg-replay on footage without ROS: a video file and an image folder, detected from
what they are, through the node's frame path; the overlay video, report and montage."""

import json

import cv2
import numpy as np
import pytest
from replay_helpers import assert_one_line_error, checkpoint, run, write_bag

from swiftseg_ros.errors import SwiftsegError
from swiftseg_ros.replay.footage import FOOTAGE_TOPIC, input_kind
from swiftseg_ros.synthetic.frames import generate_frame

W, H = 128, 64
VIDEO_FRAMES, VIDEO_FPS = 20, 1.0  # 20 s of drive, few frames (VP9 encodes slowly)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A 30 s synthetic drive as an mp4 video, and 8 of its frames as an image folder."""
    folder = tmp_path_factory.mktemp("footage")
    (folder / "images").mkdir()
    video = cv2.VideoWriter(str(folder / "drive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                            VIDEO_FPS, (W, H))
    for k in range(VIDEO_FRAMES):
        rgb, _ = generate_frame(0, k, W, H, sequence=True)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        video.write(bgr)
        if k < 8:
            cv2.imwrite(str(folder / "images" / f"{k:03d}.png"), bgr)
    video.release()
    checkpoint(folder / "w.pt")
    return folder


@pytest.fixture(scope="module")
def video_replay(footage, tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "out"
    argv = [footage / "drive.mp4", "--out", out, "--weights", footage / "w.pt", "--backend",
            "torch", "--mode", "realtime", "--quiet"]
    from swiftseg_ros.cli import replay

    status = replay([str(a) for a in argv])
    return status, out, json.loads((out / "report.json").read_text())


def test_input_kind_is_detected_from_what_the_path_is(footage, tmp_path):
    bag = write_bag(tmp_path)
    assert input_kind(bag) == "rosbag"
    assert input_kind(footage / "drive.mp4") == "video"
    assert input_kind(footage / "images") == "images"
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for path, words in ((tmp_path / "empty", "no rosbag2 files and no images"),
                        (tmp_path / "notes.txt", "not a rosbag2 file"),
                        (footage / "images" / "000.png", "single image"),
                        (tmp_path / "missing", "not found")):
        with pytest.raises(SwiftsegError, match=words):
            input_kind(path)


def test_a_video_replays_in_realtime_by_its_own_frame_rate(video_replay):
    status, _, report = video_replay
    assert status == 0
    assert report["bag"]["storage"] == "video" and report["bag"]["image_topic"] == FOOTAGE_TOPIC
    assert report["frames"]["read"] == VIDEO_FRAMES
    assert report["timing"]["input_hz"] == pytest.approx(VIDEO_FPS)
    assert report["throughput"]["delivered_fps"] <= VIDEO_FPS


def test_a_video_gets_a_browser_playable_overlay_video_and_no_bag(video_replay):
    _, out, report = video_replay
    assert report["outputs"]["bag"] is None and not (out / "bag").exists()
    capture = cv2.VideoCapture(report["outputs"]["overlay_video"])
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert fourcc == b"VP90" and frames == VIDEO_FRAMES  # dropped frames hold the last one
    assert report["outputs"]["overlay_video_codec"].startswith("vp09")


def test_footage_report_has_class_shares_confidence_and_doubtful_frames(video_replay):
    _, out, report = video_replay
    shares = [c["share"] for c in report["classes"]]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    confidence = report["confidence"]
    doubtful = confidence["doubtful_frames"]
    assert 1 <= len(doubtful) <= 3
    times = sorted(d["time_s"] for d in doubtful)
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False))
    assert min(d["mean_confidence"] for d in doubtful) == pytest.approx(
        confidence["per_frame_mean"]["min"])
    text = (out / "report.md").read_text()
    assert "## Classes seen" in text and "Most doubtful frames" in text
    montage = cv2.imread(str(out / "montage.png"))
    assert montage is not None and montage.shape[1] > 3 * 320  # input | overlay | confidence


def test_an_image_folder_replays_at_the_given_rate_with_its_bag(footage, tmp_path, capsys):
    (footage / "images" / "broken.png").write_bytes(b"not an image")
    try:
        status, stdout, _ = run(capsys, footage / "images", "--out", tmp_path / "o", "--fps",
                                4, "--weights", footage / "w.pt", "--backend", "torch",
                                "--bag", "--quiet")
    finally:
        (footage / "images" / "broken.png").unlink()
    assert status == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["frames"]["read"] == 9 and report["frames"]["rejected"] == 1
    assert report["timing"]["input_hz"] == pytest.approx(4.0)
    assert (tmp_path / "o" / "bag" / "metadata.yaml").is_file()
    assert "overlay video:" in stdout and "classes seen:" in stdout
    assert report["outputs"]["overlay_video"] == str(tmp_path / "o" / "overlay.mp4")


def test_no_video_leaves_the_overlay_video_out(footage, tmp_path, capsys):
    status, stdout, _ = run(capsys, footage / "images", "--out", tmp_path / "o", "--weights",
                            footage / "w.pt", "--backend", "torch", "--no-video", "--quiet")
    assert status == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["frames"]["processed"] == 8
    assert "overlay_video" not in report["outputs"] and "overlay video:" not in stdout
    assert not (tmp_path / "o" / "overlay.mp4").exists()


@pytest.mark.parametrize("extra, words", [
    (["--label-topic", "/labels"], "--label-topic"),
    (["--fps", "0"], "--fps"),
    (["--image-topic", "/other"], "--image-topic"),
])
def test_footage_refuses_what_only_a_rosbag_has(footage, tmp_path, capsys, extra, words):
    status, _, err = run(capsys, footage / "images", "--out", tmp_path / "o", "--weights",
                         footage / "w.pt", *extra)
    assert status == 2
    assert_one_line_error(err)
    assert words in err and not (tmp_path / "o").exists()


def test_every_frame_rejected_exits_1_with_the_reason(footage, tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_input_size: '100x100'\n")
    status, _, err = run(capsys, footage / "images", "--out", tmp_path / "o", "--weights",
                         footage / "w.pt", "--params", params, "--backend", "torch", "--quiet")
    assert status == 1
    assert "no frame was processed (all 8 rejected" in err and len(err.splitlines()) == 1
    assert np.isclose(json.loads((tmp_path / "o" / "report.json").read_text())
                      ["frames"]["rejected"], 8)


def test_a_video_at_a_path_opencv_cannot_take_is_one_line(footage, tmp_path, capsys):
    odd = tmp_path / "drive\udcff.mp4"  # the bytes b'drive\xff.mp4': not UTF-8
    odd.write_bytes((footage / "drive.mp4").read_bytes())
    status, _, err = run(capsys, odd, "--out", tmp_path / "o", "--weights", footage / "w.pt")
    assert status == 2
    assert_one_line_error(err)
    assert "not UTF-8" in err and not (tmp_path / "o").exists()


def test_onnx_weights_are_checked_against_ground_truth_by_their_own_classes(tmp_path):
    """An exported file carries its classes in its metadata: the class check reads them
    there instead of refusing the file as "not a PyTorch file"."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from swiftseg_ros.engine.onnx_file import METADATA_FORMAT
    from swiftseg_ros.replay.classcheck import check_class_set, configuration_classes
    from swiftseg_ros.replay.session import node_parameters
    from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE

    tensor = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "g",
                              [tensor("image", TensorProto.FLOAT, [1, 3, 32, 64])],
                              [tensor("logits", TensorProto.FLOAT, [1, 3, 32, 64])])
    model = helper.make_model(graph)
    meta = {"format": METADATA_FORMAT, "network": "fastscnn", "num_classes": 9,
            "class_names": list(CLASS_NAMES), "palette": [list(c) for c in PALETTE],
            "mean": [0, 0, 0], "std": [1, 1, 1], "size_divisor": 32, "output_stride": 8,
            "input": {"dtype": "float32"}, "export_size": [64, 32], "dynamic_size": False}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save_model(model, str(tmp_path / "w.onnx"))
    names, source = configuration_classes(node_parameters(None, weights=str(tmp_path / "w.onnx")))
    assert names == list(CLASS_NAMES) and "ONNX file w.onnx" in source
    check_class_set(names, source, {0, 3, 8}, None, "/camera/labels")  # no error
