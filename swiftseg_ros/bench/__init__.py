"""`swiftseg-bench` (cli.py) and its runners (runners.py): the engine timed end to end
against the bare network, the paper's naive loop and by-hand runtimes. A tool that drives
the engine from outside, not part of the inference runtime."""
