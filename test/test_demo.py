"""swiftseg-demo end to end with a tiny checkpoint and a few small frames."""

import json

import pytest
import torch

from swiftseg_ros.checkpoint import make_meta, save_checkpoint
from swiftseg_ros.cli import demo as demo_entry
from swiftseg_ros.nets import build_model
from swiftseg_ros.replay.bagio import open_bag
from swiftseg_ros.replay.demo import cached_camera_bag
from swiftseg_ros.replay.synthbag import CameraBagSpec
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    meta = make_meta("fastscnn", len(CLASS_NAMES), class_names=CLASS_NAMES,
                     palette=[list(c) for c in PALETTE])
    return save_checkpoint(tmp_path / "demo.pt", build_model("fastscnn", len(CLASS_NAMES)), meta)


def test_demo_writes_the_bag_replays_it_and_prints_the_summary(capsys, tmp_path, weights):
    out = tmp_path / "demo"
    status = demo_entry(["--out", str(out), "--frames", "4", "--size", "64x32", "--weights",
                         str(weights), "--no-progress"])
    stdout, err = capsys.readouterr()
    assert status == 0, err
    assert "wrote synthetic camera bag" in stdout
    for words in ("mIoU", "FPS", "p99", "dropped", str(out / "replay" / "bag"),
                  "report.md", "montage.png"):
        assert words in stdout
    report = json.loads((out / "replay" / "report.json").read_text())
    assert report["mode"] == "realtime" and report["frames"]["read"] == 4
    assert report["accuracy"]["ground_truth"]["messages"] == 4
    with open_bag(out / "camera_bag") as bag:
        assert bag.topics["/camera/image_raw"].count == 4
        assert bag.topics["/camera/labels"].count == 4


def test_demo_bag_is_written_once_and_rewritten_when_its_spec_changes(tmp_path):
    small = CameraBagSpec(frames=2, width=64, height=32)
    _, written = cached_camera_bag(tmp_path, small)
    bag, again = cached_camera_bag(tmp_path, small)
    assert (written, again) == (True, False)
    _, changed = cached_camera_bag(tmp_path, CameraBagSpec(frames=3, width=64, height=32))
    assert changed
    with open_bag(bag) as reopened:
        assert reopened.topics["/camera/image_raw"].count == 3


def test_demo_with_missing_weights_is_one_line_and_exit_2(capsys, tmp_path):
    status = demo_entry(["--out", str(tmp_path / "demo"), "--weights",
                         str(tmp_path / "absent.pt")])
    _, err = capsys.readouterr()
    assert status == 2
    assert "Traceback" not in err and "absent.pt" in err and len(err.strip().splitlines()) == 1


def test_demo_checks_its_weights_before_writing_the_camera_bag(capsys, tmp_path):
    weights = tmp_path / "notes.pt"
    weights.write_text("not a checkpoint")
    out = tmp_path / "demo"
    status = demo_entry(["--out", str(out), "--weights", str(weights), "--quiet"])
    _, err = capsys.readouterr()
    assert status == 2
    assert "notes.pt" in err and len(err.strip().splitlines()) == 1
    assert not (out / "camera_bag").exists()


def test_demo_report_has_the_verdict_and_the_new_pictures(capsys, tmp_path, weights):
    out = tmp_path / "demo"
    assert demo_entry(["--out", str(out), "--frames", "3", "--size", "64x32", "--weights",
                       str(weights), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "verdict: this configuration:" in stdout and "FPS delivered" in stdout
    for name in ("timeline.png", "confusion.png", "montage.png"):
        assert (out / "replay" / name).is_file() and name in stdout
    assert "## Verdict" in (out / "replay" / "report.md").read_text()
