"""Several cameras in front of one worker: a latest-frame slot per camera, served round
robin in batches, as a policy (`CameraSlots`), a thread (`MultiCameraWorker`) and a pure
simulation of arrival times and batch durations (`simulate_cameras`).

One model serves every camera, so frames of several cameras that wait when the worker
becomes free go through the network together (one forward per input size). The rules:

- Each camera has its own one-frame slot, as the single-camera node has (`frames.py`): a
  frame still waiting when a newer one of the same camera arrives is dropped (counted
  for that camera). A fast camera therefore never queues, and never takes a slow camera's
  slot.
- When the worker becomes free it takes every waiting frame at once (up to `max_batch`),
  starting with the camera after the last one served: round robin. With `max_batch`
  smaller than the number of waiting cameras, those left out keep their frame and are
  the first taken next time, so under overload every camera is served in turn, whatever
  its rate: a 30 Hz camera cannot starve a 5 Hz one.
- No frame is held back for another camera: the worker starts as soon as one frame waits,
  unless `batch_wait_s` (the `batch_wait_ms` parameter, default 0) allows it to wait that
  long for the other cameras' frames (it starts as soon as every camera has one).
- A frame that fails or is rejected counts against its own camera; the other frames of
  the batch are published as usual.

Counters per camera (`FrameCounters`, one consistent snapshot under the worker's lock):

    received == processed + dropped + rejected + failed + pending + in_flight

`processed` counts published frames; `pending` the frame in the camera's slot (0 or 1),
`in_flight` its frame in the batch being run. After `stop()` both are 0 (a frame left in
a slot is counted as dropped).

`simulate_cameras` drives the same `CameraSlots` with virtual time, for replay's realtime
mode and for tests; its tie rule is the thread's: a worker that becomes free at time t
takes the frames that arrived at or before t.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from swiftseg_ros.ros.conversions import ImageRejected
from swiftseg_ros.ros.frames import FrameCounters, FrameSlot, SlotWorkerThread


class CameraSlots:
    """The per-camera latest-frame slots, the round robin and the counters.

    Not thread-safe on its own: `MultiCameraWorker` calls it under its lock, the simulation
    from one thread.
    """

    def __init__(self, cameras: Sequence[str]):
        if not cameras:
            raise ValueError("CameraSlots needs at least one camera")
        self.cameras = tuple(cameras)
        self._states = {camera: FrameSlot() for camera in self.cameras}
        if len(self._states) != len(self.cameras):
            raise ValueError(f"camera names repeat: {', '.join(self.cameras)}")
        self._next = 0  # index of the camera served first by the next take()

    def _state(self, camera: str) -> FrameSlot:
        try:
            return self._states[camera]
        except KeyError:
            raise KeyError(f"unknown camera {camera!r}; cameras: "
                           f"{', '.join(self.cameras)}") from None

    def offer(self, camera: str, frame: Any) -> bool:
        """Put `frame` in `camera`'s slot; True if it replaced (dropped) a waiting frame."""
        return self._state(camera).offer(frame)

    def refuse(self, camera: str) -> None:
        """Count a frame received while nothing takes frames (the worker is stopped)."""
        self._state(camera).refuse()

    def record_rejected(self, camera: str, reason: str) -> None:
        """Count a frame refused before it reached the slot."""
        self._state(camera).record_rejected(reason)

    def waiting(self) -> int:
        """How many cameras have a frame waiting."""
        return sum(state.waiting for state in self._states.values())

    def take(self, max_batch: int | None = None) -> list[tuple[str, Any]]:
        """Every waiting frame (at most `max_batch`), round robin from the camera after the
        last one served; each becomes in flight until `finish()`."""
        taken: list[tuple[str, Any]] = []
        count = len(self.cameras)
        last = None
        for offset in range(count):
            if max_batch is not None and len(taken) >= max_batch:
                break
            index = (self._next + offset) % count
            state = self._states[self.cameras[index]]
            if not state.waiting:
                continue
            taken.append((self.cameras[index], state.take()))
            last = index
        if last is not None:
            self._next = (last + 1) % count
        return taken

    def finish(self, camera: str, error: BaseException | None = None,
               reject_types: tuple[type[BaseException], ...] = ()) -> str:
        """Count the outcome of a frame taken from `camera`: processed (no error), rejected
        (an error of `reject_types`) or failed; returns which."""
        return self._state(camera).finish(error, reject_types)

    def drop_waiting(self) -> int:
        """Empty every slot, counting the frames as dropped; how many there were."""
        return sum(state.drop_waiting() for state in self._states.values())

    def counters(self, camera: str) -> FrameCounters:
        return self._state(camera).counters()

    def all_counters(self) -> dict[str, FrameCounters]:
        return {camera: self.counters(camera) for camera in self.cameras}


