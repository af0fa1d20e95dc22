"""swiftseg-replay for a flight decision: the A/B comparison and its verdict, the report's
confusion heat map, worst frames, timeline, environment record and headline rates, the
class-set refusal and the partial report of an interrupted replay. Real bags (rosbags),
real checkpoints, through the console entry point."""

import hashlib
import json

import numpy as np
import pytest
import torch
from replay_helpers import FRAMES, IMAGE, LABELS, assert_one_line_error, checkpoint, run, write_bag

from swiftseg_ros.cli import replay as replay_entry
from swiftseg_ros.replay.run import ReplayOptions
from swiftseg_ros.replay.session import exit_status, node_parameters, replay_bag
from swiftseg_ros.replay.verdict import Thresholds
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE

# Replays of checkpoints that no other test of the session replays, where the backend is
# not the point: backend auto would export each one to ONNX first (seconds each).
# test_replay_cli.py replays with the node's default backend (auto).
TORCH = ("--backend", "torch")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return checkpoint(folder / "a.pt", seed=0), checkpoint(folder / "b.pt", seed=1)


@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory):
    return write_bag(tmp_path_factory.mktemp("bag"))


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory, camera_bag, weights):
    out = tmp_path_factory.mktemp("ab") / "out"
    status = replay_entry([str(camera_bag), "--image-topic", IMAGE, "--label-topic", LABELS,
                           "--compare", str(weights[0]), str(weights[1]), "--out", str(out),
                           "--latency-budget-ms", "0", "--quiet", *TORCH])
    return status, out, json.loads((out / "comparison.json").read_text())


# ------------------------------------------------------------------------ A/B


def test_ab_writes_both_replays_and_one_comparison(ab_run):
    status, out, comparison = ab_run
    assert status == 0
    for name in ("a/report.json", "b/report.json", "a/bag", "b/bag", "comparison.md",
                 "comparison.png", "disagreement.png"):
        assert (out / name).exists(), name
    assert comparison["labels"] == {"a": "A a.pt", "b": "B b.pt"}
    assert comparison["frames"]["a"]["read"] == comparison["frames"]["b"]["read"] == FRAMES


def test_ab_differences_are_b_minus_a_per_class_and_per_stage_percentile(ab_run):
    _, out, comparison = ab_run
    a = json.loads((out / "a" / "report.json").read_text())
    b = json.loads((out / "b" / "report.json").read_text())
    miou = comparison["accuracy"]["miou"]
    assert (miou["a"], miou["b"]) == (a["accuracy"]["miou"], b["accuracy"]["miou"])
    assert miou["difference"] == pytest.approx(b["accuracy"]["miou"] - a["accuracy"]["miou"])
    for name, pair in comparison["accuracy"]["per_class"].items():
        if pair["difference"] is not None:
            assert pair["difference"] == pytest.approx(pair["b"] - pair["a"]), name
    forward = comparison["latency_ms"]["forward"]
    assert set(forward) == {"p50", "p95", "p99"}
    assert forward["p95"]["a"] == a["latency_ms"]["forward"]["p95"]
    assert "| forward |" in (out / "comparison.md").read_text()


def test_ab_disagreement_counts_the_pixels_where_the_two_predictions_differ(ab_run):
    _, _, comparison = ab_run
    frames = comparison["disagreement"]["frames"]
    assert frames and all(0.0 <= f["share"] <= 1.0 for f in frames)
    # two differently initialized networks never agree on every pixel
    assert comparison["disagreement"]["mean_share"] > 0


def test_ab_exit_status_is_1_when_the_first_configuration_fails(capsys, camera_bag, weights,
                                                                 tmp_path):
    status, stdout, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic",
                              LABELS, "--compare", *weights, "--out", tmp_path / "out",
                              "--min-miou", 99, "--quiet", "--montage-frames", 0, *TORCH)
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and "verdict FAIL for A a.pt" in err
    assert "below the minimum 99.0 %" in err
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert comparison["verdict"] == {"preferred": "a", "passed": False, "verdict": "FAIL"}
    assert "FAIL" in stdout


