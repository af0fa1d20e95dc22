"""Console entry points. Each tool's argument parsing and work live in its own module's
`main(argv)`; this module gives them one error policy and the shared flags.

A `SwiftsegError` (or an OSError such as a missing file) becomes one line on stderr
and exit status 2; Ctrl-C exits 130. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

from swiftseg_ros.errors import SwiftsegError

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the tools' error policy: a bad flag is one line on stderr (what is
    wrong and where the help is), not the usage block followed by the error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_flags(parser: argparse.ArgumentParser, *, weights=True, network=True,
                     device=True, precision=True, backend=False, json_out=True) -> None:
    """The flags every tool spells the same way (DESIGN.md, CLI contract)."""
    if weights:
        parser.add_argument("--weights", help="checkpoint file (.pt); relative paths are "
                            "also looked up in the package's models/ folder")
    if network:
        parser.add_argument("--network", help="network name (see swiftseg-models); must "
                            "match the checkpoint's when both are given")
    if device:
        parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    if precision:
        parser.add_argument("--precision", default="fp32",
                            choices=["fp32", "fp16", "bf16", "auto"],
                            help="inference precision; auto times fp32 and the device's "
                                 "native low precision and keeps the faster (default fp32)")
    if backend:
        parser.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "openvino"],
                            default=None if backend is True else backend,
                            help="what runs the network; auto times every installed one at "
                                 "warm-up and keeps the fastest (default: %(default)s)")
        parser.add_argument("--retune", action="store_true",
                            help="measure the engine's choices afresh instead of taking "
                                 "those cached for this setup")
    if json_out:
        parser.add_argument("--json", metavar="FILE", help="write machine-readable results here")


def write_json(path: str | Path | None, data) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def fail(message: str) -> int:
    """Print one line on stderr and return the error exit status."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "swiftseg"
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run(module: str, argv=None) -> int:
    try:
        main = importlib.import_module(module).main
        return int(main(argv) or 0)
    except SwiftsegError as exc:
        _release_frames(exc)
        return fail(_worker_message(str(exc)))
    except OSError as exc:  # a missing, unwritable or unreadable file: the user's to fix
        _release_frames(exc)
        return fail(str(exc))
    except KeyboardInterrupt as exc:
        _release_frames(exc)
        print("interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # a bug: the traceback still prints, without the locals
        _release_frames(exc)
        raise


def _release_frames(exc: BaseException | None) -> None:
    """Free the locals of the frames an exception's traceback holds.

    A training run's DataLoader iterator can sit there in a reference cycle; freed now,
    it shuts its workers down. Left to the garbage collector at exit, its queues are
    closed first and the workers, which ignore SIGTERM (trainer/loop.py), never exit:
    multiprocessing's exit handler would wait for them forever.
    """
    while exc is not None:
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _worker_message(text: str) -> str:
    """An error torch re-raised from a DataLoader worker ("Caught DatasetError in
    DataLoader worker process 0." and the worker's traceback): its own message only."""
    lines = text.strip().splitlines()
    if len(lines) < 2 or "in DataLoader worker process" not in lines[0]:
        return text
    return lines[-1].split(": ", 1)[-1]


def models(argv=None) -> int:
    return _run("swiftseg_ros.nets.summary", argv)


def bench(argv=None) -> int:
    return _run("swiftseg_ros.bench.cli", argv)


def replay(argv=None) -> int:
    return _run("swiftseg_ros.replay.cli", argv)


def demo(argv=None) -> int:
    return _run("swiftseg_ros.replay.demo", argv)


def synth(argv=None) -> int:
    return _run("swiftseg_ros.trainer.synth", argv)


def train(argv=None) -> int:
    return _run("swiftseg_ros.trainer.train", argv)


def evaluate(argv=None) -> int:
    return _run("swiftseg_ros.trainer.evaluate", argv)


def export(argv=None) -> int:
    return _run("swiftseg_ros.trainer.export", argv)


def import_weights(argv=None) -> int:
    return _run("swiftseg_ros.trainer.importers", argv)
