"""Several cameras in front of one worker: the per-camera latest-frame slots, the round
robin, batches, accounting, the worker thread, the pure simulation, and camera names."""

import threading
import time

import pytest

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.ros.cameras import camera_topics, check_camera_name, check_camera_names
from swiftseg_ros.ros.conversions import ImageRejected
from swiftseg_ros.ros.scheduler import (
    CameraSlots,
    MultiCameraWorker,
    group_by_size,
    simulate_cameras,
)

# ------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["front", "down", "arm/left", "_cam0", "Cam_2"])
def test_relative_ros_names_are_camera_names(name):
    assert check_camera_name(name) == name


@pytest.mark.parametrize("name", ["", "0front", "/front", "~/front", "front/", "a//b",
                                  "front cam", "front-cam", "{ns}/front", "a__b"])
def test_names_that_are_not_relative_ros_names_are_refused(name):
    with pytest.raises(ConfigError, match="parameter 'cameras'"):
        check_camera_name(name)


def test_duplicates_and_too_many_cameras_are_refused():
    with pytest.raises(ConfigError, match="twice"):
        check_camera_names(["front", "down", "front"])
    with pytest.raises(ConfigError, match="17 cameras, more than max_cameras \\(16\\)"):
        check_camera_names([f"cam{i}" for i in range(17)])
    assert len(check_camera_names([f"cam{i}" for i in range(16)])) == 16


def test_topics_are_relative_names_under_the_camera():
    raw = camera_topics("front")
    assert (raw.image, raw.camera_info) == ("front/image", "front/camera_info")
    assert raw.outputs == {"label": "~/front/label", "color": "~/front/color",
                           "confidence": "~/front/confidence", "overlay": "~/front/overlay"}
    assert raw.camera_info_out == "~/front/camera_info"
    assert camera_topics("arm/left", compressed=True).image == "arm/left/image/compressed"


# ------------------------------------------------------------------------ slots


def test_a_newer_frame_replaces_the_waiting_one_of_its_camera_only():
    slots = CameraSlots(["a", "b"])
    assert not slots.offer("a", 1)
    assert not slots.offer("b", 10)
    assert slots.offer("a", 2)  # replaces 1
    assert slots.take() == [("a", 2), ("b", 10)]
    assert slots.counters("a").dropped == 1
    assert slots.counters("b").dropped == 0


def test_take_serves_round_robin_from_the_camera_after_the_last_served():
    slots = CameraSlots(["a", "b", "c"])
    for camera in "abc":
        slots.offer(camera, camera)
    assert slots.take(max_batch=2) == [("a", "a"), ("b", "b")]
    slots.offer("a", "a2")
    # c was left out: it comes first now, then a (b has nothing waiting)
    assert slots.take(max_batch=2) == [("c", "c"), ("a", "a2")]


def test_counters_balance_through_every_outcome():
    slots = CameraSlots(["a"])
    slots.offer("a", 1)
    slots.offer("a", 2)
    slots.record_rejected("a", "bad encoding")
    slots.refuse("a")
    [(camera, _)] = slots.take()
    assert slots.counters("a").in_flight == 1
    assert slots.counters("a").balanced()
    slots.finish(camera, ImageRejected("garbage"), (ImageRejected,))
    slots.offer("a", 3)
    slots.take()
    slots.finish("a", RuntimeError("boom"), (ImageRejected,))
    slots.offer("a", 4)
    slots.take()
    slots.finish("a")
    slots.offer("a", 5)
    assert slots.drop_waiting() == 1
    counters = slots.counters("a")
    assert (counters.received, counters.processed, counters.dropped, counters.rejected,
            counters.failed) == (7, 1, 3, 2, 1)
    assert counters.balanced() and counters.pending == counters.in_flight == 0
    assert counters.last_failure == "RuntimeError: boom"


def test_group_by_size_keeps_first_seen_order():
    items = [("a", (2, 2)), ("b", (4, 4)), ("c", (2, 2))]
    assert group_by_size(items, lambda item: item[1]) == [[items[0], items[2]], [items[1]]]


# --------------------------------------------------------------------- simulation


