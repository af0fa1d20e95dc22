"""Measured choices (engine/autotune.py) with a fake clock, so the outcome is exact."""

import pytest

from swiftseg_ros.engine.autotune import Choice, choose, measure


class FakeClock:
    """A clock that candidates advance by their own cost."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def spend(self, seconds):
        def run():
            self.now += seconds
        return run


def test_measure_reports_the_fastest_ms_of_each_candidate():
    clock = FakeClock()
    costs = iter([0.001, 0.009, 0.002, 0.002, 0.003, 0.001])

    def uneven():
        clock.now += next(costs)

    times = measure({"a": uneven, "b": clock.spend(0.004)}, repeats=3, clock=clock)
    # "a" ran with costs 1, 2, 3 ms (round-robin with "b"); its fastest run took 1 ms
    assert times == pytest.approx({"a": 1.0, "b": 4.0})


def test_choose_keeps_the_fastest_candidate_and_its_evidence():
    clock = FakeClock()
    choice = choose("cpu_convs", {"torch": clock.spend(0.003), "onednn": clock.spend(0.001)},
                    repeats=3, clock=clock)
    assert choice.picked == "onednn"
    assert choice.times_ms == pytest.approx({"torch": 3.0, "onednn": 1.0})
    assert choice.describe() == "cpu_convs=onednn (onednn 1.00 ms, torch 3.00 ms)"


def test_a_candidate_that_raises_is_never_picked_and_its_error_is_noted():
    clock = FakeClock()

    def broken():
        raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx512bw")

    choice = choose("cpu_convs", {"onednn": broken, "torch": clock.spend(0.005)},
                    clock=clock)
    assert choice.picked == "torch"
    assert choice.times_ms == {}  # one working candidate: nothing to time
    assert "bf16 path needs" in choice.notes["onednn"]
    assert choice.as_dict()["notes"]["onednn"].startswith("failed: RuntimeError")


def test_no_working_candidate_is_an_error_naming_each_failure():
    def broken():
        raise ValueError("nope")

    with pytest.raises(RuntimeError, match="memory_format: no candidate works here.*nope"):
        choose("memory_format", {"channels_last": broken}, notes={"nchw": "not asked"})


def test_sync_runs_inside_the_timed_span():
    clock = FakeClock()
    times = measure({"async": clock.spend(0.0)}, repeats=2, sync=clock.spend(0.002),
                    clock=clock)
    assert times["async"] == pytest.approx(2.0)


def test_choice_describe_lists_notes_of_left_out_candidates():
    choice = Choice("precision", "fp32", {}, {"bf16": "no native bf16 on this CPU"})
    assert choice.describe() == "precision=fp32 (bf16: no native bf16 on this CPU)"