def test_ab_with_parameter_files_compares_their_settings(capsys, camera_bag, weights,
                                                         tmp_path):
    files = []
    for name, upsample in (("a.yaml", "logits"), ("b.yaml", "labels")):
        files.append(tmp_path / name)
        files[-1].write_text(f"/**:\n  ros__parameters:\n    weights: {weights[0]}\n"
                             f"    network: ''\n    upsample: {upsample}\n"
                             "    backend: torch\n")  # the settings compared are the point
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--compare-params",
                         *files, "--out", tmp_path / "out", "--latency-budget-ms", 0,
                         "--quiet")
    assert status == 0, err
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    engines = comparison["configurations"]
    assert (engines["a"]["engine"]["upsample"], engines["b"]["engine"]["upsample"]) == \
        ("logits", "labels")
    assert comparison["labels"]["b"] == "B a.pt, b.yaml"
    assert comparison["accuracy"] is None


def test_ab_refuses_a_second_checkpoint_of_another_class_set_before_writing(capsys,
                                                                           camera_bag,
                                                                           weights,
                                                                           tmp_path):
    other = checkpoint(tmp_path / "city.pt", classes=[f"c{i}" for i in range(19)])
    out = tmp_path / "out"
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic", LABELS,
                         "--compare", weights[0], other, "--out", out)
    assert status == 2
    assert_one_line_error(err)
    assert "city.pt" in err and "--no-accuracy" in err
    assert not out.exists()


@pytest.mark.parametrize("flags, words", [
    (["--compare", "a.pt", "b.pt", "--weights", "c.pt"], "with --compare A.pt B.pt only"),
    (["--min-miou", "50"], "--min-miou needs ground truth"),
    (["--label-topic", LABELS, "--min-miou", "150"], "between 0 and 100"),
    (["--max-drops", "-1"], "between 0 and 100"),
    (["--classes", "cityscapes", "--no-accuracy"], "give one of them"),
])
def test_bad_verdict_and_compare_flags_are_one_line_before_anything_is_written(
        capsys, camera_bag, tmp_path, flags, words):
    out = tmp_path / "out"
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--out", out, *flags)
    assert status == 2
    assert_one_line_error(err)
    assert words in err
    assert not out.exists()


# ------------------------------------------------------------------------ class sets


def test_checkpoint_predicting_another_class_set_is_refused(capsys, camera_bag, tmp_path):
    # ids of the bag (0..8) are all in range of a 19-class checkpoint: only the bag's
    # classes.yaml tells the mismatch
    city = checkpoint(tmp_path / "city.pt", classes=[f"c{i}" for i in range(19)])
    out = tmp_path / "out"
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic", LABELS,
                         "--weights", city, "--out", out)
    assert status == 2
    assert_one_line_error(err)
    assert f"{len(CLASS_NAMES)} classes" in err and "19 classes" in err
    assert not out.exists()


def test_ground_truth_ids_beyond_the_checkpoints_classes_are_refused(capsys, camera_bag,
                                                                      tmp_path):
    three = checkpoint(tmp_path / "three.pt", classes=["a", "b", "c"])
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic", LABELS,
                         "--weights", three, "--out", tmp_path / "out")
    assert status == 2
    assert_one_line_error(err)
    assert "holds class ids up to 8" in err and "3 classes" in err


def test_unknown_class_set_file_is_one_line_before_anything_is_written(capsys, camera_bag,
                                                                        weights, tmp_path):
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic", LABELS,
                         "--weights", weights[0], "--out", tmp_path / "out", "--classes",
                         tmp_path / "absent.yaml")
    assert status == 2
    assert_one_line_error(err)
    assert "absent.yaml" in err and not (tmp_path / "out").exists()


def test_no_accuracy_replays_a_checkpoint_of_another_class_set_for_its_speed(capsys,
                                                                            camera_bag,
                                                                            tmp_path):
    city = checkpoint(tmp_path / "city.pt", classes=[f"c{i}" for i in range(19)])
    out = tmp_path / "out"
    status, _, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic", LABELS,
                         "--weights", city, "--out", out, "--no-accuracy", "--quiet", *TORCH)
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"] is None and report["frames"]["processed"] == FRAMES


# ------------------------------------------------------------------------ the report


@pytest.fixture(scope="module")
def single(tmp_path_factory, camera_bag, weights):
    out = tmp_path_factory.mktemp("single") / "out"
    status = replay_entry([str(camera_bag), "--image-topic", IMAGE, "--label-topic", LABELS,
                           "--weights", str(weights[0]), "--out", str(out), "--quiet",
                           "--worst-frames", "2"])
    return status, out, json.loads((out / "report.json").read_text())


