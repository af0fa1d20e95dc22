"""Ending the node on SIGINT or SIGTERM in order: the worker first, the ROS context last.

rclpy's own signal handlers (installed by `rclpy.init()` unless told otherwise) shut the
context down inside the signal, while the worker thread may be publishing a frame: that
publish then fails ("RCLError ... context is invalid") and so does logging to /rosout. So
the node's `main()` initialises rclpy without them
(`rclpy.init(signal_handler_options=SignalHandlerOptions.NO)`, Humble and Jazzy) and runs
inside a `StopRequest`, whose handlers only ask the spin loop to end; `run_until_stopped`
then runs the close steps in order: stop the worker (the frame in progress is published
while the context is still valid) and release the engine, destroy the node, shut the
context down.

A repeated signal is not an emergency exit: `ros2 launch` sends SIGINT to the node itself
right after the terminal's Ctrl-C reached the whole process group (0.9 s later when launch
is not on a terminal), so a second SIGINT is the normal case. Launch escalates to SIGTERM
and SIGKILL on its own if the node is slow, so the close must be quick whatever the node
was doing:
- a long step on the main thread (the engine preparing for a new input size inside a
  callback) runs in `StopRequest.interruptible()`: a signal then raises `StopInterrupt`
  there, which ends the spin loop like the stop request itself;
- the worker thread cannot be interrupted; the node waits a bounded time for it;
- `end_process()` ends the process once closed, so a signal arriving during the
  interpreter's teardown (or a worker still preparing) cannot turn a clean close into a
  death by signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable
from types import FrameType

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopInterrupt(BaseException):
    """A stop signal that came while the main thread was in `StopRequest.interruptible()`.

    A BaseException, like KeyboardInterrupt: the node's transition callbacks catch
    Exception (to fail the transition with a line), and this must pass through them."""


class StopRequest:
    """While entered (in the main thread): SIGINT and SIGTERM set `signal_number` instead of
    ending the process; the previous handlers come back on exit."""

    def __init__(self, signals: Iterable[int] = HANDLED_SIGNALS):
        self.signals = tuple(signals)
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}
        self._interruptible = 0

    @contextlib.contextmanager
    def interruptible(self):
        """A block of the main thread that a stop signal cuts short: raises StopInterrupt
        inside it when the signal comes (or at once, if one came already)."""
        if self.requested:
            raise StopInterrupt(self.signal_number)
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def __enter__(self) -> StopRequest:
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_number is None:
            self.signal_number = number
            if self._interruptible:
                raise StopInterrupt(number)


def run_until_stopped(
    spin_once: Callable[[], None],
    keep_going: Callable[[], bool],
    stop: StopRequest,
    close_steps: Iterable[Callable[[], object]],
    ended_by: tuple[type[BaseException], ...] = (),
) -> None:
    """Call `spin_once()` until a stop is requested, `keep_going()` is false or `spin_once`
    raises one of `ended_by` (the context was shut down elsewhere) or StopInterrupt, then
    every close step in order, each one even if an earlier one failed; the first failure is
    raised at the end.
    """
    try:
        while not stop.requested and keep_going():
            try:
                spin_once()
            except (StopInterrupt, *ended_by):
                break
    finally:
        failure: BaseException | None = None
        for step in close_steps:
            try:
                step()
            except BaseException as exc:  # the later steps still run; raised below
                failure = failure or exc
        if failure is not None:
            raise failure


def end_process(code: int = 0) -> None:
    """Flush Python's and C's output buffers (rcutils logs through C stdio) and end the
    process with `code` at once: no interpreter teardown for a late signal to interrupt,
    no wait for a non-daemon thread still busy."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)
    os._exit(code)
