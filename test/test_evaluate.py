"""swiftseg-eval end to end: a random-weight checkpoint on a tiny synthetic set, and its errors."""

import json

import cv2
import numpy as np
import pytest
import torch

from swiftseg_ros import cli
from swiftseg_ros.checkpoint import make_meta, save_checkpoint
from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.metrics import ConfusionMatrix
from swiftseg_ros.montage import make_montage
from swiftseg_ros.nets import NETWORKS, build_model
from swiftseg_ros.synthetic.frames import write_dataset
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE
from swiftseg_ros.trainer.datasets import dataset_from_path

W, H = 128, 64


def random_checkpoint(path, num_classes, names=None, palette=None):
    torch.manual_seed(0)
    options = NETWORKS["fastscnn"].inference_options
    model = build_model("fastscnn", num_classes, **options).eval()
    meta = make_meta("fastscnn", num_classes, class_names=names, palette=palette,
                     network_options=options)
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_dataset(root / "synth", 3, W, H, seed=4, split="val", progress=False)
    weights = random_checkpoint(root / "synth.pt", len(CLASS_NAMES), CLASS_NAMES, PALETTE)
    return root, data, weights


def test_eval_writes_json_table_and_montage(setup, capsys):
    root, data, weights = setup
    out_json, montage = root / "out" / "eval.json", root / "out" / "montage.png"
    code = cli.evaluate(["--weights", str(weights), "--data", str(data), "--json", str(out_json),
                         "--montage", str(montage), "--samples", "2", "--quiet"])
    assert code == 0
    results = json.loads(out_json.read_text())
    assert {"miou", "per_class", "pixel_accuracy", "frames"} <= set(results)
    assert results["frames"] == 3
    assert 0.0 <= results["miou"] <= 1.0
    assert list(results["per_class"]) == list(CLASS_NAMES)
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "lane marking" in printed
    picture = cv2.imread(str(montage))
    assert picture is not None and picture.shape[0] > 3 * H and picture.shape[1] > 2 * W


def test_eval_miou_equals_the_metrics_of_the_engine_labels(setup):
    root, data, weights = setup
    out_json = root / "same.json"
    assert cli.evaluate(["--weights", str(weights), "--data", str(data), "--json",
                         str(out_json), "--quiet"]) == 0
    engine = SegmentationEngine(EngineConfig(weights=str(weights), outputs=("label",),
                                             upsample="logits"))
    dataset = dataset_from_path(data, "val")
    expected = ConfusionMatrix(len(CLASS_NAMES))
    for i in range(len(dataset)):
        image, truth = dataset[i]
        expected.update(engine.infer(image, "rgb8").label, truth)
    engine.release()
    assert json.loads(out_json.read_text())["miou"] == pytest.approx(expected.miou())


def test_eval_limit_counts_only_the_first_frames(setup):
    root, data, weights = setup
    out_json = root / "limit.json"
    assert cli.evaluate(["--weights", str(weights), "--data", str(data), "--limit", "2",
                         "--size", "64x32", "--json", str(out_json), "--quiet"]) == 0
    results = json.loads(out_json.read_text())
    assert results["frames"] == 2
    assert results["inference_size"] == [64, 32]
    assert results["pixels"] == 2 * W * H


def test_missing_dataset_folder_exits_2_with_one_line(setup, capsys):
    root, _, weights = setup
    code = cli.evaluate(["--weights", str(weights), "--data", str(root / "absent"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "absent does not exist" in err


def test_class_count_mismatch_exits_2(setup, tmp_path, capsys):
    _, data, _ = setup
    four = random_checkpoint(tmp_path / "four.pt", 4)
    code = cli.evaluate(["--weights", str(four), "--data", str(data), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "has 9 classes" in err and "predicts 4" in err


def test_missing_weights_flag_exits_2(setup, capsys):
    _, data, _ = setup
    assert cli.evaluate(["--data", str(data)]) == 2
    assert "--weights is required" in capsys.readouterr().err


@pytest.mark.parametrize("montage", ["montage.txt", "folder"])
def test_montage_path_that_is_not_an_image_file_exits_2_before_evaluating(setup, tmp_path,
                                                                         capsys, montage):
    _, data, weights = setup
    (tmp_path / "folder").mkdir()
    code = cli.evaluate(["--weights", str(weights), "--data", str(data), "--quiet",
                         "--montage", str(tmp_path / montage)])
    assert code == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "--montage" in err and "mIoU" not in out


def test_json_path_under_a_file_is_one_line_and_exit_2(setup, tmp_path, capsys):
    _, data, weights = setup
    (tmp_path / "file").write_text("x")
    code = cli.evaluate(["--weights", str(weights), "--data", str(data), "--quiet",
                         "--json", str(tmp_path / "file" / "eval.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "file" in err


def test_unwritable_montage_is_an_os_error_not_a_cv2_error(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(OSError, match="cannot write the montage"):
        make_montage([[image]], path=tmp_path / "montage.txt")


def test_montage_stacks_titled_rows_and_pads_short_ones():
    image = np.zeros((H, W, 3), np.uint8)
    picture = make_montage([[image, image], [image[:, :, 0]], [image]], ["a", "b", "c"],
                           cell_width=W, legend=[("road", (128, 64, 128))])
    # three rows of cells under their titles, the second row padded to two columns
    assert picture.shape[1] == 4 + 2 * (W + 4)
    assert picture.shape[0] > 3 * H + 3 * 22


@pytest.mark.parametrize("weights", ["fastscnn_synth.pt", "swiftnet_mnv2_synth.pt"])
def test_shipped_demo_weights_segment_unseen_synthetic_frames(tmp_path, weights):
    # seed 3 is held out of training and model selection (models/README.md); its first 12
    # frames give 74.0 % (Fast-SCNN) and 81.3 % (SwiftNet-MNV2); 100 frames: that README
    data = write_dataset(tmp_path / "synth", 12, 512, 256, seed=3, split="test", progress=False)
    out_json = tmp_path / "eval.json"
    assert cli.evaluate(["--weights", weights, "--data", str(data), "--split", "test",
                         "--size", "512x256", "--json", str(out_json), "--quiet"]) == 0
    assert json.loads(out_json.read_text())["miou"] >= 0.72
