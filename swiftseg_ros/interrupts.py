"""Ctrl-C and SIGTERM that a C callback cannot swallow.

The command-line tools stop on Ctrl-C (KeyboardInterrupt) and SIGTERM (`Terminated`, a
KeyboardInterrupt) raised by their signal handlers (cli.py). Python raises a handler's
exception in whatever Python code runs when the signal is handled; when that code is a
ctypes callback, ctypes prints "Exception ignored on calling ctypes callback function"
and drops it. llvmlite calls such a callback while numba compiles a kernel, which the
engine does while it prepares (its compiled candidates), so a signal in those seconds was
lost and the tool ran to the end (seen: a replay given SIGTERM while preparing exited 0).

So the handlers also record the signal here, and the tools' frame loops call
`raise_pending()` between frames: it raises the signal's exception again. A recorded
signal stays recorded until `clear()` (the end of the command), so every later check
stops too: a signal means stop, however many loops the command still has. The dropped
exception's "Exception ignored ..." traceback is not printed (it is not lost).
"""

from __future__ import annotations

import signal
import sys
from typing import NamedTuple

from swiftseg_ros.errors import Terminated

_pending: type[KeyboardInterrupt] | None = None


def on_sigint(signum, frame) -> None:
    """The SIGINT handler: record, then raise KeyboardInterrupt (as Python's own does)."""
    _record(KeyboardInterrupt)


def on_sigterm(signum, frame) -> None:
    """The SIGTERM handler: record, then raise Terminated."""
    _record(Terminated)


def _record(kind: type[KeyboardInterrupt]) -> None:
    global _pending
    if _pending is None or kind is Terminated:  # SIGTERM after Ctrl-C: exit 143
        _pending = kind
    raise kind()


def raise_pending() -> None:
    """Raise the exception of a signal that came since `clear()`, if one did."""
    if _pending is not None:
        raise _pending()


def clear() -> None:
    global _pending
    _pending = None


class Previous(NamedTuple):
    """What `install` replaced: the signal handlers by number, and sys.unraisablehook."""

    handlers: dict
    unraisablehook: object


def install() -> Previous:
    """Put both handlers in place (main thread only), and a sys.unraisablehook that keeps
    quiet about the recorded ones; what was there before, for `restore`."""
    clear()
    handlers = {number: signal.signal(number, handler)
                for number, handler in ((signal.SIGINT, on_sigint),
                                        (signal.SIGTERM, on_sigterm))}
    hook = sys.unraisablehook

    def quiet_about_recorded_signals(report) -> None:
        if not (_pending is not None and isinstance(report.exc_value, KeyboardInterrupt)):
            hook(report)

    sys.unraisablehook = quiet_about_recorded_signals
    return Previous(handlers, hook)


def restore(previous: Previous) -> None:
    sys.unraisablehook = previous.unraisablehook
    for number, handler in previous.handlers.items():
        signal.signal(number, handler)
    clear()
