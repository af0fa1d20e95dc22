"""swiftseg-train stopped and resumed (CPU, tiny synthetic scenes): a resumed run ends with
the parameters of an uninterrupted one, SIGTERM saves a resumable checkpoint, a second
Ctrl-C aborts, and the messages number epochs as the progress does. In a module of its own
beside test_train_run.py, so that `make test` runs the two on two processes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import tiny_config

from swiftseg_ros.checkpoint import load_checkpoint, load_model
from swiftseg_ros.cli import train as train_cli
from swiftseg_ros.trainer.loop import train
from swiftseg_ros.trainer.progress import read_metrics

RESUME = ["train.epochs=3", "train.val_every=3", "optim.name=sgd", "optim.lr=0.01",
          "optim.schedule=poly"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    return train(tiny_config(tiny_data, *RESUME), tmp_path_factory.mktemp("full"))


def test_export_drops_the_auxiliary_heads(uninterrupted):
    trained, _, _ = load_checkpoint(uninterrupted.out_dir / "last.pt")
    exported, meta, _ = load_checkpoint(uninterrupted.out_dir / "final.pt")
    assert any(k.startswith("aux_heads.") for k in trained)
    assert set(exported) == {k for k in trained if not k.startswith("aux_heads.")}
    assert meta["network_options"]["aux_heads"] is False
    load_model(uninterrupted.out_dir / "final.pt")


@pytest.mark.parametrize("stop_at", [4, 6], ids=["after-an-epoch", "mid-epoch"])
def test_resumed_run_ends_with_the_parameters_of_an_uninterrupted_one(
        tiny_data, tmp_path, uninterrupted, stop_at):
    config = tiny_config(tiny_data, *RESUME)
    first = train(config, tmp_path, stop=lambda step: step >= stop_at)
    assert first.interrupted_by is not None and first.step == stop_at
    assert not (tmp_path / "final.pt").exists()
    resumed = train(config, tmp_path, resume=True)
    assert resumed.step == uninterrupted.step == 12
    reference = uninterrupted.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, reference[name]), name
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(tiny_data, recipe, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "swiftseg_ros.trainer.train", "--config", str(recipe),
               "--out", str(out), "--data", str(tiny_data), "--epochs", "1000",
               "--set", "train.workers=1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    # to the whole process group, DataLoader worker included, as systemd and SLURM do
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    _, _, training = load_checkpoint(out / "last.pt")
    assert training["epoch"] >= 1
    assert "--resume" in stderr.splitlines()[-1]


def test_resume_without_a_recipe_continues_with_the_runs_own(tiny_data, tmp_path, capsys):
    config = tiny_config(tiny_data, "train.epochs=2", "train.val_every=2")
    train(config, tmp_path, stop=lambda step: step >= 2, command="swiftseg-train --first",
          recipe="tiny.yaml")
    assert train_cli(["--out", str(tmp_path), "--resume"]) == 0
    _, _, training = load_checkpoint(tmp_path / "last.pt")
    assert (training["epoch"], training["step"]) == (2, 8)
    assert training["config"] == config
    _, meta, _ = load_checkpoint(tmp_path / "final.pt")
    # the shipped file still names the command that started the run, and what continued it
    assert meta["provenance"]["command"] == "swiftseg-train --first"
    assert meta["provenance"]["resumed_with"] == [
        f"swiftseg-train --out {tmp_path} --resume"]
    assert meta["provenance"]["recipe"] == "tiny.yaml"


# stopping and numbering ---------------------------------------------------------------------

def test_second_ctrl_c_aborts_at_once():
    from swiftseg_ros.trainer.loop import StopRequest

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopRequest() as stop:
            signal.raise_signal(signal.SIGINT)  # the first: finish the step, then stop
            assert stop()
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_interrupt_and_resume_messages_number_epochs_as_the_progress_and_metrics_do(
        tiny_data, tmp_path, capsys):
    from swiftseg_ros.trainer.loop import LAST
    from swiftseg_ros.trainer.train import interrupted_message

    config = tiny_config(tiny_data, *RESUME)  # 4 steps per epoch, 3 epochs
    first = train(config, tmp_path, stop=lambda step: step >= 6, progress=False)
    stopped = interrupted_message(first, tmp_path / LAST)
    assert "interrupted at epoch 2/3 step 2/4 (global step 6)" in stopped
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.csv")] == [1]
    capsys.readouterr()
    train(config, tmp_path, resume=True, stop=lambda step: step >= 8, progress=False)
    assert "at epoch 2/3 step 2/4 (global step 6)" in capsys.readouterr().err
