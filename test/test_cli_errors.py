"""The error contract of every console script, swept with a table of bad inputs.

Each bad input must give exit status 2 and exactly one line on stderr that names the
option (or the file) and no traceback, before any work: nothing is left behind in the
folder the command was pointed at. The table runs in this process through the console
entry points (`swiftseg_ros.cli`), which is what the installed scripts call; a few cases
need a real process: paths that are not UTF-8 (OpenCV used to crash on them, and a crash
must fail this test, not end the test session) and SIGTERM.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from replay_helpers import checkpoint, write_bag

from swiftseg_ros import cli
from swiftseg_ros.files import read_image, write_image
from swiftseg_ros.replay.synthbag import CameraBagSpec, write_camera_bag
from swiftseg_ros.synthetic.frames import write_dataset

CUDA = torch.cuda.is_available()
# the child processes run one intra-op thread, as the suite does (conftest.py)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY_TRAINING = ["model.name=fastscnn", "data.val_split=train", "augment.crop=[32, 64]",
                 "train.batch_size=2", "train.workers=0", "log.tensorboard=false",
                 "train.epochs=1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Valid inputs the bad cases lean on: weights, a dataset, a bag, an image folder, an
    existing file, a folder and a dataset whose labels hold a class id out of range."""
    root = tmp_path_factory.mktemp("inputs")
    data = write_dataset(root / "data", frames=2, width=64, height=32, progress=False)
    bad = write_dataset(root / "bad_labels", frames=2, width=64, height=32, progress=False)
    label = bad / "labels" / "train" / "frame_000000.png"
    write_image(label, np.full_like(read_image(label), 50))
    (root / "images").mkdir()
    write_image(root / "images" / "a.png", np.zeros((32, 64, 3), np.uint8))
    (root / "existing.onnx").write_bytes(b"x")
    (root / "existing.pt").write_bytes(b"x")
    (root / "notes.txt").write_text("not footage")
    (root / "folder").mkdir()
    torch.save({"features.0.weight": torch.zeros(1)}, root / "imagenet.pth")
    return {"w": str(checkpoint(root / "w.pt")), "data": str(data), "bad": str(bad),
            "bag": str(write_bag(root)), "images": str(root / "images"),
            "onnx": str(root / "existing.onnx"), "pt": str(root / "existing.pt"),
            "txt": str(root / "notes.txt"), "dir": str(root / "folder"),
            "pth": str(root / "imagenet.pth"),
            "recipe": str(Path(__file__).resolve().parents[1] / "config" / "train" /
                          "fastscnn_synth.yaml")}