def test_report_has_the_confusion_matrix_as_heat_map_and_its_top_confusions(single):
    status, out, report = single
    assert status == 0
    confusion = report["accuracy"]["confusion"]
    counts = np.array(confusion["counts"])
    assert confusion["classes"] == list(CLASS_NAMES)
    assert counts.sum() == report["accuracy"]["pixels"]
    top = report["accuracy"]["top_confusions"]
    shares = counts / counts.sum(axis=1, keepdims=True)
    np.fill_diagonal(shares, 0)
    assert top and top[0]["share_of_truth"] == pytest.approx(np.nanmax(shares))
    assert (out / "confusion.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "Top confusions" in text and f"| {top[0]['truth']} | {top[0]['predicted']} |" in text


def test_report_lists_the_worst_frames_by_their_own_miou(single):
    _, out, report = single
    worst = report["accuracy"]["worst_frames"]
    # the bag's 6 frames span 0.3 s: two worst frames are never within SPREAD_S (1 s)
    assert len(worst) == 1
    assert worst[0]["miou"] == report["accuracy"]["per_frame_miou"]["min"]
    assert {"index", "stamp_ns", "time_s"} <= set(worst[0])
    assert f"| {worst[0]['index']} | {worst[0]['stamp_ns']} |" in (out / "report.md").read_text()


def montage_rows(montage: np.ndarray, cell_height: int) -> int:
    from swiftseg_ros.montage import GAP, TITLE_HEIGHT

    return (montage.shape[0] - GAP) // (TITLE_HEIGHT + cell_height + GAP)


def test_montage_shows_samples_then_worst_frames_leaving_out_samples_near_them(tmp_path):
    from swiftseg_ros.files import read_image
    from swiftseg_ros.replay.report import write_montage
    from swiftseg_ros.replay.run import Sample

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    ids = rng.integers(0, len(CLASS_NAMES), (32, 64), dtype=np.uint8)
    samples = [Sample(k, image, ids, ids, arrival=float(k)) for k in range(4)]
    worst = [Sample(9, image, ids, ids, arrival=2.5, miou=0.1)]
    path = tmp_path / "m.png"
    assert write_montage(path, samples, CLASS_NAMES, PALETTE, worst)
    cell_height = 160  # 64x32 frames in 320-pixel cells
    assert montage_rows(read_image(path), cell_height) == 3  # samples 0 and 1, the worst
    assert write_montage(path, samples, CLASS_NAMES, PALETTE)
    assert montage_rows(read_image(path), cell_height) == 4


def test_timeline_plots_latency_over_bag_time(single):
    _, out, report = single
    assert report["outputs"]["timeline_png"] == str(out / "timeline.png")
    assert (out / "timeline.png").stat().st_size > 0


def test_environment_record_names_software_machine_checkpoint_and_parameters(single, weights):
    _, _, report = single
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["python"]
    assert "onnxruntime" in env and "gpu" in env and env["threads"] >= 1
    assert env["cpu"]["logical_cores"] >= 1 and isinstance(env["cpu"]["flags"], list)
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest()
    assert env["checkpoint"] == {"file": "a.pt", "path": str(weights[0]),
                                 "bytes": weights[0].stat().st_size, "sha256": digest}
    assert env["parameters"]["latency_budget_ms"] == 100.0
    # precision auto (the node's default): fp32, or bf16 where this CPU runs it natively
    assert env["engine"]["precision"] in ("fp32", "bf16") and "device" in env["engine"]
    assert env["package"]["version"]


def test_headline_states_processing_and_delivered_rates_with_drops(camera_bag, weights,
                                                                   tmp_path, capsys):
    params = node_parameters(None, weights=str(weights[0]))
    # 120 ms per frame against a 20 Hz camera: the policy drops about every other frame
    options = ReplayOptions.for_node(params, image_topic=IMAGE, mode="realtime",
                                     progress=False, processing_time=lambda i, s: 0.12)
    report, _ = replay_bag(camera_bag, tmp_path / "out", options, params,
                           thresholds=Thresholds(100.0))
    throughput, frames = report["throughput"], report["frames"]
    assert frames["dropped"] > 0
    # the worker is never idle here: n frames published by n x 120 ms after the first
    # arrival, (n - 1) intervals over that span; never above what 120 ms a frame allows
    processed = frames["processed"]
    assert throughput["delivered_fps"] == pytest.approx((processed - 1) / (0.12 * processed))
    assert throughput["delivered_fps"] < min(1 / 0.12, report["timing"]["input_hz"])
    text = (tmp_path / "out" / "report.md").read_text()
    assert "FPS processing" in text and "FPS delivered" in text
    assert f"{frames['dropped']} of {frames['read']} frames dropped" in text
    verdict = report["verdict"]
    assert not verdict["passed"] and any("dropped" in r for r in verdict["reasons"])


def test_single_replay_with_min_miou_gates_the_exit_status(capsys, camera_bag, weights,
                                                           tmp_path):
    status, stdout, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--label-topic",
                              LABELS, "--weights", weights[0], "--out", tmp_path / "out",
                              "--min-miou", 99.5, "--quiet")
    assert status == 1
    assert "verdict FAIL" in err and "verdict: this configuration: FAIL" in stdout


