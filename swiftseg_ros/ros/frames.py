"""The latest-frame policy: one slot in front of one worker thread, and the same policy
as a pure function of arrival times and processing durations.

A camera faster than the network must not build a queue: latency would grow without
bound and every output would describe the past. So there is one slot. `offer()` puts a
frame in it without waiting; a frame still in the slot when a newer one arrives is
dropped (counted). The worker takes whatever is in the slot when it becomes free, so it
always works on the newest frame.

Counters (`FrameCounters`, one consistent snapshot under one lock):

    received == processed + dropped + rejected + failed + pending + in_flight

`received` counts every `offer()` and `record_rejected()`; `pending` (0 or 1) is the frame
in the slot, `in_flight` the frame the worker is running (0 or 1; transiently 2 only if
a `stop()` timed out and `start()` was called before the old frame finished). A frame whose process
callback raises one of `reject_types` (by default `ImageRejected`: a malformed message,
decoded in the worker so that frames dropped unseen cost nothing) counts as rejected; any
other exception counts as failed and goes to the error callback; the worker keeps
running either way. After `stop()` returns, `pending` and `in_flight` are 0: the frame
being processed has finished and a frame left in the slot is counted as dropped.

`simulate_latest_frame()` is the policy without threads or clocks, for replay's
realtime mode and for tests: given when frames arrive and how long each takes, which are
processed (start, finish) and which are dropped. Its tie rule is the thread's: a worker
that becomes free at time t takes the newest frame that arrived at or before t.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from swiftseg_ros.ros.conversions import ImageRejected

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameCounters:
    """A consistent snapshot of the worker's frame counts (see the module docstring)."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0
    in_flight: int = 0
    last_rejection: str = ""
    last_failure: str = ""

    def balanced(self) -> bool:
        """Whether the invariant holds (it always does for a snapshot of the worker)."""
        return self.received == (
            self.processed + self.dropped + self.rejected + self.failed
            + self.pending + self.in_flight
        )


_EMPTY = object()


