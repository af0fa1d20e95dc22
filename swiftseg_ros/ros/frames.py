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


class FrameSlot:
    """One latest-frame slot and the counts of the frames through it: the policy of the
    module docstring without the thread. Not thread-safe on its own: `LatestFrameWorker`
    and `scheduler.CameraSlots` (one per camera) call it under their lock."""

    __slots__ = ("_frame", "received", "processed", "dropped", "rejected", "failed",
                 "in_flight", "last_rejection", "last_failure")

    def __init__(self):
        self._frame: Any = _EMPTY
        self.received = self.processed = self.dropped = 0
        self.rejected = self.failed = self.in_flight = 0
        self.last_rejection = self.last_failure = ""

    @property
    def waiting(self) -> bool:
        """Whether a frame waits in the slot."""
        return self._frame is not _EMPTY

    def offer(self, frame: Any) -> bool:
        """Put `frame` in the slot; True if it replaced (dropped) a waiting frame."""
        self.received += 1
        replaced = self.waiting
        if replaced:
            self.dropped += 1
        self._frame = frame
        return replaced

    def refuse(self) -> None:
        """Count a frame received while nothing takes frames (the worker is stopped)."""
        self.received += 1
        self.dropped += 1

    def record_rejected(self, reason: str) -> None:
        """Count a frame refused before it reached the slot."""
        self.received += 1
        self.rejected += 1
        self.last_rejection = reason

    def take(self) -> Any:
        """The waiting frame (there must be one), now in flight until `finish()`."""
        frame, self._frame = self._frame, _EMPTY
        self.in_flight += 1
        return frame

    def finish(self, error: BaseException | None = None,
               reject_types: tuple[type[BaseException], ...] = ()) -> str:
        """Count the outcome of a frame taken: processed (no error), rejected (an error of
        `reject_types`) or failed; returns which."""
        self.in_flight -= 1
        if error is None:
            self.processed += 1
            return "processed"
        if isinstance(error, reject_types):
            self.rejected += 1
            self.last_rejection = str(error)
            return "rejected"
        self.failed += 1
        self.last_failure = f"{type(error).__name__}: {error}"
        return "failed"

    def drop_waiting(self) -> bool:
        """Empty the slot, counting a waiting frame as dropped; whether there was one."""
        if not self.waiting:
            return False
        self._frame = _EMPTY
        self.dropped += 1
        return True

    def counters(self) -> FrameCounters:
        return FrameCounters(
            received=self.received, processed=self.processed, dropped=self.dropped,
            rejected=self.rejected, failed=self.failed, pending=int(self.waiting),
            in_flight=self.in_flight, last_rejection=self.last_rejection,
            last_failure=self.last_failure)


class SlotWorkerThread:
    """The thread behind slot workers (`LatestFrameWorker`; `scheduler.MultiCameraWorker`):
    start (again after a stop; counters carry on) and stop (what waits is dropped, the work
    in progress finishes). A subclass holds its slots under `self._cond` and gives
    `_drop_waiting()` and `_loop(generation)`, which runs while `_current(generation)`
    and hands each failed frame to `_report`."""

    def __init__(self, name: str, on_error: Callable[..., None] | None = None):
        self._name = name
        self._on_error = on_error
        self._cond = threading.Condition()
        self._running = False
        self._generation = 0
        self._thread: threading.Thread | None = None

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
            # generation and exits after its work instead of becoming a second worker
            self._generation += 1
            self._thread = threading.Thread(
                target=self._loop, args=(self._generation,), name=self._name, daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking frames, count what is left waiting as dropped and wait for the work
        in progress to finish. Returns False only if `timeout` (seconds) ran out first;
        the worker then still finishes that work and exits on its own."""
        with self._cond:
            thread = self._thread
            if thread is threading.current_thread():
                raise RuntimeError(
                    f"{type(self).__name__}.stop() called from its own worker thread (from "
                    "the process callback): it would wait for itself; stop it from another "
                    "thread"
                )
            self._running = False
            self._drop_waiting()
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

    def _current(self, generation: int) -> bool:
        return self._running and self._generation == generation

    def _drop_waiting(self) -> None:
        raise NotImplementedError

    def _loop(self, generation: int) -> None:
        raise NotImplementedError

    def _report(self, error: BaseException, *frame_args, where: str = "") -> None:
        """A failed frame to the error callback (`on_error(*frame_args, error)`) or, without
        one, to the log; an exception in the callback is logged, the worker goes on."""
        if self._on_error is None:
            _LOG.error("%sprocessing a frame failed: %s: %s", where, type(error).__name__,
                       error)
            return
        try:
            self._on_error(*frame_args, error)
        except Exception:
            _LOG.exception("the error callback of %s raised", self._name)


class LatestFrameWorker(SlotWorkerThread):
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
        super().__init__(name, on_error)
        self._process = process
        self._reject_types = reject_types
        self._slot = FrameSlot()

    def offer(self, frame) -> bool:
        """Put `frame` in the slot without waiting; False if the worker is not running
        (the frame is then counted as received and dropped)."""
        with self._cond:
            if not self._running:
                self._slot.refuse()
                return False
            self._slot.offer(frame)
            self._cond.notify()
            return True

    def has_waiting_frame(self) -> bool:
        """Whether a frame waits in the slot for the worker (a pipelined worker launches
        it before publishing the frame in progress when one does)."""
        with self._cond:
            return self._slot.waiting

    def record_rejected(self, reason: str) -> None:
        """Count a frame refused before it was offered (e.g. decoded in the callback)."""
        with self._cond:
            self._slot.record_rejected(reason)

    def counters(self) -> FrameCounters:
        with self._cond:
            return self._slot.counters()

    def _drop_waiting(self) -> None:
        self._slot.drop_waiting()

    def _loop(self, generation: int) -> None:
        while True:
            with self._cond:
                while self._current(generation) and not self._slot.waiting:
                    self._cond.wait()
                if not self._current(generation):
                    return
                frame = self._slot.take()
            error = None
            try:
                self._process(frame)
            except self._reject_types as exc:
                error = exc
            except Exception as exc:  # a failed frame must not end the worker
                error = exc
            with self._cond:
                outcome = self._slot.finish(error, self._reject_types)
            if outcome == "failed":
                self._report(error, frame)


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
