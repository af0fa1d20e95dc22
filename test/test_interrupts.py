"""Ctrl-C and SIGTERM survive a C callback that swallows their exception (interrupts.py)."""

import ctypes
import signal
import sys

import pytest

from swiftseg_ros import interrupts
from swiftseg_ros.errors import Terminated

HANDLERS = {signal.SIGINT: interrupts.on_sigint, signal.SIGTERM: interrupts.on_sigterm}


def signal_inside_a_ctypes_callback(number: int) -> None:
    """Run the installed handler of a signal inside a ctypes callback, as Python runs it
    when the signal comes while llvmlite's callbacks run (numba compiling): its exception
    is handed to sys.unraisablehook there, not raised. The handler is called, not the
    signal sent: a real SIGTERM inside a pytest-xdist worker once ended the worker."""
    handler = signal.getsignal(number)
    assert handler is HANDLERS[number], "interrupts.install() has not run"
    ctypes.CFUNCTYPE(None)(lambda: handler(number, None))()


@pytest.fixture
def forwarded(monkeypatch):
    """interrupts installed; what reaches the unraisable hook that was there before."""
    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    previous = interrupts.install()
    yield reports
    interrupts.restore(previous)


@pytest.mark.parametrize("number, raised", [(signal.SIGTERM, Terminated),
                                            (signal.SIGINT, KeyboardInterrupt)])
def test_a_swallowed_signal_is_raised_again_by_the_next_check(forwarded, number, raised):
    signal_inside_a_ctypes_callback(number)  # returns: the exception was dropped there
    assert forwarded == []  # quietly: no "Exception ignored ..." traceback
    with pytest.raises(raised):
        interrupts.raise_pending()
    with pytest.raises(raised):  # and by every later check of this command
        interrupts.raise_pending()


def test_other_errors_in_callbacks_still_reach_the_previous_hook(forwarded):
    def broken():
        raise ValueError("not a signal")

    ctypes.CFUNCTYPE(None)(broken)()
    assert [type(report.exc_value) for report in forwarded] == [ValueError]
    interrupts.raise_pending()  # nothing pending: no exception


def test_sigterm_after_ctrl_c_is_what_is_raised_again(forwarded):
    for number in (signal.SIGINT, signal.SIGTERM):
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(number)(number, None)
    with pytest.raises(Terminated):
        interrupts.raise_pending()


def test_restore_puts_back_what_was_there_and_forgets_the_signal():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    hook = sys.unraisablehook
    previous = interrupts.install()
    with pytest.raises(KeyboardInterrupt):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    interrupts.restore(previous)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert sys.unraisablehook is hook
    interrupts.raise_pending()  # nothing pending: no exception
