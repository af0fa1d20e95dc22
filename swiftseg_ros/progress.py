"""Progress of long-running tools: a redrawn bar on a terminal, plain lines anywhere else.

tqdm redraws its bar with carriage returns. In a CI log, a file or behind `| tee` that
becomes one ever-growing line, and the next message is glued to its end. When the stream
is not a terminal, `progress` prints one complete line every `LINE_INTERVAL_S` seconds and
a last one when the work ends, so every message starts on a line of its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

LINE_INTERVAL_S = 5.0


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str,
             unit: str = "it", enabled: bool = True, initial: int = 0, leave: bool = False,
             stream=None):
    """A tqdm bar when `stream` (default stderr) is a terminal, else a `LineProgress`;
    nothing is shown when not `enabled`. Both offer iteration, `update`, `set_postfix`,
    `close` and the context-manager protocol."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if _is_terminal(stream):
        # leave=False clears the bar when it ends: the next message starts on a clean line
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                    dynamic_ncols=True, file=stream)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                        stream=stream)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """Progress as whole lines: `desc: n/total unit (pct %), rate unit/s, postfix`."""

    def __init__(self, iterable=None, *, total=None, desc: str, unit: str, initial: int = 0,
                 stream=None, interval_s: float = LINE_INTERVAL_S):
        self.iterable = iterable
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.desc, self.unit, self.stream = desc, unit, stream or sys.stderr
        self.n = self._start_n = initial
        self.interval_s = interval_s
        self._postfix = ""
        self._started = self._last_line = time.monotonic()
        self._printed_n: int | None = None
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._print(now)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._postfix = text

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._printed_n and self.n > self._start_n:
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        self._last_line, self._printed_n = now, self.n
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc}: {count} {self.unit}"
        if self.total:
            text += f" ({100.0 * self.n / self.total:.0f} %)"
        elapsed = now - self._started
        if elapsed > 0 and self.n > self._start_n:
            text += f", {(self.n - self._start_n) / elapsed:.1f} {self.unit}/s"
        if self._postfix:
            text += f", {self._postfix}"
        print(text, file=self.stream, flush=True)


def _length(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None
