"""The camera's frame rate and the frames lost before the node, estimated from the header
stamps of the frames that arrived.

The node counts only what reaches its subscription. Frames the camera published that never
arrived (lost by a best-effort transport, or overwritten in the subscription's depth-1 queue
while the executor was busy) leave gaps in the sequence of stamps. So:

- The camera period: first roughly, the median of the short intervals between consecutive
  received stamps among the last `window` intervals ("short": at most 1.5 times their 20th
  percentile; with losses the intervals bunch at 1, 2, 3... periods and the shortest bunch
  is the one of consecutive frames; this holds while about one interval in five is
  between two consecutive frames). Then exactly: the time those intervals span divided by
  the camera periods they hold (each interval rounded to whole periods). Late frames and
  jitter cancel out in that sum, so the period is right to a fraction of a percent, which
  an outage of 100 periods needs to be counted to the frame.
- Each interval holds round(interval / period) periods, so round(interval / period) - 1
  frames were lost in it. A frame published late (a busy publisher, up to almost a period
  late) makes one long interval (+1) and one short one (-1): nothing lost in sum. The
  total is never reported below zero.
- A gap of up to `PAUSE_S` seconds is an outage: every frame in it counts as lost (a
  transport losing 4-5 s of large images is an outage, not a pause). A longer gap is a
  pause of the camera (or of a bag) and counts nothing; so does a stamp earlier than the
  previous one (a bag played in a loop, a camera restarted), which also restarts the
  period estimate. The totals carry on; equal stamps count as no interval.
- Late start: `subscribed(now)` tells when the node began to listen (activate, on the
  node's clock). The frames the camera stamped between then and the first stamp received,
  if that came at most `PAUSE_S` later, were lost too (a 720p stream losing its first
  seconds). Deactivate and activate start over this way: frames published while the node
  did not listen are not losses.

What stamps cannot tell: a camera that loses frames in a fixed pattern (every second one,
always) looks like a camera at half the rate; a camera paused for less than `PAUSE_S`
looks like an outage, and one started less than `PAUSE_S` after the node like a late
start (both count as losses); a camera stamping with a clock other than the node's makes
the late start meaningless (out of range, it counts nothing). `ros2 topic hz` at the
camera is the reference.
"""

from __future__ import annotations

from collections import deque

import numpy as np

# A gap in the stamps longer than this (seconds) is a pause, not lost frames.
PAUSE_S = 10.0
# Intervals needed before the period is estimated (and waiting intervals are judged).
MIN_INTERVALS = 8


class CameraStampTracker:
    """Feed it the header stamp (seconds) of every received frame, in arrival order."""

    def __init__(self, window: int = 200):
        self._intervals: deque[float] = deque(maxlen=window)
        self._unjudged: list[float] = []
        self._last: float | None = None
        self._total = 0  # frames lost since the start; a late frame's -1 may come first
        self._listening_since: float | None = None
        self._lead: float | None = None  # first stamp - subscription, until judged
        self._late_start = 0  # of the lost frames, those stamped before the first arrival

    @property
    def lost(self) -> int:
        """Frames lost before the node since the start (those judged so far)."""
        return max(self._total, 0)

    @property
    def late_start_lost(self) -> int:
        """Of `lost`, the frames stamped between the subscription and the first arrival: a
        camera started after the node, or discovery still under way."""
        return self._late_start

    def subscribed(self, now_s: float) -> None:
        """The node (re)started listening at `now_s`, on the clock of the stamps."""
        self._last = None
        self._listening_since = float(now_s)

    def add(self, stamp_s: float) -> None:
        stamp = float(stamp_s)
        last, self._last = self._last, stamp
        if last is None:
            if self._listening_since is not None:
                lead = stamp - self._listening_since
                if 0.0 < lead <= PAUSE_S:
                    self._lead = lead
                self._listening_since = None
            return
        interval = stamp - last
        if interval < 0:
            self._intervals.clear()
            self._unjudged.clear()
            self._lead = None
            return
        if interval == 0 or interval > PAUSE_S:
            return
        self._intervals.append(interval)
        self._unjudged.append(interval)
        period = self.period_s()
        if period is not None:
            self._total += sum(frames_lost_in(gap, period) for gap in self._unjudged)
            self._unjudged.clear()
            if self._lead is not None:  # the frames stamped between subscription and it
                lead_frames = int(self._lead / period)
                self._total += lead_frames
                self._late_start += lead_frames
                self._lead = None

    def period_s(self) -> float | None:
        """The camera period seen in the stamps, or None until there are enough of them."""
        if len(self._intervals) < MIN_INTERVALS:
            return None
        intervals = np.fromiter(self._intervals, dtype=np.float64)
        short = intervals[intervals <= 1.5 * np.percentile(intervals, 20)]
        rough = float(np.median(short))
        periods = np.round(intervals / rough)
        return float(intervals.sum() / periods.sum()) if periods.sum() > 0 else rough

    def camera_rate_hz(self) -> float:
        """1 / the camera period, 0.0 while it is not known."""
        period = self.period_s()
        return 1.0 / period if period else 0.0


def frames_lost_in(interval: float, period: float) -> int:
    """Frames lost in one interval between two received stamps of a camera with `period`:
    -1 for an interval shorter than half a period (the one after a late frame)."""
    return int(round(interval / period)) - 1