def periodic(camera: str, hz: float, seconds: float, phase: float = 0.0):
    period = 1.0 / hz
    count = int(seconds * hz)
    return [(phase + i * period, camera) for i in range(count)]


def merged(*streams):
    return sorted((item for stream in streams for item in stream), key=lambda x: x[0])


def published_per_camera(outcomes):
    counts = {}
    for outcome in outcomes:
        counts.setdefault(outcome.camera, 0)
        counts[outcome.camera] += outcome.processed
    return counts


def test_frames_waiting_together_run_as_one_batch():
    arrivals = [(0.0, "a"), (0.0, "b"), (0.0, "c")]
    batches = []
    outcomes = simulate_cameras(arrivals, lambda batch: batches.append(batch) or 0.01)
    assert batches == [[("a", 0), ("b", 1), ("c", 2)]]
    assert all(o.processed and o.batch_size == 3 for o in outcomes)


def test_no_frame_is_held_back_for_another_camera_without_a_batch_wait():
    arrivals = [(0.0, "a"), (0.005, "b")]
    outcomes = simulate_cameras(arrivals, lambda batch: 0.001)
    assert [(o.start, o.batch_size) for o in outcomes] == [(0.0, 1), (0.005, 1)]


def test_a_batch_wait_gathers_the_other_cameras_until_all_have_a_frame():
    arrivals = [(0.0, "a"), (0.005, "b"), (0.5, "a")]
    outcomes = simulate_cameras(arrivals, lambda batch: 0.001, batch_wait_s=0.01)
    assert (outcomes[0].start, outcomes[0].batch_size) == (0.005, 2)
    # alone later: it waits the whole 10 ms for b, which never comes
    assert outcomes[2].start == pytest.approx(0.51)


def test_overloaded_cameras_get_their_fair_share_within_ten_percent():
    # one frame per 50 ms at most (max_batch 1): 20 frames/s for a 30, a 15 and a 5 Hz
    # camera; max-min fair shares: 5 Hz gets all of its 5, the others 7.5 each
    arrivals = merged(periodic("fast", 30, 20), periodic("mid", 15, 20, 0.001),
                      periodic("slow", 5, 20, 0.002))
    outcomes = simulate_cameras(arrivals, lambda batch: 0.05, ["fast", "mid", "slow"],
                                max_batch=1)
    counts = published_per_camera(outcomes)
    fair = {"fast": 7.5 * 20, "mid": 7.5 * 20, "slow": 5 * 20}
    for camera, share in fair.items():
        assert abs(counts[camera] - share) <= 0.1 * share, (camera, counts)


def test_batched_cameras_each_publish_at_the_batch_rate_under_overload():
    # a batch takes 40 ms whatever its size: every camera is in (nearly) every batch
    arrivals = merged(periodic("a", 30, 10), periodic("b", 60, 10, 0.001),
                      periodic("c", 10, 10, 0.002))
    outcomes = simulate_cameras(arrivals, lambda batch: 0.04)
    counts = published_per_camera(outcomes)
    assert counts["c"] >= 0.9 * 100  # the slow camera loses nothing
    assert abs(counts["a"] - counts["b"]) <= 0.1 * counts["b"]


def test_simulation_drops_only_frames_replaced_in_their_own_slot():
    arrivals = [(0.0, "a"), (0.01, "a"), (0.02, "a"), (0.02, "b")]
    outcomes = simulate_cameras(arrivals, lambda batch: 0.05)
    assert [o.processed for o in outcomes] == [True, False, True, True]


def test_simulation_refuses_decreasing_times():
    with pytest.raises(ValueError, match="must not decrease"):
        simulate_cameras([(1.0, "a"), (0.5, "b")], lambda batch: 0.0)


# ------------------------------------------------------------------------ thread


def run_worker(process, cameras=("a", "b", "c"), **options):
    worker = MultiCameraWorker(cameras, process, **options)
    worker.start()
    return worker


