"""swiftseg-soak without ROS: its options refused before anything runs, a short soak of the
pipeline with faults, and the memory verdict. The 30-second soak of the node under rclpy
is test_soak_ros.py (in the rclpy tests' session)."""

from __future__ import annotations

import json

import pytest

from swiftseg_ros.cli import soak
from swiftseg_ros.soak.record import MEMORY_BOUND_MB, memory_growth


@pytest.mark.parametrize("argv,words", [
    (["--minutes", "0"], "--minutes 0"),
    (["--minutes", "-1"], "--minutes -1"),
    (["--minutes", "1", "--rate", "0"], "--rate 0"),
    (["--minutes", "1", "--rate", "fast"], "--rate fast"),
    (["--minutes", "1", "--size", "64"], "--size 64"),
    (["--minutes", "1", "--param", "threads=many"], "--param 'threads=many'"),
    (["--minutes", "1", "--param", "no_such=1"], "--param 'no_such=1'"),
    (["--rate", "5"], "--minutes: required"),
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


def test_without_ros_the_soak_drives_the_pipeline_and_accounts_for_every_frame():
    # where rclpy is missing (make setup without the wheels): the same pipeline, no ROS
    from swiftseg_ros.soak.run import SoakOptions, run_soak

    result = run_soak(SoakOptions(minutes=0.2, rate_hz=30.0, width=64, height=32,
                                  params={"device": "cpu", "backend": "torch"},
                                  fault_every_s=1.5, window_s=2.0, ros=False),
                      say=lambda line: None)
    assert result["target"] == "pipeline (no ROS)"
    frames = result["frames"]["soak_camera"]
    assert frames["received"] == frames["sent"]  # nothing between the camera and it
    assert result["verdict"]["unaccounted"] == 0 and frames["failed"] == 0, frames
    assert frames["published"] > 0 and len(result["faults"]) >= 3
    assert all(fault["survived"] for fault in result["faults"]), result["faults"]


# ------------------------------------------------------------------ the memory verdict
def _series(level, minutes=60):
    """(seconds, MB) samples once a second for `minutes`, `level(t)` MB at second t."""
    return [(float(t), level(t)) for t in range(minutes * 60)]


def _plan_cache_steps(t):
    # the 60-minute soak's shape: 150-200 MB steps up and down at size faults, every 200 s
    return 900.0 + (0.0, 180.0, 60.0, 200.0, 20.0)[int(t // 200) % 5]


def test_plan_cache_steps_up_and_down_are_not_growth():
    growth = memory_growth(_series(_plan_cache_steps), warmup_s=60.0)
    assert growth is not None and abs(growth) <= MEMORY_BOUND_MB


def test_a_steady_creep_is_growth_even_under_the_steps():
    creep = memory_growth(_series(lambda t: 900.0 + 1.0 * t / 60), warmup_s=60.0)  # 1 MB/min
    assert creep > MEMORY_BOUND_MB
    both = memory_growth(_series(lambda t: _plan_cache_steps(t) + t / 60), warmup_s=60.0)
    assert both > MEMORY_BOUND_MB


def test_a_level_that_never_comes_back_down_is_growth():
    assert memory_growth(_series(lambda t: 900.0 + (50.0 if t > 1000 else 0.0)),
                         warmup_s=60.0) == 50.0


def test_the_warm_up_is_left_out_and_too_short_a_soak_is_not_judged():
    assert memory_growth(_series(lambda t: 300.0 if t < 60 else 900.0), 60.0) == 0.0
    assert memory_growth([(0.0, 900.0), (30.0, 950.0)], warmup_s=60.0) is None


def _saved_soak(level):
    windows = [dict(start_s=60.0 * i, frames=1800, p50_ms=20.0, p99_ms=30.0,
                    steady_frames=1700, steady_p50_ms=20.0, steady_p99_ms=30.0,
                    rss_median_mb=None, rss_max_mb=None, cuda_max_mb=None) for i in range(10)]
    frames = dict(sent=18100, received=18000, published=17000, dropped=900, rejected=100, failed=0,
                  last_failure="")
    return {"duration_s": 600.0, "frames": {"soak_camera": frames}, "windows": windows,
            "faults": [{"kind": "size", "start_s": 65.0, "survived": True}],
            "memory": [{"t_s": t, "rss_mb": mb, "cuda_mb": None}
                       for t, mb in _series(level, minutes=10)],
            "verdict": {"ok": False, "reasons": ["memory grew 200.0 MB after the first "
                                                 "window (bound 20 MB)"]}}


@pytest.mark.parametrize("level,code,line", [
    (lambda t: 900.0 + (180.0 if 200 <= t < 400 or t >= 540 else 0.0), 0, "soak: PASS"),
    (lambda t: 900.0 + t / 10, 1, "memory's floor rose"),
])
def test_judge_rereads_a_saved_soak_under_the_floor_rule(tmp_path, capsys, level, code, line):
    saved = tmp_path / "soak.json"
    saved.write_text(json.dumps(_saved_soak(level)))
    assert soak(["--judge", str(saved)]) == code
    captured = capsys.readouterr()
    assert line in captured.out + captured.err


def test_judge_of_a_file_that_is_not_a_soak_is_one_line_and_exit_2(tmp_path, capsys):
    saved = tmp_path / "soak.json"
    saved.write_text('{"memory": []}')
    assert soak(["--judge", str(saved)]) == 2
    err = capsys.readouterr().err
    assert f"--judge {saved}: not a soak.json" in err and len(err.strip().splitlines()) == 1
