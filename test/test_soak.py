"""swiftseg-soak: its options refused before anything runs, and a 30-second soak with every
kind of fault against the real node (rclpy in-process where the wheels are installed,
else the pipeline), in a process of its own on a ROS domain of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ros_helpers import isolate_ros_domain

from swiftseg_ros.cli import soak
from swiftseg_ros.soak.faults import FAULTS


@pytest.mark.parametrize("argv,words", [
    (["--minutes", "0"], "--minutes 0"),
    (["--minutes", "-1"], "--minutes -1"),
    (["--minutes", "1", "--rate", "0"], "--rate 0"),
    (["--minutes", "1", "--rate", "fast"], "--rate fast"),
    (["--minutes", "1", "--size", "64"], "--size 64"),
    (["--minutes", "1", "--param", "threads=many"], "--param 'threads=many'"),
    (["--minutes", "1", "--param", "no_such=1"], "--param 'no_such=1'"),
])
def test_bad_options_are_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, argv,
                                                                   words):
    out = tmp_path / "out"
    assert soak([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err
    assert not (out / "soak.json").exists()


def test_an_unwritable_output_folder_is_one_line_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert soak(["--minutes", "1", "--out", str(blocker / "inside")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and err.count("\n") == 1, err


def test_a_30_second_soak_with_every_fault_accounts_for_every_frame(tmp_path):
    isolate_ros_domain()
    out = tmp_path / "soak"
    # the compressed transport: corrupt and truncated JPEGs among the faults; the torch
    # backend: no ONNX graph to export and time at each new size (the 60-minute soak of
    # docs/reliability.md runs the node's default, auto)
    process = subprocess.run(
        [sys.executable, "-m", "swiftseg_ros.soak.cli", "--minutes", "0.55", "--window", "5",
         "--fault-every", "2", "--size", "128x64", "--transport", "compressed",
         "--param", "backend=torch", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ})
    assert process.returncode in (0, 1), process.stdout + process.stderr
    result = json.loads((out / "soak.json").read_text())
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frames = result["frames"]["soak_camera"]
    verdict = result["verdict"]
    assert verdict["unaccounted"] == 0 and frames["failed"] == 0, frames
    assert frames["received"] == (frames["published"] + frames["dropped"]
                                  + frames["rejected"] + frames["failed"])
    assert 0 < frames["rejected"] <= frames["corrupt_sent"], frames
    assert {fault["kind"] for fault in result["faults"]} == set(FAULTS)
    assert all(fault["survived"] for fault in result["faults"]), result["faults"]
    # half a minute cannot judge drift or growth meaningfully: only those may fail it
    assert all(reason.startswith(("memory grew", "steady p99")) for reason in
               verdict["reasons"]), verdict["reasons"]
    assert process.returncode == (0 if verdict["ok"] else 1)


def test_without_ros_the_soak_drives_the_pipeline_and_accounts_for_every_frame():
    # where rclpy is missing (make setup without the wheels): the same pipeline, no ROS
    from swiftseg_ros.soak.run import SoakOptions, run_soak

    result = run_soak(SoakOptions(minutes=0.25, rate_hz=30.0, width=64, height=32,
                                  params={"device": "cpu", "backend": "torch"},
                                  fault_every_s=1.5, window_s=4.0, ros=False),
                      say=lambda line: None)
    assert result["target"] == "pipeline (no ROS)"
    frames = result["frames"]["soak_camera"]
    assert frames["received"] == frames["sent"]  # nothing between the camera and it
    assert result["verdict"]["unaccounted"] == 0 and frames["failed"] == 0, frames
    assert frames["published"] > 0 and len(result["faults"]) >= 3
    assert all(fault["survived"] for fault in result["faults"]), result["faults"]