# process_batch(items) -> one outcome per item: None (published) or the exception that
# rejected or failed that frame
BatchProcess = Callable[[list[tuple[str, Any]]], Sequence[BaseException | None]]


class MultiCameraWorker(SlotWorkerThread):
    """One worker thread fed by `CameraSlots`.

    `process_batch(items)` runs on the worker thread with the taken `(camera, frame)`
    pairs and returns one outcome per pair (None, or the exception for that frame); if it
    raises, every frame of the batch counts as failed. `on_error(camera, frame, exc)`, if
    given, is called on the worker thread for each failed frame (not for rejected ones).
    """

    def __init__(
        self,
        cameras: Sequence[str],
        process_batch: BatchProcess,
        *,
        max_batch: int | None = None,
        batch_wait_s: float = 0.0,
        on_error: Callable[[str, Any, BaseException], None] | None = None,
        reject_types: tuple[type[BaseException], ...] = (ImageRejected,),
        name: str = "swiftseg-cameras",
    ):
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch is {max_batch}, expected >= 1 or None")
        super().__init__(name, on_error)
        self._slots = CameraSlots(cameras)
        self._process_batch = process_batch
        self._max_batch = max_batch
        self._batch_wait_s = max(0.0, float(batch_wait_s))
        self._reject_types = reject_types

    @property
    def cameras(self) -> tuple[str, ...]:
        return self._slots.cameras

    def set_batch_wait(self, seconds: float) -> None:
        """How long a free worker may wait for the other cameras' frames (from the next
        batch on)."""
        with self._cond:
            self._batch_wait_s = max(0.0, float(seconds))

    def offer(self, camera: str, frame: Any) -> bool:
        """Put `frame` in its camera's slot without waiting; False if the worker is not
        running (the frame is then counted as received and dropped)."""
        with self._cond:
            if not self._running:
                self._slots.refuse(camera)
                return False
            self._slots.offer(camera, frame)
            self._cond.notify()
            return True

    def record_rejected(self, camera: str, reason: str) -> None:
        with self._cond:
            self._slots.record_rejected(camera, reason)

    def counters(self) -> dict[str, FrameCounters]:
        """Every camera's counters, one consistent snapshot."""
        with self._cond:
            return self._slots.all_counters()

    def _drop_waiting(self) -> None:
        self._slots.drop_waiting()

    def _loop(self, generation: int) -> None:
        while True:
            with self._cond:
                while self._current(generation) and not self._slots.waiting():
                    self._cond.wait()
                if not self._current(generation):
                    return
                self._wait_for_other_cameras(generation)
                if not self._current(generation):
                    return
                batch = self._slots.take(self._max_batch)
            if not batch:
                continue
            try:
                outcomes = list(self._process_batch(batch))
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"process_batch returned {len(outcomes)} outcomes for "
                                       f"{len(batch)} frames")
            except Exception as exc:  # a failed batch must not end the worker
                outcomes = [exc] * len(batch)
            failed = []
            with self._cond:
                for (camera, frame), error in zip(batch, outcomes, strict=True):
                    if self._slots.finish(camera, error, self._reject_types) == "failed":
                        failed.append((camera, frame, error))
            for camera, frame, error in failed:
                self._report(error, camera, frame, where=f"camera {camera}: ")

    def _wait_for_other_cameras(self, generation: int) -> None:
        """With a batch wait: wait (lock held by the caller, released while waiting) until
        every camera has a frame, the wait is over, or the worker stops."""
        wait = self._batch_wait_s
        if wait <= 0:
            return
        deadline = time.monotonic() + wait
        limit = len(self._slots.cameras)
        if self._max_batch is not None:
            limit = min(limit, self._max_batch)
        while self._current(generation) and self._slots.waiting() < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)


