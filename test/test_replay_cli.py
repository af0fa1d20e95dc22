"""swiftseg-replay end to end: the output folder, the reports, and every bad input as one
line on stderr with a non-zero exit (through the console entry point's error policy)."""

import json

import pytest
from replay_helpers import FRAMES, IMAGE, LABELS, assert_one_line_error, checkpoint, run, write_bag

from swiftseg_ros.engine import cpu_caps
from swiftseg_ros.replay.bagio import TYPESTORE, OutputBag, deserialize, open_bag
from swiftseg_ros.replay.session import prepare_out_dir


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt", train_size=[64, 128])


@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory):
    return write_bag(tmp_path_factory.mktemp("bag"))


def test_replay_writes_the_bag_reports_and_figures(capsys, camera_bag, weights, tmp_path):
    out = tmp_path / "out"
    status, stdout, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic",
                              LABELS, "--weights", weights, "--out", out, "--no-progress",
                              "--json", tmp_path / "r.json")
    assert status == 0, err
    for name in ("report.json", "report.md", "latency.png", "montage.png"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert json.loads((tmp_path / "r.json").read_text()) == report
    frames = report["frames"]
    assert frames["read"] == FRAMES == frames["processed"] + frames["dropped"] \
        + frames["rejected"] + frames["failed"]
    assert report["accuracy"]["ground_truth"]["matched"] == FRAMES
    assert 0.0 <= report["accuracy"]["miou"] <= 1.0
    assert set(report["latency_ms"]) >= {"decode", "forward", "total", "processing"}
    assert report["outputs"]["topics"]["/swiftseg/label"] == FRAMES
    assert "mIoU" in (out / "report.md").read_text()
    assert "mIoU" in stdout and str(out / "bag") in stdout
    with open_bag(out / "bag") as bag:
        assert set(bag.topics) == {"/swiftseg/label", "/swiftseg/color", "/diagnostics"}


@pytest.mark.parametrize("mode", ["all", "realtime"])
def test_pipelined_on_gives_the_serial_runs_report(capsys, camera_bag, weights, tmp_path,
                                                   mode):
    reports = {}
    for pipelined in ("off", "on"):
        out = tmp_path / pipelined
        status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic",
                             LABELS, "--weights", weights, "--out", out, "--no-progress",
                             "--mode", mode, "--pipelined", pipelined)
        assert status == 0, err
        reports[pipelined] = json.loads((out / "report.json").read_text())
    if mode == "all":  # realtime: the drops depend on the measured times
        assert reports["on"]["frames"] == reports["off"]["frames"]
        assert reports["on"]["accuracy"]["miou"] == reports["off"]["accuracy"]["miou"]
    assert {"forward", "total", "processing"} <= set(reports["on"]["latency_ms"])


def test_parameter_file_chooses_the_outputs_and_out_storage_the_format(capsys, camera_bag,
                                                                      weights, tmp_path):
    params = tmp_path / "seg.yaml"
    params.write_text("/**:\n  ros__parameters:\n    publish_color: false\n"
                      "    publish_confidence: true\n")
    out = tmp_path / "out"
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--params", params,
                         "--weights", weights, "--out", out, "--out-storage", "sqlite3",
                         "--no-progress", "--mode", "realtime")
    assert status == 0, err
    with open_bag(out / "bag") as bag:
        assert bag.storage == "sqlite3"
        assert set(bag.topics) == {"/swiftseg/label", "/swiftseg/confidence", "/diagnostics"}
        confidence = deserialize(next(iter(bag.messages(["/swiftseg/confidence"]))))
    assert confidence.encoding == "mono8"
    assert json.loads((out / "report.json").read_text())["accuracy"] is None


def test_missing_bag_is_one_line_and_exit_2(capsys, tmp_path):
    status, _, err = run(capsys, tmp_path / "nope", "--image-topic", IMAGE, "--out",
                         tmp_path / "out")
    assert status == 2
    assert_one_line_error(err)
    assert "nope not found" in err


def test_unknown_topic_lists_the_image_topics_of_the_bag(capsys, camera_bag, tmp_path):
    status, _, err = run(capsys, camera_bag, "--image-topic", "/cam/wrong", "--out",
                         tmp_path / "out")
    assert status == 2
    assert_one_line_error(err)
    assert "/camera/image_raw (Image)" in err and "/camera/labels (Image)" in err


def test_missing_image_topic_flag_lists_the_image_topics(capsys, camera_bag, tmp_path):
    status, _, err = run(capsys, camera_bag, "--out", tmp_path / "out")
    assert status == 2
    assert_one_line_error(err)
    assert "give --image-topic" in err and IMAGE in err


def test_topic_of_another_message_type_is_refused(capsys, tmp_path):
    with OutputBag(tmp_path / "bag") as out:
        out.write("/chatter", 1, TYPESTORE.types["std_msgs/msg/String"](data="hello"))
    status, _, err = run(capsys, tmp_path / "bag", "--image-topic", "/chatter", "--out",
                         tmp_path / "out")
    assert status == 2
    assert_one_line_error(err)
    assert "holds std_msgs/msg/String" in err


@pytest.mark.skipif(cpu_caps.detect().native_bf16, reason="this CPU has native bf16")
def test_bf16_without_native_bf16_is_one_line_and_writes_nothing(capsys, camera_bag, weights,
                                                                   tmp_path):
    out = tmp_path / "out"
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--weights", weights,
                         "--precision", "bf16", "--out", out, "--no-progress")
    assert status == 2
    assert_one_line_error(err)
    assert "use precision fp32" in err
    assert not out.exists()


def test_existing_out_folder_without_force_is_refused(capsys, camera_bag, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--out", out)
    assert status == 2
    assert_one_line_error(err)
    assert "--force" in err


def test_force_replaces_only_the_replay_outputs(tmp_path):
    out = tmp_path / "out"
    (out / "bag").mkdir(parents=True)
    (out / "report.md").write_text("old")
    (out / "notes.txt").write_text("mine")
    prepare_out_dir(out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_parameter_file_is_one_line_and_exit_2(capsys, camera_bag, tmp_path):
    params = tmp_path / "seg.yaml"
    params.write_text("/**:\n  ros__parameters:\n    overlay_alpha: 2.0\n")
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--params", params,
                         "--out", tmp_path / "out")
    assert status == 2
    assert_one_line_error(err)
    assert "overlay_alpha" in err


def test_truncated_bag_keeps_partial_results_and_exits_3(capsys, camera_bag, weights,
                                                         tmp_path):
    source = next(camera_bag.glob("*.mcap"))
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
    out = tmp_path / "out"
    status, stdout, err = run(capsys, cut, "--image-topic", IMAGE, "--label-topic", LABELS,
                              "--weights", weights, "--out", out, "--no-progress")
    assert status == 3
    assert_one_line_error(err)
    assert "bag damaged after" in err and "partial results written" in err
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and "truncated" in report["bag"]["damage"]
    assert 0 < report["frames"]["processed"] == report["frames"]["read"] < FRAMES
    assert "Partial results" in (out / "report.md").read_text()
    with open_bag(out / "bag") as bag:
        assert bag.topics["/swiftseg/label"].count == report["frames"]["processed"]
