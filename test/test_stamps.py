"""Frames lost before the node and the camera rate, estimated from synthetic stamp sequences
(a camera at a known rate with jitter, frames removed as a transport would lose them)."""

import numpy as np
import pytest

from swiftseg_ros.ros.diagnostics import DiagnosticsReporter
from swiftseg_ros.ros.frames import FrameCounters
from swiftseg_ros.ros.stamps import PAUSE_S, CameraStampTracker


def camera_stamps(rate_hz: float, count: int, jitter: float = 0.05, seed: int = 0) -> np.ndarray:
    """Stamps of `count` frames of a camera at `rate_hz`, each off by up to `jitter` periods."""
    rng = np.random.default_rng(seed)
    period = 1.0 / rate_hz
    return 100.0 + np.arange(count) * period + rng.uniform(-jitter, jitter, count) * period


def tracked(stamps, subscribed_at: float | None = None) -> CameraStampTracker:
    tracker = CameraStampTracker()
    if subscribed_at is not None:
        tracker.subscribed(subscribed_at)
    for stamp in stamps:
        tracker.add(stamp)
    return tracker


def test_a_camera_received_whole_has_its_rate_and_loses_nothing():
    tracker = tracked(camera_stamps(10.0, 300))
    assert tracker.camera_rate_hz() == pytest.approx(10.0, rel=0.02)
    assert tracker.lost == 0


@pytest.mark.parametrize("loss", [0.1, 0.3, 0.55])
def test_random_losses_are_counted_within_a_few_percent(loss):
    # the 1280x720 run of the issue: 166-188 of 301 frames never reached the node
    stamps = camera_stamps(10.0, 301, seed=1)
    kept = np.random.default_rng(2).random(301) >= loss
    kept[0] = True
    tracker = tracked(stamps[kept])
    truly_lost = int(np.sum(~kept[: np.flatnonzero(kept)[-1]]))
    assert tracker.camera_rate_hz() == pytest.approx(10.0, rel=0.05)
    assert tracker.lost == pytest.approx(truly_lost, abs=max(2, 0.05 * truly_lost))


def test_two_frames_missing_in_a_row_are_two_lost():
    stamps = camera_stamps(30.0, 40, jitter=0.0)
    tracker = tracked(np.delete(stamps, [20, 21]))
    assert tracker.lost == 2


def test_losses_before_the_estimate_exists_are_counted_once_it_does():
    stamps = camera_stamps(10.0, 40, jitter=0.0)
    tracker = tracked(np.delete(stamps, [2, 3, 4]))  # in the first intervals
    assert tracker.lost == 3


def test_a_pause_of_the_camera_is_not_counted_as_lost_frames():
    stamps = camera_stamps(10.0, 60, jitter=0.0)
    stamps[30:] += PAUSE_S + 5.0  # 15 s without frames
    assert tracked(stamps).lost == 0


@pytest.mark.parametrize("outage_s", [1.0, 4.5, 9.5])
def test_an_outage_of_seconds_counts_every_frame_in_it(outage_s):
    # the 720p run: 4-5 s with nothing received while the camera published
    stamps = camera_stamps(10.0, 400, jitter=0.05, seed=3)
    first, count = 100, int(outage_s * 10)
    kept = np.delete(stamps, np.arange(first, first + count))
    assert tracked(kept).lost == count


def test_a_publisher_late_by_up_to_most_of_a_period_loses_nothing():
    # a busy publisher: three frames in ten are late by up to 0.9 periods, the timer keeps
    # its schedule; judging intervals alone read this as 6-15 lost frames
    rng = np.random.default_rng(4)
    stamps = camera_stamps(10.0, 600, jitter=0.0)
    late = rng.random(600) < 0.3
    stamps[late] += rng.uniform(0.0, 0.09, late.sum())
    tracker = tracked(stamps)
    assert tracker.lost <= 1
    assert tracker.camera_rate_hz() == pytest.approx(10.0, rel=0.03)


def test_losses_outages_and_jitter_over_an_hour_add_up():
    # an hour at 10 Hz: 20 % random losses, a 4 s outage every ten minutes, late frames;
    # the period estimate must not drift the total
    rng = np.random.default_rng(5)
    stamps = camera_stamps(10.03, 36_000, jitter=0.0)
    late = rng.random(stamps.size) < 0.2
    stamps[late] += rng.uniform(0.0, 0.07, late.sum())
    kept = rng.random(stamps.size) >= 0.2
    for start in range(3000, 36_000, 6000):
        kept[start: start + 40] = False
    kept[0] = kept[-1] = True
    truly_lost = int((~kept).sum())
    assert tracked(stamps[kept]).lost == pytest.approx(truly_lost, rel=0.02)