def group_by_size(items: Sequence[Any], size_of: Callable[[Any], Hashable]) -> list[list[Any]]:
    """`items` in groups of equal `size_of(item)`, groups in order of their first item and
    items in their order: the batches one forward pass each can take."""
    groups: dict[Hashable, list[Any]] = {}
    for item in items:
        groups.setdefault(size_of(item), []).append(item)
    return list(groups.values())


# ------------------------------------------------------------------ pure simulation


@dataclass(frozen=True)
class CameraFrameOutcome:
    """What the multi-camera policy does with one frame: processed in a batch of
    `batch_size` from `start` to `finish`, or dropped (`start`, `finish` None)."""

    index: int
    camera: str
    arrival: float
    processed: bool
    start: float | None = None
    finish: float | None = None
    batch_size: int = 0


def simulate_cameras(
    arrivals: Sequence[tuple[float, str]],
    run_batch: Callable[[list[tuple[str, int]]], float],
    cameras: Sequence[str] | None = None,
    *,
    max_batch: int | None = None,
    batch_wait_s: float = 0.0,
) -> list[CameraFrameOutcome]:
    """The policy over `arrivals` ((time in seconds, camera) in non-decreasing time).

    `run_batch(items)` is called with the `(camera, frame index)` pairs of each batch, in
    the order the policy runs them, and returns the batch's duration in seconds: replay
    passes a function that runs the engine on those frames and returns the measured time,
    so dropped frames are never computed. `cameras` fixes the round-robin order (default:
    the order of first arrival).
    """
    if cameras is None:
        cameras = list(dict.fromkeys(camera for _, camera in arrivals))
    if not cameras:
        return []
    slots = CameraSlots(cameras)
    count = len(arrivals)
    outcomes: list[CameraFrameOutcome | None] = [None] * count
    previous = float("-inf")
    for index, (arrival, _) in enumerate(arrivals):
        if float(arrival) < previous:
            raise ValueError(f"arrival time of frame {index} ({arrival}) is before frame "
                             f"{index - 1}'s ({previous}): arrival times must not decrease")
        previous = float(arrival)

    def arrive(index: int) -> None:
        arrival, camera = arrivals[index]
        replaced = slots.counters(camera).pending
        if replaced:
            dropped = waiting_index[camera]
            outcomes[dropped] = CameraFrameOutcome(dropped, camera, float(arrivals[dropped][0]),
                                                   False)
        slots.offer(camera, index)
        waiting_index[camera] = index

    waiting_index: dict[str, int] = {}
    limit = len(slots.cameras) if max_batch is None else min(max_batch, len(slots.cameras))
    free_at = float("-inf")
    next_arrival = 0
    while True:
        while next_arrival < count and float(arrivals[next_arrival][0]) <= free_at:
            arrive(next_arrival)
            next_arrival += 1
        if not slots.waiting():
            if next_arrival == count:
                break
            free_at = float(arrivals[next_arrival][0])
            continue
        start = free_at
        if batch_wait_s > 0 and slots.waiting() < limit:
            deadline = start + batch_wait_s
            start = deadline
            while next_arrival < count and float(arrivals[next_arrival][0]) <= deadline:
                arrive(next_arrival)
                next_arrival += 1
                if slots.waiting() >= limit:
                    start = float(arrivals[next_arrival - 1][0])
                    break
        batch = slots.take(max_batch)
        duration = float(run_batch(list(batch)))
        if duration < 0:
            raise ValueError(f"batch duration {duration}, expected >= 0")
        finish = start + duration
        for camera, index in batch:
            outcomes[index] = CameraFrameOutcome(index, camera, float(arrivals[index][0]), True,
                                                 start, finish, len(batch))
            slots.finish(camera)
        free_at = finish
    return outcomes  # type: ignore[return-value]  # every index was filled above
