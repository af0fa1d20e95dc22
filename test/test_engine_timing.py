"""Stage timing window and palette helpers of the engine."""

import numpy as np
import pytest

from swiftseg_ros.engine import colorize
from swiftseg_ros.engine.palette import palette_table
from swiftseg_ros.engine.timing import STAGES, CpuStageClock, StageWindow
from swiftseg_ros.errors import ConfigError


def frame_timings(value):
    return {stage: float(value) for stage in STAGES}


def test_window_keeps_only_the_last_frames():
    window = StageWindow(size=10)
    for i in range(25):
        window.add(frame_timings(i), end_time=float(i))
    summary = window.summary()
    assert summary["frames"] == 25 and summary["window"] == 10
    total = summary["stages"]["total"]
    assert total["max"] == 24.0 and total["p50"] == pytest.approx(19.5)
    assert total["mean"] == pytest.approx(19.5)


def test_window_percentiles_are_ordered():
    window = StageWindow(size=200)
    rng = np.random.default_rng(0)
    for t, value in enumerate(rng.exponential(5.0, 200)):
        window.add(frame_timings(value), end_time=t * 0.1)
    stats = window.summary()["stages"]["forward"]
    assert stats["p50"] <= stats["p90"] <= stats["p95"] <= stats["p99"] <= stats["max"]


def test_rates_come_from_end_times_and_mean_total():
    window = StageWindow(size=5)
    for i in range(5):
        window.add(frame_timings(20.0), end_time=i * 0.05)
    summary = window.summary()
    assert summary["rate_hz"] == pytest.approx(20.0)
    assert summary["throughput_hz"] == pytest.approx(50.0)


def test_empty_window_has_no_rates():
    summary = StageWindow(size=3).summary()
    assert summary["frames"] == 0 and summary["stages"] == {} and summary["rate_hz"] is None


def test_cpu_clock_gives_each_device_stage_its_interval():
    clock = CpuStageClock()
    for i in range(6):
        clock.mark(i)
    timings = clock.read()
    assert set(timings) == {"upload", "preprocess", "forward", "postprocess", "download"}
    assert all(value >= 0 for value in timings.values())


def test_colorize_maps_ids_and_blacks_out_unknown_ids():
    table = palette_table([[1, 2, 3], [4, 5, 6]], 2)
    label = np.array([[0, 1], [255, 1]], np.uint8)
    np.testing.assert_array_equal(colorize(label, table),
                                  [[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [4, 5, 6]]])


def test_palette_with_too_few_colours_is_a_config_error():
    with pytest.raises(ConfigError, match="2 colours for 3 classes"):
        palette_table([[1, 2, 3], [4, 5, 6]], 3)


def test_stages_timed_as_nan_are_left_out_of_the_percentiles():
    window = StageWindow(4)
    for total in (2.0, 4.0):
        timings = dict.fromkeys(STAGES, float("nan"))
        timings.update(host_copy=0.5, total=total)
        window.add(timings, total)
    summary = window.summary()
    assert set(summary["stages"]) == {"host_copy", "total"}
    assert summary["stages"]["total"]["p50"] == 3.0
