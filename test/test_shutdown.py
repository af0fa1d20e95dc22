"""SIGINT and SIGTERM end the node in order: the worker stops (its frame published) before
the context shuts down. Real signals to this process, a real LatestFrameWorker, and a
stand-in for the ROS context that fails a publish after shutdown as rcl does."""

import os
import signal
import threading
import time

import pytest

from swiftseg_ros.ros.frames import LatestFrameWorker
from swiftseg_ros.ros.shutdown import StopRequest, run_until_stopped


class Context:
    """What matters of an rclpy context here: publishing fails once it is shut down."""

    def __init__(self):
        self.valid = True
        self.published = 0

    def publish(self) -> None:
        if not self.valid:
            raise RuntimeError("RCLError: context is invalid")
        self.published += 1

    def shutdown(self) -> None:
        self.valid = False


def slow_frame(context: Context, seconds: float = 0.02):
    def process(_frame) -> None:
        time.sleep(seconds)  # a frame in progress when the signal comes
        context.publish()
    return process


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_frames_flow_stops_the_worker_before_the_context(signal_number):
    context = Context()
    failures = []
    worker = LatestFrameWorker(slow_frame(context), on_error=lambda _f, exc: failures.append(exc))
    worker.start()
    order = []
    spins = 0

    def spin_once() -> None:  # the camera: a frame every spin, the signal after a while
        nonlocal spins
        spins += 1
        worker.offer(spins)
        if spins == 20:
            os.kill(os.getpid(), signal_number)
        time.sleep(0.005)

    with StopRequest() as stop:
        run_until_stopped(spin_once, lambda: context.valid, stop, close_steps=(
            lambda: order.append(("worker stopped", worker.stop(timeout=5.0))),
            lambda: order.append("node destroyed"),
            lambda: (context.shutdown(), order.append("context shut down")),
        ))
    assert stop.signal_number == signal_number
    assert order == [("worker stopped", True), "node destroyed", "context shut down"]
    counters = worker.counters()
    assert failures == [] and counters.failed == 0
    assert counters.processed == context.published > 0
    assert counters.pending == counters.in_flight == 0 and counters.balanced()


def test_previous_signal_handlers_come_back_after_the_stop_request():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest():
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_second_signal_does_not_interrupt_the_orderly_close():
    # ros2 launch sends its own SIGINT after the terminal's: both arrive while closing
    order = []

    def close_worker() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        order.append("worker stopped")

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        run_until_stopped(lambda: None, lambda: True, stop,
                          close_steps=(close_worker, lambda: order.append("context")))
    assert order == ["worker stopped", "context"]


def test_every_close_step_runs_and_the_first_failure_is_raised():
    ran = []

    def fail(message):
        def step():
            ran.append(message)
            raise RuntimeError(message)
        return step

    stop = StopRequest()
    stop.signal_number = signal.SIGTERM
    with pytest.raises(RuntimeError, match="engine release failed"):
        run_until_stopped(lambda: None, lambda: True, stop, close_steps=(
            fail("engine release failed"), fail("destroy failed"), lambda: ran.append("shutdown")))
    assert ran == ["engine release failed", "destroy failed", "shutdown"]


def test_a_context_shut_down_elsewhere_ends_the_loop_and_still_closes():
    class ExternalShutdown(Exception):
        pass

    def spin_once():
        raise ExternalShutdown

    closed = []
    with StopRequest() as stop:
        run_until_stopped(spin_once, lambda: True, stop, close_steps=(lambda: closed.append(1),),
                          ended_by=(ExternalShutdown,))
    assert closed == [1] and not stop.requested


def test_the_loop_spins_until_the_signal():
    spins = []
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
    with StopRequest() as stop:
        timer.start()
        run_until_stopped(lambda: (spins.append(1), time.sleep(0.005)), lambda: True, stop, ())
    timer.join()
    assert stop.signal_number == signal.SIGTERM and len(spins) >= 2
