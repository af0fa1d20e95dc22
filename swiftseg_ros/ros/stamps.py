"""The camera's frame rate and the frames lost before the node, estimated from the header
stamps of the frames that arrived.

The node counts only what reaches its subscription. Frames the camera published that never
arrived (lost by a best-effort transport, or overwritten in the subscription's depth-1 queue
while the executor was busy) leave gaps in the sequence of stamps: at 10 Hz, two received
frames 0.3 s apart mean two frames lost in between. So:

- The camera period is the median of the short intervals between consecutive received
  stamps among the last `window` intervals, "short" meaning at most 1.5 times their 20th
  percentile. With losses the intervals bunch at 1, 2, 3... periods; the shortest bunch is
  the one of consecutive frames. The estimate holds while at least about one interval in
  five is between two consecutive camera frames.
- An interval longer than 1.5 periods counts round(interval / period) - 1 frames lost.
  An interval longer than `PAUSE_PERIODS` periods is a pause of the camera (or a bag
  paused), not a loss, and counts nothing.
- A stamp earlier than the previous one (a bag played in a loop, a camera restarted)
  restarts the period estimate; the totals carry on. Equal stamps count as no interval.

What stamps cannot tell: a camera that loses frames in a fixed pattern (every second one,
always) looks like a camera at half the rate; a camera that stamps with the receive time
of a driver that itself drops frames reports its own rate. `ros2 topic hz` at the camera
is the reference for both.
"""

from __future__ import annotations

from collections import deque

import numpy as np

# Intervals longer than this many periods are a pause, not lost frames.
PAUSE_PERIODS = 25.0
# An interval counts lost frames when it is longer than this many periods.
GAP_PERIODS = 1.5
# Intervals needed before the period is estimated (and waiting intervals are judged).
MIN_INTERVALS = 8


class CameraStampTracker:
    """Feed it the header stamp (seconds) of every received frame, in arrival order."""

    def __init__(self, window: int = 200):
        self._intervals: deque[float] = deque(maxlen=window)
        self._unjudged: list[float] = []
        self._last: float | None = None
        self.lost = 0  # frames lost before the node since the start

    def add(self, stamp_s: float) -> None:
        last, self._last = self._last, float(stamp_s)
        if last is None:
            return
        interval = self._last - last
        if interval < 0:
            self._intervals.clear()
            self._unjudged.clear()
            return
        if interval == 0:
            return
        self._intervals.append(interval)
        self._unjudged.append(interval)
        period = self.period_s()
        if period is not None:
            self.lost += sum(lost_between(gap, period) for gap in self._unjudged)
            self._unjudged.clear()

    def period_s(self) -> float | None:
        """The camera period seen in the stamps, or None until there are enough of them."""
        if len(self._intervals) < MIN_INTERVALS:
            return None
        intervals = np.fromiter(self._intervals, dtype=np.float64)
        short = intervals[intervals <= GAP_PERIODS * np.percentile(intervals, 20)]
        return float(np.median(short))

    def camera_rate_hz(self) -> float:
        """1 / the camera period, 0.0 while it is not known."""
        period = self.period_s()
        return 1.0 / period if period else 0.0


def lost_between(interval: float, period: float) -> int:
    """Frames lost in one interval between two received stamps, for a camera `period`."""
    if interval <= GAP_PERIODS * period or interval > PAUSE_PERIODS * period:
        return 0
    return max(round(interval / period) - 1, 0)
