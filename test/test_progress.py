"""Progress display: whole lines when stderr is not a terminal, and `--quiet` on every
long-running tool."""

import io
import time

import pytest

from swiftseg_ros.progress import LineProgress, progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_progress_is_whole_lines_without_carriage_returns():
    stream = io.StringIO()
    for _ in progress(range(3), desc="replay", unit="frame", stream=stream):
        pass
    print("next message", file=stream)
    text = stream.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [text.splitlines()[0], "next message"]
    assert text.startswith("replay: 3/3 frame (100 %)")


def test_line_progress_prints_at_most_one_line_per_interval():
    stream = io.StringIO()
    with LineProgress(total=100, desc="eval", unit="frame", stream=stream,
                      interval_s=0.05) as bar:
        for _ in range(100):
            bar.update(1)
        time.sleep(0.06)
        bar.update(0)
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 2 and lines[-1].startswith("eval: 100/100 frame")


def test_on_a_terminal_progress_is_a_bar_that_clears_its_line():
    stream = Terminal()
    for _ in progress(range(2), desc="bench", unit="it", stream=stream):
        pass
    assert "\r" in stream.getvalue()  # redrawn in place, then cleared (leave=False)


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    for _ in progress(range(2), desc="x", enabled=False, stream=stream):
        pass
    assert stream.getvalue() == ""


@pytest.mark.parametrize("module, argv", [
    ("swiftseg_ros.replay.cli", ["bag", "--out", "o"]),
    ("swiftseg_ros.replay.demo", []),
    ("swiftseg_ros.trainer.train", ["--out", "o"]),
    ("swiftseg_ros.trainer.evaluate", ["--data", "d"]),
    ("swiftseg_ros.synthetic.frames", ["--out", "o"]),
    ("swiftseg_ros.bench.cli", []),
    ("swiftseg_ros.nets.summary", []),
])
def test_every_long_running_tool_takes_quiet(module, argv):
    import importlib

    parser = importlib.import_module(module).build_parser()
    assert parser.parse_args([*argv, "--quiet"]).quiet is True