class LatestFrameWorker:
    """One worker thread fed by a single latest-frame slot.

    `process(frame)` runs on the worker thread. `on_error(frame, exc)`, if given, is called
    on the worker thread for every failed frame (not for rejected ones); an exception in
    it is logged and does not stop the worker. `reject_types` are the exceptions that
    mean "bad input" rather than "processing failed".
    """

    def __init__(
        self,
        process: Callable[[Any], None],
        *,
        on_error: Callable[[Any, BaseException], None] | None = None,
        reject_types: tuple[type[BaseException], ...] = (ImageRejected,),
        name: str = "swiftseg-worker",
    ):
        self._process = process
        self._on_error = on_error
        self._reject_types = reject_types
        self._name = name
        self._cond = threading.Condition()
        self._slot: Any = _EMPTY
        self._running = False
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._received = 0
        self._processed = 0
        self._dropped = 0
        self._rejected = 0
        self._failed = 0
        self._in_flight = 0
        self._last_rejection = ""
        self._last_failure = ""

    @property
    def running(self) -> bool:
        with self._cond:
            return self._running

    def start(self) -> None:
        """Start the worker thread (again after a `stop()`; counters carry on)."""
        with self._cond:
            if self._running:
                return
            self._running = True
            # a thread from an earlier start() whose stop() timed out sees the new
            # generation and exits after its frame instead of becoming a second worker
            self._generation += 1
            self._thread = threading.Thread(
                target=self._loop, args=(self._generation,), name=self._name, daemon=True
            )
            self._thread.start()

    def offer(self, frame) -> bool:
        """Put `frame` in the slot without waiting; False if the worker is not running
        (the frame is then counted as received and dropped)."""
        with self._cond:
            self._received += 1
            if not self._running:
                self._dropped += 1
                return False
            if self._slot is not _EMPTY:
                self._dropped += 1
            self._slot = frame
            self._cond.notify()
            return True

    def has_waiting_frame(self) -> bool:
        """Whether a frame waits in the slot for the worker (a pipelined worker launches
        it before publishing the frame in progress when one does)."""
        with self._cond:
            return self._slot is not _EMPTY

    def record_rejected(self, reason: str) -> None:
        """Count a frame refused before it was offered (e.g. decoded in the callback)."""
        with self._cond:
            self._received += 1
            self._rejected += 1
            self._last_rejection = reason

    def counters(self) -> FrameCounters:
        with self._cond:
            return FrameCounters(
                received=self._received,
                processed=self._processed,
                dropped=self._dropped,
                rejected=self._rejected,
                failed=self._failed,
                pending=0 if self._slot is _EMPTY else 1,
                in_flight=self._in_flight,
                last_rejection=self._last_rejection,
                last_failure=self._last_failure,
            )

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking frames, count a frame left in the slot as dropped and wait for the
        frame in progress to finish. Returns False only if `timeout` (seconds) ran out
        first; the worker then still finishes that frame and exits on its own."""
        with self._cond:
            thread = self._thread
            if thread is threading.current_thread():
                raise RuntimeError(
                    "LatestFrameWorker.stop() called from its own worker thread (from the "
                    "process callback): it would wait for itself; stop it from another thread"
                )
            self._running = False
            if self._slot is not _EMPTY:
                self._slot = _EMPTY
                self._dropped += 1
            self._cond.notify_all()
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        with self._cond:
            if self._thread is thread:
                self._thread = None
        return True

    def _loop(self, generation: int) -> None:
        while True:
            with self._cond:
                while self._current(generation) and self._slot is _EMPTY:
                    self._cond.wait()
                if not self._current(generation):
                    return
                frame, self._slot = self._slot, _EMPTY
                self._in_flight += 1
            outcome, error = "processed", None
            try:
                self._process(frame)
            except self._reject_types as exc:
                outcome, error = "rejected", exc
            except Exception as exc:  # a failed frame must not end the worker
                outcome, error = "failed", exc
            with self._cond:
                self._in_flight -= 1
                if outcome == "processed":
                    self._processed += 1
                elif outcome == "rejected":
                    self._rejected += 1
                    self._last_rejection = str(error)
                else:
                    self._failed += 1
                    self._last_failure = f"{type(error).__name__}: {error}"
            if outcome == "failed":
                self._report(frame, error)

    def _current(self, generation: int) -> bool:
        return self._running and self._generation == generation

    def _report(self, frame, error: BaseException) -> None:
        if self._on_error is None:
            _LOG.error("processing a frame failed: %s: %s", type(error).__name__, error)
            return
        try:
            self._on_error(frame, error)
        except Exception:
            _LOG.exception("the error callback of %s raised", self._name)


# ------------------------------------------------------------------ pure simulation


@dataclass(frozen=True)
class FrameOutcome:
    """What the latest-frame policy does with one frame: processed from `start` to
    `finish`, or dropped (`start` and `finish` None)."""

    index: int
    arrival: float
    processed: bool
    start: float | None = None
    finish: float | None = None


def simulate_latest_frame(
    arrival_times: Sequence[float],
    processing_times: Sequence[float] | Callable[[int], float],
) -> list[FrameOutcome]:
    """The latest-frame policy over arrival times (non-decreasing, seconds) and durations.

    `processing_times` is either one duration per frame (those of dropped frames are not
    used) or a function called with a frame's index, once, only for frames that get
    processed, in processing order: replay passes a function that runs the engine on
    that frame and returns the measured time, so dropped frames are never computed.
    """
    count = len(arrival_times)
    if callable(processing_times):
        duration_of = processing_times
    else:
        if len(processing_times) != count:
            raise ValueError(
                f"{count} arrival times but {len(processing_times)} processing times: "
                "give one duration per frame"
            )
        duration_of = processing_times.__getitem__

    outcomes: list[FrameOutcome | None] = [None] * count
    free_at = float("-inf")
    pending: int | None = None

    def run(index: int, start: float) -> float:
        duration = float(duration_of(index))
        if duration < 0:
            raise ValueError(f"processing time of frame {index} is {duration}, expected >= 0")
        finish = start + duration
        outcomes[index] = FrameOutcome(index, float(arrival_times[index]), True, start, finish)
        return finish

    previous = float("-inf")
    for index, arrival in enumerate(arrival_times):
        arrival = float(arrival)
        if arrival < previous:
            raise ValueError(
                f"arrival time of frame {index} ({arrival}) is before frame {index - 1}'s "
                f"({previous}): arrival times must not decrease"
            )
        previous = arrival
        # the worker freed before this arrival takes what was waiting; a worker freed at
        # exactly this instant sees this newer frame instead
        if pending is not None and free_at < arrival:
            free_at = run(pending, free_at)
            pending = None
        if pending is None and free_at <= arrival:
            free_at = run(index, arrival)
            continue
        if pending is not None:
            outcomes[pending] = FrameOutcome(pending, float(arrival_times[pending]), False)
        pending = index
    if pending is not None:
        run(pending, free_at)
    return outcomes  # type: ignore[return-value]  # every index was filled above
