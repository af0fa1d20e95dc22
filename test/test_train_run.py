"""swiftseg-train end to end on tiny synthetic scenes (CPU): learning, the files of a run,
and the one-line errors. Resumption and interruption: test_train_stops.py."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from swiftseg_ros.checkpoint import load_checkpoint, load_model, make_meta, save_checkpoint
from swiftseg_ros.cli import train as train_cli
from swiftseg_ros.nets import build_model
from swiftseg_ros.synthetic.frames import write_dataset
from swiftseg_ros.trainer.loop import train
from swiftseg_ros.trainer.progress import read_metrics

# Tuned to fit 8 frames in 80 steps: no augmentation, no auxiliary heads or dropout, and a
# cosine decay to almost 0 so that the BatchNorm running statistics catch up with the
# weights before the last validation. The training split holds each frame COPIES times
# (`repeated_data`), so that the 80 steps are 10 epochs of 8 steps: each epoch ends with a
# checkpoint and a redrawn curves.png, which took most of the time of 40 epochs of 2 steps.
COPIES = 4
LEARN = ["data.val_split=val", "train.epochs=10", "train.val_every=5", "train.batch_size=4",
         "train.workers=1", "augment.scale_max=1.0", "augment.flip=false",
         "model.options.aux_heads=false", "model.options.dropout=0.0", "optim.name=adam",
         "optim.lr=0.01", "optim.schedule=cosine", "optim.min_lr=1e-6"]


@pytest.fixture(scope="module")
def repeated_data(tiny_data, tmp_path_factory) -> Path:
    """The 8 frames of `tiny_data` as split `val`, and COPIES times each as split `train`."""
    root = tmp_path_factory.mktemp("repeated")
    shutil.copy(tiny_data / "classes.yaml", root)
    for kind in ("images", "labels"):
        (root / kind / "train").mkdir(parents=True)
        shutil.copytree(tiny_data / kind / "train", root / kind / "val")
        for frame in sorted((tiny_data / kind / "train").iterdir()):
            for copy in range(COPIES):
                shutil.copy(frame, root / kind / "train" / f"{frame.stem}_{copy}{frame.suffix}")
    return root


@pytest.fixture(scope="module")
def short_run(repeated_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(tiny_config(repeated_data, *LEARN), out)


def test_short_run_lowers_the_loss_and_fits_the_frames(short_run):
    losses = [row["train_loss"] for row in short_run.history]
    assert losses[-1] < 0.6 * losses[0]
    assert short_run.best_miou >= 0.5


def test_run_writes_checkpoints_metrics_and_curves(short_run):
    out = short_run.out_dir
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "final.pt", "metrics.csv",
                                               "curves.png"}
    rows = read_metrics(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(1, 11))
    assert [r["epoch"] for r in rows if r["val_miou"] is not None] == [5, 10]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_checkpoint_holds_resumable_state_readable_safely(short_run):
    payload = torch.load(short_run.out_dir / "last.pt", weights_only=True)
    training = payload["training"]
    assert (training["epoch"], training["step"]) == (10, 80)
    assert training["optimizer"]["state"] and training["scheduler"]["last_epoch"] == 80
    assert isinstance(training["rng"]["torch"], torch.Tensor)
    assert training["config"]["optim"]["lr"] == 0.01


def test_exported_checkpoint_has_no_training_state_and_loads_for_inference(short_run):
    state, meta, training = load_checkpoint(short_run.out_dir / "final.pt")
    assert training is None
    assert meta["network"] == "fastscnn" and meta["num_classes"] == 9
    assert meta["class_names"][0] == "sky" and meta["train_size"] == [64, 128]
    assert meta["provenance"]["val_miou"] == pytest.approx(short_run.best_miou)
    model, _ = load_model(short_run.out_dir / "final.pt")
    assert model(torch.zeros(1, 3, 64, 128)).shape == (1, 9, 64, 128)


# errors ------------------------------------------------------------------------------------

def run_cli(argv, capsys) -> tuple[int, str]:
    code = train_cli(argv)
    return code, capsys.readouterr().err.strip()


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_dataset_folder_is_a_one_line_error(recipe, tmp_path, capsys):
    code, err = run_cli(["--config", str(recipe), "--out", str(tmp_path / "o"),
                         "--data", str(tmp_path / "nowhere")], capsys)
    assert_one_line_error(code, err, "nowhere", "does not exist")


def test_dataset_given_as_a_file_is_a_one_line_error(recipe, tmp_path, capsys):
    (tmp_path / "frames.tar").write_bytes(b"x")
    code, err = run_cli(["--config", str(recipe), "--out", str(tmp_path / "o"),
                         "--data", str(tmp_path / "frames.tar")], capsys)
    assert_one_line_error(code, err, "frames.tar is a file")


def test_unknown_config_key_is_a_one_line_error(tiny_data, recipe, tmp_path, capsys):
    code, err = run_cli(["--config", str(recipe), "--out", str(tmp_path), "--data", str(tiny_data),
                         "--set", "optim.learning_rate=0.1"], capsys)
    assert_one_line_error(code, err, "optim.learning_rate", "optim.lr")


def test_set_value_of_the_wrong_type_is_a_one_line_error(tiny_data, recipe, tmp_path, capsys):
    code, err = run_cli(["--config", str(recipe), "--out", str(tmp_path), "--data", str(tiny_data),
                         "--set", "train.batch_size=big"], capsys)
    assert_one_line_error(code, err, "train.batch_size", "'big'", "integer")


def test_resume_without_a_checkpoint_is_a_one_line_error(tiny_data, recipe, tmp_path, capsys):
    code, err = run_cli(["--config", str(recipe), "--out", str(tmp_path), "--data",
                         str(tiny_data), "--resume"], capsys)
    assert_one_line_error(code, err, "nothing to resume")


def test_resume_from_a_checkpoint_of_another_network_is_a_one_line_error(
        tiny_data, recipe, tmp_path, capsys):
    other = build_model("swiftnet_mnv2", 9)
    save_checkpoint(tmp_path / "last.pt", other, make_meta("swiftnet_mnv2", 9),
                    training={"epoch": 1, "step": 4})
    code, err = run_cli(["--config", str(recipe), "--out", str(tmp_path), "--data",
                         str(tiny_data), "--resume"], capsys)
    assert_one_line_error(code, err, "swiftnet_mnv2", "fastscnn")


def test_starting_over_an_existing_run_is_refused(tiny_data, recipe, tmp_path, capsys):
    save_checkpoint(tmp_path / "last.pt", build_model("fastscnn", 9), make_meta("fastscnn", 9),
                    training={"epoch": 1, "step": 4})
    code, err = run_cli(["--config", str(recipe), "--out", str(tmp_path), "--data",
                         str(tiny_data)], capsys)
    assert_one_line_error(code, err, "--resume")


def test_unreadable_frame_in_a_worker_is_one_line_and_the_process_exits(recipe, tmp_path):
    # torch re-raises a worker's error with the worker's traceback in its message, and a
    # worker that ignores SIGTERM used to keep the process from ever exiting
    data = write_dataset(tmp_path / "data", frames=8, width=128, height=64, seed=0,
                         progress=False)
    broken = sorted((data / "images").rglob("*.png"))[3]
    broken.write_bytes(b"not a png")
    command = [sys.executable, "-m", "swiftseg_ros.trainer.train", "--config", str(recipe),
               "--out", str(tmp_path / "run"), "--data", str(data),
               "--set", "train.workers=1"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith(f"{broken}: cannot read the image "
                                                   "(missing, unreadable, or not an image "
                                                   "format OpenCV reads)"), process.stderr