def wait_until(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def test_worker_runs_waiting_frames_of_several_cameras_as_one_batch():
    release = threading.Event()
    batches = []

    def process(batch):
        batches.append(list(batch))
        release.wait(5)
        return [None] * len(batch)

    worker = run_worker(process)
    worker.offer("a", 1)
    wait_until(lambda: batches)
    for camera, frame in (("a", 2), ("b", 3), ("c", 4)):
        worker.offer(camera, frame)
    release.set()
    wait_until(lambda: len(batches) == 2)
    assert worker.stop(5)
    # round robin: after a was served, b comes first
    assert batches == [[("a", 1)], [("b", 3), ("c", 4), ("a", 2)]]
    assert all(c.processed + c.dropped == c.received for c in worker.counters().values())


def test_a_bad_frame_fails_or_is_rejected_for_its_camera_only():
    def process(batch):
        return [ImageRejected("garbage") if camera == "b" else
                RuntimeError("device lost") if camera == "c" else None
                for camera, _ in batch]

    errors = []
    worker = run_worker(process, on_error=lambda camera, frame, exc: errors.append(camera))
    for camera in "abc":
        worker.offer(camera, 0)
    wait_until(lambda: sum(c.in_flight + c.pending for c in worker.counters().values()) == 0)
    assert worker.stop(5)
    counters = worker.counters()
    assert (counters["a"].processed, counters["b"].rejected, counters["c"].failed) == (1, 1, 1)
    assert counters["b"].last_rejection == "garbage"
    assert errors == ["c"]


def test_a_process_that_raises_fails_its_batch_and_the_worker_goes_on():
    calls = []

    def process(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("first batch")
        return [None] * len(batch)

    worker = run_worker(process, on_error=lambda *args: None)
    worker.offer("a", 1)
    wait_until(lambda: worker.counters()["a"].failed == 1)
    worker.offer("a", 2)
    wait_until(lambda: worker.counters()["a"].processed == 1)
    assert worker.stop(5)


def test_stop_counts_waiting_frames_as_dropped_and_balances_every_camera():
    gate = threading.Event()
    worker = run_worker(lambda batch: gate.wait(5) and [None] * len(batch))
    worker.offer("a", 1)
    wait_until(lambda: worker.counters()["a"].in_flight == 1)
    worker.offer("a", 2)
    worker.offer("b", 3)
    gate.set()
    assert worker.stop(5)
    counters = worker.counters()
    assert all(c.balanced() and c.pending == c.in_flight == 0 for c in counters.values())
    assert worker.offer("c", 4) is False
    assert worker.counters()["c"].dropped == 1


def test_a_silent_camera_does_not_delay_the_others_without_a_batch_wait():
    started = []
    worker = run_worker(lambda batch: started.append(time.monotonic()) or [None] * len(batch))
    offered = time.monotonic()
    worker.offer("a", 1)  # b and c never send
    wait_until(lambda: started)
    assert started[0] - offered < 0.2
    assert worker.stop(5)


def test_a_batch_wait_is_bounded_when_a_camera_is_silent():
    started = []
    worker = run_worker(lambda batch: started.append((time.monotonic(), len(batch)))
                        or [None] * len(batch), batch_wait_s=0.05)
    offered = time.monotonic()
    worker.offer("a", 1)
    worker.offer("b", 1)
    wait_until(lambda: started)
    waited, size = started[0][0] - offered, started[0][1]
    assert size == 2
    assert 0.04 <= waited < 0.5
    assert worker.stop(5)


def test_a_slow_camera_is_served_in_turn_by_a_thread_under_overload():
    # one frame per batch; the fast camera always has a new frame waiting when the worker
    # becomes free, the slow one only now and then: round robin still serves the slow one
    # next, every time
    gate = threading.Semaphore(0)
    served = []

    def process(batch):
        gate.acquire(timeout=5)
        served.extend(camera for camera, _ in batch)
        return [None] * len(batch)

    worker = run_worker(process, cameras=("fast", "slow"), max_batch=1)
    for i in range(20):
        worker.offer("fast", i)
        worker.offer("slow", i)
        for _ in range(2):
            done = len(served)
            wait_until(lambda: sum(c.in_flight for c in worker.counters().values()) == 1)
            worker.offer("fast", i + 0.5)  # a newer fast frame waits before the next turn
            gate.release()
            wait_until(lambda done=done: len(served) == done + 1)
    gate.release()
    assert worker.stop(5)
    counters = worker.counters()
    assert counters["slow"].processed == 20 and counters["slow"].dropped == 0
    assert served.count("slow") == 20
