"""The latest-frame slot and worker, driven by events (no sleeps decide an outcome), and the
pure simulation of the same policy."""

import queue
import threading
import time

import pytest

from swiftseg_ros.ros.conversions import ImageRejected
from swiftseg_ros.ros.frames import (
    FrameCounters,
    LatestFrameWorker,
    simulate_latest_frame,
)

WAIT_S = 10.0  # only a bound against hanging on a bug; no test waits this long when it passes


class GatedProcess:
    """A process callback that reports each frame it starts and holds it until released."""

    def __init__(self, fail_on=(), reject_on=()):
        self.started: queue.Queue = queue.Queue()
        self.gates: dict = {}
        self.finished: list = []
        self.fail_on = set(fail_on)
        self.reject_on = set(reject_on)
        self._lock = threading.Lock()

    def gate(self, frame) -> threading.Event:
        with self._lock:
            return self.gates.setdefault(frame, threading.Event())

    def __call__(self, frame):
        self.started.put(frame)
        assert self.gate(frame).wait(WAIT_S), f"frame {frame} was never released"
        self.finished.append(frame)
        if frame in self.fail_on:
            raise RuntimeError(f"boom on {frame}")
        if frame in self.reject_on:
            raise ImageRejected(f"bad frame {frame}")

    def next_started(self):
        return self.started.get(timeout=WAIT_S)

    def release(self, frame):
        self.gate(frame).set()


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def settled(worker: LatestFrameWorker, *, busy: bool):
    """Wait until the worker is running a frame with an empty slot (busy) or is idle."""
    wait_until(lambda: worker.counters().pending == 0 and worker.counters().in_flight == busy,
               "the worker settled")


@pytest.fixture
def gated():
    process = GatedProcess()
    worker = LatestFrameWorker(process)
    worker.start()
    yield process, worker
    for event in list(process.gates.values()):
        event.set()
    worker.stop(WAIT_S)


def test_offer_returns_while_the_worker_is_busy(gated):
    process, worker = gated
    worker.offer(0)
    assert process.next_started() == 0
    offering = threading.Thread(target=lambda: [worker.offer(i) for i in range(1, 50)])
    offering.start()
    offering.join(WAIT_S)
    assert not offering.is_alive()


def test_newer_frame_replaces_the_unprocessed_one_and_it_counts_as_dropped(gated):
    process, worker = gated
    worker.offer(0)
    assert process.next_started() == 0
    for frame in (1, 2, 3):
        worker.offer(frame)
    process.release(0)
    assert process.next_started() == 3
    process.release(3)
    settled(worker, busy=False)
    counters = worker.counters()
    assert process.finished == [0, 3]
    assert (counters.received, counters.processed, counters.dropped) == (4, 2, 2)


def test_counters_add_up_at_every_step(gated):
    process, worker = gated
    snapshots = [worker.counters()]
    worker.offer(0)
    assert process.next_started() == 0
    snapshots.append(worker.counters())
    worker.offer(1)
    snapshots.append(worker.counters())
    worker.offer(2)
    snapshots.append(worker.counters())
    worker.record_rejected("unsupported encoding '32FC1'")
    snapshots.append(worker.counters())
    process.release(0)
    assert process.next_started() == 2
    snapshots.append(worker.counters())
    process.release(2)
    settled(worker, busy=False)
    snapshots.append(worker.counters())
    assert all(s.balanced() for s in snapshots)
    assert snapshots[3] == FrameCounters(received=3, dropped=1, pending=1, in_flight=1)
    final = snapshots[-1]
    assert (final.received, final.processed, final.dropped, final.rejected) == (4, 2, 1, 1)


def test_failing_frame_is_counted_reported_and_the_worker_goes_on():
    process = GatedProcess(fail_on={0})
    errors = []
    worker = LatestFrameWorker(process, on_error=lambda frame, exc: errors.append((frame, exc)))
    worker.start()
    try:
        worker.offer(0)
        process.release(0)
        settled(worker, busy=False)
        worker.offer(1)
        process.release(1)
        settled(worker, busy=False)
    finally:
        worker.stop(WAIT_S)
    counters = worker.counters()
    assert (counters.failed, counters.processed) == (1, 1)
    assert counters.last_failure == "RuntimeError: boom on 0"
    assert [(frame, str(exc)) for frame, exc in errors] == [(0, "boom on 0")]


def test_rejected_frame_is_counted_as_rejected_not_as_a_failure():
    process = GatedProcess(reject_on={0})
    errors = []
    worker = LatestFrameWorker(process, on_error=lambda frame, exc: errors.append(frame))
    worker.start()
    try:
        worker.offer(0)
        process.release(0)
        settled(worker, busy=False)
    finally:
        worker.stop(WAIT_S)
    counters = worker.counters()
    assert (counters.rejected, counters.failed, errors) == (1, 0, [])
    assert counters.last_rejection == "bad frame 0"


def test_an_error_callback_that_raises_does_not_stop_the_worker():
    process = GatedProcess(fail_on={0})

    def broken_callback(frame, exc):
        raise ValueError("the error callback itself is broken")

    worker = LatestFrameWorker(process, on_error=broken_callback)
    worker.start()
    try:
        worker.offer(0)
        process.release(0)
        settled(worker, busy=False)
        worker.offer(1)
        process.release(1)
        settled(worker, busy=False)
    finally:
        worker.stop(WAIT_S)
    assert worker.counters().processed == 1


