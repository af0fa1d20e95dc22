"""The tools' shared error policy (swiftseg_ros/cli.py): one line on stderr, exit 2."""

import pytest

from swiftseg_ros import cli
from swiftseg_ros.ros import params

# each tool with a flag of its own that takes a value (given here without one)
TOOLS = [(cli.models, "--json"), (cli.bench, "--json"), (cli.replay, "--json"),
         (cli.demo, "--out"), (cli.synth, "--out"), (cli.train, "--out"),
         (cli.evaluate, "--json"), (cli.export, "--json"), (cli.import_weights, "--json"),
         (params.main, "--json")]


@pytest.mark.parametrize("tool, value_flag", TOOLS,
                         ids=[f"{tool.__module__}.{tool.__name__}" for tool, _ in TOOLS])
@pytest.mark.parametrize("bad", ["unknown", "no-value"])
def test_a_bad_flag_is_one_line_that_points_to_help(tool, value_flag, bad, capsys):
    argv = ["--no-such-flag"] if bad == "unknown" else [value_flag]
    with pytest.raises(SystemExit) as stopped:
        tool(argv)
    assert stopped.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert ": error: " in err and "--help)" in err
    assert argv[0] in err or "arguments are required" in err  # argparse checks these first
