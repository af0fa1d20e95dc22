"""Ctrl-C and SIGTERM survive a C callback that swallows their exception (interrupts.py)."""

import ctypes
import signal
import sys

import pytest

from swiftseg_ros import interrupts
from swiftseg_ros.errors import Terminated


def signal_inside_a_ctypes_callback(number: int) -> None:
    """Deliver a signal while Python code runs inside a ctypes callback, as llvmlite's run
    while numba compiles: the handler's exception is printed and dropped there."""
    ctypes.CFUNCTYPE(None)(lambda: signal.raise_signal(number))()


@pytest.fixture
def handlers():
    previous = interrupts.install()
    yield
    interrupts.restore(previous)


@pytest.mark.parametrize("number, raised", [(signal.SIGTERM, Terminated),
                                            (signal.SIGINT, KeyboardInterrupt)])
def test_a_swallowed_signal_is_raised_again_by_the_next_check(handlers, number, raised,
                                                              monkeypatch):
    ignored = []  # what ctypes hands to sys.unraisablehook instead of raising it
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    signal_inside_a_ctypes_callback(number)  # returns: the exception went nowhere
    # (the garbage collector may report other objects' failures there meanwhile)
    assert raised in [type(report.exc_value) for report in ignored]
    with pytest.raises(raised):
        interrupts.raise_pending()
    with pytest.raises(raised):  # and by every later check of this command
        interrupts.raise_pending()


def test_sigterm_after_ctrl_c_is_what_is_raised_again(handlers):
    for number in (signal.SIGINT, signal.SIGTERM):
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(number)
    with pytest.raises(Terminated):
        interrupts.raise_pending()


def test_restore_puts_the_previous_handlers_back_and_forgets_the_signal():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    previous = interrupts.install()
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    interrupts.restore(previous)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    interrupts.raise_pending()  # nothing pending: no exception
