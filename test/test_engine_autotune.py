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


def test_a_close_call_is_timed_again_and_each_keeps_its_fastest_run():
    clock = FakeClock()
    # "a" is the faster one (1 ms), but a burst of other work hits its first 3 runs
    a_costs = iter([0.0013, 0.0013, 0.0013, 0.001, 0.001, 0.001])
    calls = {"a": 0, "b": 0, "c": 0}

    def counted(name, run):
        def call():
            calls[name] += 1
            run()
        return call

    def a():
        clock.now += next(a_costs)

    choice = choose("device_pass", {"a": counted("a", a),
                                    "b": counted("b", clock.spend(0.0012)),
                                    "c": counted("c", clock.spend(0.003))},
                    repeats=3, warmup=0, clock=clock)
    assert choice.picked == "a"
    assert choice.times_ms == pytest.approx({"a": 1.0, "b": 1.2, "c": 3.0})
    # "c" (2.5x the fastest) is no contender: only "a" and "b" ran again
    assert calls == {"a": 6, "b": 6, "c": 3}


def test_candidates_far_apart_are_timed_once():
    clock = FakeClock()
    calls = []
    choice = choose("cpu_convs", {"fast": clock.spend(0.001),
                                  "slow": lambda: (calls.append(1), clock.spend(0.002)())},
                    repeats=3, warmup=0, clock=clock)
    assert choice.picked == "fast" and len(calls) == 3