# (tool, argv with {w} {data} ... for the inputs and {out} for a path in the empty folder
# the command is pointed at, words the one line must hold); exit status 2 unless given
CASES = [
    ("models", ["--size", "100000x100000"], "--size '100000x100000'"),
    ("models", ["--size", "0x0"], "from 32 to 8192"),
    ("models", ["--json", "{dir}"], "--json"),
    ("models", ["--json", "/proc/m.json"], "--json"),
    ("bench", ["--sizes", "7x5"], "--sizes '7x5'"),
    ("bench", ["--sizes", "100000x100000"], "--sizes"),
    ("bench", ["--networks", "nosuch"], "--networks 'nosuch'"),
    ("bench", ["--json", "/proc/b.json"], "--json"),
    ("bench", ["--device", "cuda"], "--device cuda"),
    ("bench", ["--iters", "0"], "--iters"),
    ("replay", ["{out}/missing", "--out", "{out}/o"], "not found"),
    ("replay", ["{txt}", "--out", "{out}/o"], "not a rosbag2 file"),
    ("replay", ["{bag}", "--out", "{out}/o", "--montage-frames", "-1"], "--montage-frames"),
    ("replay", ["{bag}", "--out", "{out}/o", "--device", "cuda"], "--device cuda"),
    ("replay", ["{bag}", "--out", "{out}/o", "--network", "nosuch"], "--network"),
    ("replay", ["{bag}", "--out", "/proc/o"], "--out"),
    ("replay", ["{bag}", "--out", "{txt}"], "--out"),
    ("replay", ["{bag}", "--out", "{out}/o", "--json", "/proc/r.json"], "--json"),
    ("replay", ["{bag}", "--out", "{out}/o", "--compare", "{w}", "{w}"], "same configuration"),
    ("replay", ["{images}", "--out", "{out}/o", "--fps", "-1"], "--fps"),
    ("replay", ["{bag}", "--out", "{out}/o", "--fps", "5"], "--fps"),
    ("demo", ["--out", "{out}/d", "--size", "100000x100000"], "--size"),
    ("demo", ["--out", "{out}/d", "--device", "cuda"], "--device cuda"),
    ("demo", ["--out", "{out}/d", "--frames", "0"], "--frames"),
    ("demo", ["--out", "/proc/d"], "--out"),
    ("synth", ["--out", "{out}/s", "--frames", "99999999999999999999"], "--frames"),
    ("synth", ["--out", ""], "--out"),
    ("synth", ["--out", "{out}/s", "--size", "0x0"], "--size '0x0'"),
    ("synth", ["--out", "{out}/s", "--split", "a/b"], "--split"),
    ("synth", ["--out", "/proc/s"], "--out"),
    ("train", ["--config", "{dir}", "--out", "{out}/t"], "is a folder"),
    ("train", ["--out", "{out}/t"], "--config"),
    ("train", ["--config", "{out}/none.yaml", "--out", "{out}/t"], "none.yaml"),
    ("train", ["--config", "{recipe}", "--out", "{out}/t", "--device", "cuda", "--data", "{data}",
               *(f"--set={s}" for s in TINY_TRAINING)], "--device cuda"),
    ("evaluate", ["--weights", "{w}", "--data", "{data}", "--split", "train", "--json",
              "/proc/e.json"], "--json"),
    ("evaluate", ["--weights", "{w}", "--data", "{data}", "--split", "train", "--montage",
              "{dir}"], "--montage"),
    ("evaluate", ["--weights", "{w}", "--data", "{data}", "--split", "train", "--montage",
              "{out}/m.txt"], "--montage"),
    ("evaluate", ["--weights", "{w}", "--data", "{data}", "--network", "nosuch"], "not a network"),
    ("evaluate", ["--weights", "{w}", "--data", "{data}", "--size", "100000x100000"], "--size"),
    ("evaluate", ["--weights", "{w}", "--data", "{data}", "--device", "cuda"], "--device cuda"),
    ("evaluate", ["--weights", "{w}", "--data", "{out}/missing"], "missing"),
    ("export", ["--weights", "{w}", "--onnx", "{out}/m.onnx", "--size", "100000x100000"],
     "--size"),
    ("export", ["--weights", "{w}", "--onnx", "{onnx}"], "already exists"),
    ("export", ["--weights", "{w}", "--onnx", "/proc/m.onnx"], "--onnx"),
    ("export", ["--weights", "{w}", "--onnx", "{out}/m.txt"], "--onnx"),
    ("export", ["--weights", "{w}", "--onnx", "{out}/m.onnx", "--json", "/proc/x.json"],
     "--json"),
    ("import_weights", ["--from", "torchvision", "{pth}", "--network", "fastscnn", "--out",
                        "/proc/o.pt"], "--out"),
    ("import_weights", ["--from", "torchvision", "{pth}", "--network", "fastscnn", "--out",
                        "{pt}"], "already exists"),
    ("import_weights", ["--from", "torchvision", "{pth}", "--network", "fastscnn", "--out",
                        "{out}/o.pt", "--json", "/proc/x.json"], "--json"),
]


def case_id(case) -> str:
    tool, argv, _ = case
    return f"{tool} {' '.join(argv)}"[:80]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, inputs, tmp_path, capsys):
    tool, argv, words = case
    if "cuda" in argv and CUDA:
        pytest.skip("this machine has CUDA: --device cuda is not a bad input here")
    argv = [a.format(out=tmp_path, **inputs) for a in argv]
    status = getattr(cli, tool)(argv)
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "error" in err and words in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written where the command pointed


def test_training_on_labels_out_of_range_stops_in_one_line_and_leaves_no_metrics(
        inputs, tmp_path, capsys):
    """The labels are read only once training starts: its progress lines come first."""
    status = cli.train(["--config", inputs["recipe"], "--out", str(tmp_path / "t"), "--data",
                        inputs["bad"], *(f"--set={s}" for s in TINY_TRAINING)])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]]
    assert "class id 50 is out of range" in err
    assert not list(tmp_path.rglob("metrics.csv")) and not list(tmp_path.rglob("*.pt"))


def test_help_never_prints_a_default_of_none(capsys):
    for tool in ("models", "bench", "replay", "demo", "synth", "train", "evaluate", "export",
                 "import_weights"):
        with pytest.raises(SystemExit):
            getattr(cli, tool)(["--help"])
        assert "(default: None)" not in capsys.readouterr().out, tool


def test_demo_quiet_prints_no_progress(inputs, tmp_path, capsys):
    status = cli.demo(["--out", str(tmp_path / "d"), "--frames", "2", "--size", "64x32",
                       "--weights", inputs["w"], "--backend", "torch", "--quiet"])
    out, err = capsys.readouterr()
    assert status in (0, 1)  # the random weights may fail the verdict; it is shown only
    assert err.count("\n") <= 1 and "frame/s" not in err + out and "%|" not in err + out


