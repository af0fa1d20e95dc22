"""The tools' shared error policy (swiftseg_ros/cli.py): one line on stderr, exit 2."""

import pytest

from swiftseg_ros import cli
from swiftseg_ros.ros import params

TOOLS = [cli.models, cli.bench, cli.replay, cli.demo, cli.synth, cli.train, cli.evaluate,
         cli.export, cli.import_weights, params.main]


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: f"{tool.__module__}.{tool.__name__}")
@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--json"]], ids=["unknown", "no-value"])
def test_a_bad_flag_is_one_line_that_points_to_help(tool, argv, capsys):
    if argv == ["--json"] and tool in (cli.demo, cli.synth, cli.train):
        argv = ["--out"]  # these tools write no JSON; --out takes a value in all three
    with pytest.raises(SystemExit) as stopped:
        tool(argv)
    assert stopped.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert ": error: " in err and "--help)" in err
    assert argv[0] in err or "arguments are required" in err  # argparse checks these first