# ------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_during_replay_writes_the_partial_report_and_says_how_far(camera_bag, weights,
                                                                        tmp_path, capsys):
    params = node_parameters(None, weights=str(weights[0]))

    def interrupt_at_third_frame(index, seconds):
        if index == 2:
            raise KeyboardInterrupt
        return seconds

    options = ReplayOptions.for_node(params, image_topic=IMAGE, label_topic=LABELS,
                                     mode="realtime", progress=False,
                                     processing_time=interrupt_at_third_frame)
    out = tmp_path / "out"
    report, _ = replay_bag(camera_bag, out, options, params)
    assert report["interrupted"] is True and report["complete"] is False
    assert report["frames"]["read"] == report["frames"]["processed"] == 3
    assert report["frames"]["expected"] == FRAMES
    assert json.loads((out / "report.json").read_text())["interrupted"] is True
    assert "interrupted** after 3 of 6 frames" in (out / "report.md").read_text()
    assert exit_status(report, "swiftseg-replay") == 130
    err = capsys.readouterr().err
    assert f"interrupted after 3 of {FRAMES} frames; partial bag in {out / 'bag'}, partial " \
           "report written" in err


# ------------------------------------------------------------------------ first-user edges


def test_progress_off_a_terminal_is_whole_lines(capsys, camera_bag, weights, tmp_path):
    status, stdout, err = run(capsys, camera_bag, "--image-topic", IMAGE, "--weights",
                              weights[0], "--out", tmp_path / "out", "--montage-frames", 0)
    assert status == 0
    assert "\r" not in err and f"replay: {FRAMES}/{FRAMES} frame" in err


def test_eval_and_replay_montages_share_one_layout(tmp_path):
    import cv2

    from swiftseg_ros.replay.report import write_montage as replay_montage
    from swiftseg_ros.replay.run import Sample
    from swiftseg_ros.trainer.evaluate import write_montage as eval_montage

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    truth = rng.integers(0, len(CLASS_NAMES), (32, 64), dtype=np.uint8)
    prediction = rng.integers(0, len(CLASS_NAMES), (32, 64), dtype=np.uint8)
    palette = np.array(PALETTE, dtype=np.uint8)
    eval_montage(tmp_path / "eval.png", [(5, image, truth, prediction)], palette, CLASS_NAMES,
                 255)
    replay_montage(tmp_path / "replay.png", [Sample(5, image, prediction, truth)],
                   CLASS_NAMES, palette)
    # the same cells and legend; only the titles differ (eval: the frame's mIoU)
    from swiftseg_ros.montage import GAP, TITLE_HEIGHT

    below_title = slice(GAP + TITLE_HEIGHT, None)
    assert np.array_equal(cv2.imread(str(tmp_path / "eval.png"))[below_title],
                          cv2.imread(str(tmp_path / "replay.png"))[below_title])


def test_ab_configurations_take_the_backend_flag(camera_bag, weights):
    from swiftseg_ros.replay.cli import build_parser
    from swiftseg_ros.replay.compare import configurations

    args = build_parser().parse_args([str(camera_bag), "--compare", str(weights[0]),
                                      str(weights[1]), "--backend", "onnxruntime",
                                      "--out", "unused"])
    assert [params.backend for _, params in configurations(args)] == ["onnxruntime"] * 2