NON_UTF8 = """
import json, os, shutil, sys
from pathlib import Path
from swiftseg_ros import cli
w, bag, root = sys.argv[1:4]
odd = root + "/x\\udcff"  # the bytes b'x\\xff': not UTF-8
os.mkdir(odd)
shutil.copytree(bag, odd + "/bag")
results = {
    "synth": cli.synth(["--out", odd + "/s", "--frames", "1", "--size", "64x32", "--quiet"]),
    # the dataset synth just wrote, read from the odd path too
    "eval": cli.evaluate(["--weights", w, "--data", odd + "/s", "--split", "train", "--quiet",
                          "--montage", odd + "/m.png", "--json", odd + "/e.json",
                          "--backend", "torch"]),
    "replay": cli.replay([odd + "/bag", "--image-topic", "/camera/image_raw", "--out", odd + "/r",
                          "--quiet", "--backend", "torch"]),
    "export": cli.export(["--weights", w, "--onnx", odd + "/m.onnx", "--size", "64x32",
                          "--no-verify"]),
}
results["files"] = sorted(p.name for p in Path(odd).rglob("*") if p.is_file())
print(json.dumps(results))
"""


def test_paths_that_are_not_utf8_work(inputs, tmp_path):
    """One process for every case: OpenCV is given encoded buffers, never these paths."""
    done = subprocess.run([sys.executable, "-c", NON_UTF8, inputs["w"], inputs["bag"],
                           str(tmp_path)], capture_output=True, text=True,
                          errors="backslashreplace", timeout=300, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    files = set(results.pop("files"))
    assert results == {"synth": 0, "eval": 0, "replay": 0, "export": 0}, \
        done.stderr[-2000:]
    assert {"frame_000000.png", "m.png", "e.json", "report.md", "montage.png",
            "m.onnx"} <= files
    assert "Traceback" not in done.stderr


SIGTERM_REPLAY = textwrap.dedent("""
    import sys
    from swiftseg_ros import cli
    sys.exit(cli.replay(sys.argv[1:]))
""")


def test_sigterm_stops_a_replay_like_ctrl_c_with_a_marked_partial_report(inputs, tmp_path):
    bag = write_camera_bag(tmp_path / "long", CameraBagSpec(frames=300, width=64, height=32),
                           progress=False)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_REPLAY, str(bag), "--out", str(out), "--weights",
         inputs["w"], "--backend", "torch", "--quiet", "--image-topic", "/camera/image_raw",
         "--label-topic", "/camera/labels"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    deadline = time.monotonic() + 120
    while process.poll() is None and not (out / "bag").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the output bag is opened once the engine is ready
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "swiftseg-replay: terminated after")
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted_by"] == "SIGTERM" and not report["complete"]
    assert "Partial results: interrupted" in (out / "report.md").read_text()
    assert (out / "bag" / "metadata.yaml").is_file()  # the bag was closed properly


def test_sigterm_swallowed_by_a_c_callback_still_stops_a_replay(inputs, tmp_path,
                                                                 monkeypatch, capsys):
    # seen: SIGTERM while numba compiled (llvmlite's ctypes callbacks drop a signal
    # handler's exception) and the replay ran to the end, exit 0
    from test_interrupts import signal_inside_a_ctypes_callback

    from swiftseg_ros.engine import SegmentationEngine

    real_infer = SegmentationEngine.infer
    calls = []

    def infer_with_a_swallowed_sigterm(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            signal_inside_a_ctypes_callback(signal.SIGTERM)
        return real_infer(self, *args, **kwargs)

    monkeypatch.setattr(SegmentationEngine, "infer", infer_with_a_swallowed_sigterm)
    bag = write_camera_bag(tmp_path / "bag", CameraBagSpec(frames=20, width=64, height=32),
                           progress=False)
    out = tmp_path / "out"
    code = cli.replay([str(bag), "--out", str(out), "--weights", inputs["w"], "--backend",
                       "torch", "--quiet", "--image-topic", "/camera/image_raw",
                       "--no-video"])
    err = capsys.readouterr().err
    assert code == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "swiftseg-replay: terminated after")
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted_by"] == "SIGTERM" and not report["complete"]
    assert len(calls) < 20


def test_the_gpu_check_says_in_one_line_what_its_python_lacks(tmp_path):
    """A Python without the project's packages (here: one that cannot import them)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-I", "-S", "-c",
                           "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from swiftseg_ros import gpucheck; "
                           "sys.exit(gpucheck.main(['--out', sys.argv[2]]))",
                           env["PYTHONPATH"], str(tmp_path / "g")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "has no torch" in done.stderr
    assert not (tmp_path / "g").exists()
