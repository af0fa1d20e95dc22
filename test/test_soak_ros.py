"""swiftseg-soak against the real node: a 30-second soak with every kind of fault (rclpy
in-process where the wheels are installed, else the pipeline), in a process of its own on
a ROS domain of its own; in the rclpy tests' session of `make test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ros_helpers import isolate_ros_domain

from swiftseg_ros.soak.faults import FAULTS


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
    assert all(reason.startswith(("memory's floor", "steady p99")) for reason in
               verdict["reasons"]), verdict["reasons"]
    assert process.returncode == (0 if verdict["ok"] else 1)