def test_frames_between_subscribing_and_the_first_arrival_are_lost():
    # the camera runs before the node listens at 100.0; nothing arrives until 102.05
    stamps = 95.05 + np.arange(200) * 0.1
    kept = stamps[stamps >= 102.0]
    tracker = tracked(kept, subscribed_at=100.0)
    assert tracker.lost == int(np.sum((stamps > 100.0) & (stamps < 102.0)))


def test_a_camera_starting_long_after_the_node_loses_nothing():
    assert tracked(150.0 + np.arange(100) * 0.1, subscribed_at=100.0).lost == 0
    # and stamps from another clock, before the subscription, neither
    assert tracked(50.0 + np.arange(100) * 0.1, subscribed_at=100.0).lost == 0


def test_frames_published_while_the_node_was_not_listening_are_not_lost():
    stamps = camera_stamps(10.0, 300, jitter=0.0)
    tracker = tracked(stamps[:100])
    tracker.subscribed(stamps[150] - 0.01)  # deactivated for 5 s, then activated again
    for stamp in stamps[150:]:
        tracker.add(stamp)
    assert tracker.lost == 0


def test_stamps_going_back_restart_the_estimate_and_keep_the_total():
    first = np.delete(camera_stamps(10.0, 40, jitter=0.0), [10])
    tracker = tracked(first)
    assert tracker.lost == 1
    for stamp in camera_stamps(20.0, 40, jitter=0.0):  # the bag again, from its start
        tracker.add(stamp)
    assert tracker.lost == 1
    assert tracker.camera_rate_hz() == pytest.approx(20.0)


def test_equal_stamps_give_no_estimate():
    tracker = tracked([5.0] * 50)
    assert tracker.period_s() is None and tracker.camera_rate_hz() == 0.0 and tracker.lost == 0


def test_every_second_frame_lost_looks_like_a_camera_at_half_the_rate():
    # the documented limit: a fixed pattern of losses cannot be told from a slower camera
    tracker = tracked(camera_stamps(10.0, 200, jitter=0.0)[::2])
    assert tracker.camera_rate_hz() == pytest.approx(5.0) and tracker.lost == 0


@pytest.mark.parametrize("interval,lost", [(0.1, 0), (0.14, 0), (0.2, 1), (0.31, 2),
                                           (1.0, 9), (2.5, 24), (PAUSE_S - 0.05, 99),
                                           (PAUSE_S + 0.1, 0)])
def test_lost_frames_in_one_gap_of_a_10_hz_camera(interval, lost):
    stamps = list(camera_stamps(10.0, 20, jitter=0.0))
    stamps += [stamps[-1] + interval + k * 0.1 for k in range(20)]
    assert tracked(stamps).lost == lost


def test_diagnostics_report_the_losses_and_the_camera_rate_beside_the_input_rate():
    reporter = DiagnosticsReporter()
    stamps = camera_stamps(10.0, 50, jitter=0.0)
    kept = [s for i, s in enumerate(stamps) if i % 5 != 3]  # one in five lost: 10 of them
    for stamp in kept:
        reporter.frame_received(stamp, stamp)
    counters = FrameCounters(received=len(kept), processed=len(kept) - 3, dropped=3)
    status = reporter.report(stamps[-1] + 0.05, counters, None)
    values = dict(status.values)
    assert values["frames lost before the node (estimated)"] == "10"
    assert values["camera frames not segmented (estimated)"] == "13"
    assert values["camera rate from stamps (Hz)"] == "10.00"
    assert float(values["input rate (Hz)"]) == pytest.approx(8.0, rel=0.1)
    assert "~10 camera frames lost before the node since the last report" in status.message
    again = reporter.report(stamps[-1] + 1.0, counters, None)
    assert "lost before the node" not in again.message  # none since that report
    assert dict(again.values)["frames lost before the node (estimated)"] == "10"


def test_diagnostics_without_stamps_say_not_estimated():
    reporter = DiagnosticsReporter()
    reporter.frame_received(1.0)
    values = dict(reporter.report(2.0, FrameCounters(received=1), None).values)
    assert values["frames lost before the node (estimated)"] == "n/a"
    assert values["camera rate from stamps (Hz)"] == "n/a"