def test_stop_waits_for_the_frame_in_progress_and_drops_the_pending_one(gated):
    process, worker = gated
    worker.offer(0)
    assert process.next_started() == 0
    worker.offer(1)
    finished_when_stop_returned = []

    def stop():
        assert worker.stop(WAIT_S)
        finished_when_stop_returned.append(list(process.finished))

    stopping = threading.Thread(target=stop)
    stopping.start()
    wait_until(lambda: not worker.running, "stop() began")
    process.release(0)
    stopping.join(WAIT_S)
    assert finished_when_stop_returned == [[0]]
    counters = worker.counters()
    assert (counters.processed, counters.dropped, counters.pending, counters.in_flight) == \
        (1, 1, 0, 0)
    assert process.started.empty()


def test_offer_after_stop_is_refused_and_counted_as_dropped(gated):
    _, worker = gated
    worker.stop(WAIT_S)
    assert worker.offer(7) is False
    counters = worker.counters()
    assert (counters.received, counters.dropped) == (1, 1) and counters.balanced()


def test_worker_processes_again_after_a_restart(gated):
    process, worker = gated
    worker.stop(WAIT_S)
    worker.start()
    worker.offer(5)
    assert process.next_started() == 5
    process.release(5)
    settled(worker, busy=False)
    assert worker.counters().processed == 1


def test_stop_from_the_process_callback_is_refused_as_a_failure():
    errors = []
    holder = {}
    worker = LatestFrameWorker(lambda frame: holder["worker"].stop(),
                               on_error=lambda frame, exc: errors.append(exc))
    holder["worker"] = worker
    worker.start()
    try:
        worker.offer(0)
        wait_until(lambda: worker.counters().failed == 1, "the frame failed")
    finally:
        worker.stop(WAIT_S)
    assert isinstance(errors[0], RuntimeError) and "own worker thread" in str(errors[0])


# ------------------------------------------------------------------------- simulation


def test_fast_worker_processes_every_frame_on_arrival():
    outcomes = simulate_latest_frame([0.0, 1.0, 2.0], [0.5, 0.5, 0.5])
    assert [(o.processed, o.start, o.finish) for o in outcomes] == \
        [(True, 0.0, 0.5), (True, 1.0, 1.5), (True, 2.0, 2.5)]


def test_slow_worker_takes_the_newest_frame_and_drops_the_rest():
    outcomes = simulate_latest_frame([0, 1, 2, 3, 4, 5], [2.5] * 6)
    assert [o.index for o in outcomes if o.processed] == [0, 2, 5]
    assert [(o.start, o.finish) for o in outcomes if o.processed] == \
        [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5)]
    assert [o.index for o in outcomes if not o.processed] == [1, 3, 4]


def test_worker_free_at_an_arrival_takes_the_arriving_frame():
    # frame 0 finishes at 2.0, exactly when frame 2 arrives: 2 is newer than 1, so 1 drops
    outcomes = simulate_latest_frame([0.0, 1.0, 2.0], [2.0, 1.0, 1.0])
    assert [o.processed for o in outcomes] == [True, False, True]
    assert outcomes[2].start == 2.0


def test_durations_are_asked_only_for_processed_frames_in_order():
    asked = []

    def duration(index):
        asked.append(index)
        return 2.5

    outcomes = simulate_latest_frame([0, 1, 2, 3, 4, 5], duration)
    assert asked == [o.index for o in outcomes if o.processed] == [0, 2, 5]


def test_arrival_times_that_go_back_are_an_error():
    with pytest.raises(ValueError, match="must not decrease"):
        simulate_latest_frame([0.0, 2.0, 1.0], [0.1] * 3)


def test_one_duration_per_frame_is_required():
    with pytest.raises(ValueError, match="one duration per frame"):
        simulate_latest_frame([0.0, 1.0], [0.1])


def run_worker_on_script(arrivals, durations):
    """Drive the real worker through a virtual-time script: frames are offered at their
    arrival and released when their duration has passed (an arrival at the same instant
    as a finish is offered first, the simulation's tie rule). Returns {frame: (start,
    finish)} of the processed frames, as the worker chose them."""
    process = GatedProcess()
    worker = LatestFrameWorker(process)
    worker.start()
    runs = {}
    current = None  # (frame, start)

    def finish_current():
        nonlocal current
        frame, start = current
        finish = start + durations[frame]
        runs[frame] = (start, finish)
        had_pending = worker.counters().pending == 1
        process.release(frame)
        current = (process.next_started(), finish) if had_pending else None
        settled(worker, busy=current is not None)

    try:
        for frame, arrival in enumerate(arrivals):
            while current is not None and current[1] + durations[current[0]] < arrival:
                finish_current()
            idle = current is None
            worker.offer(frame)
            if idle:
                current = (process.next_started(), arrival)
                settled(worker, busy=True)
        while current is not None:
            finish_current()
    finally:
        worker.stop(WAIT_S)
    return runs, worker.counters()


def test_thread_and_simulation_process_the_same_frames_at_the_same_times():
    arrivals = [0.0, 1.0, 1.5, 2.0, 4.0, 4.5, 5.0, 9.0, 9.5, 12.0, 12.1, 12.2]
    durations = [2.0, 1.0, 1.0, 3.0, 1.0, 0.5, 3.0, 0.2, 2.0, 0.1, 1.0, 1.0]
    outcomes = simulate_latest_frame(arrivals, durations)
    runs, counters = run_worker_on_script(arrivals, durations)
    assert runs == {o.index: (o.start, o.finish) for o in outcomes if o.processed}
    assert counters.dropped == sum(not o.processed for o in outcomes)
    assert counters.balanced() and counters.received == len(arrivals)
