"""Console entry points. Each tool's argument parsing and work live in its own module's
`main(argv)`; this module gives them one error policy and the shared flags.

A `SwiftsegError` (or an OSError such as a missing file) becomes one line on stderr
and exit status 2; Ctrl-C exits 130 and SIGTERM 143, both through KeyboardInterrupt (a
SIGTERM raises `Terminated`; both are also recorded for the frame loops, interrupts.py),
so a tool cleans up alike for both. Any other exception is
a bug and keeps its traceback. Text a tool prints that holds a path with undecodable
bytes comes out with \\xNN escapes instead of failing.

Sizes given on the command line are read by `parse_size_flag`: one wording and one
range for every tool.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import threading
import traceback
from pathlib import Path

from swiftseg_ros import interrupts
from swiftseg_ros.errors import ConfigError, SwiftsegError, Terminated

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
# The sides a tool accepts: the networks' smallest input (their stride), and a bound that
# keeps a typo from allocating gigabytes (an 8192x8192 RGB float frame is 0.8 GB).
MIN_SIDE = 32
MAX_SIDE = 8192


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
                                 "warm-up and keeps the fastest (default: "
                                 + ("the parameter file's, auto" if backend is True
                                    else backend) + ")")
        parser.add_argument("--retune", action="store_true",
                            help="measure the engine's choices afresh instead of taking "
                                 "those cached for this setup")
    if json_out:
        parser.add_argument("--json", metavar="FILE", help="write machine-readable results here")


def write_json(path: str | Path | None, data) -> None:
    """`data` as JSON in `path` (nothing when it is None), written atomically."""
    from swiftseg_ros import files  # OpenCV and NumPy: not for every importer of this module

    files.write_json(path, data)


def parse_size_flag(text: str, flag: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (width, height), each side MIN_SIDE..MAX_SIDE, or ConfigError."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*", str(text))
    sides = (int(match.group(1)), int(match.group(2))) if match else None
    if sides is None or not all(MIN_SIDE <= side <= MAX_SIDE for side in sides):
        raise ConfigError(f"{flag} {text!r}: expected WIDTHxHEIGHT with each side from "
                          f"{MIN_SIDE} to {MAX_SIDE} pixels, such as 512x256")
    return sides


def check_count(value: int, flag: str, low: int, high: int) -> int:
    """An integer flag within low..high, or ConfigError naming the flag and the range."""
    if not low <= value <= high:
        raise ConfigError(f"{flag} {value}: expected {low} to {high}")
    return value


def _prog() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "swiftseg"


def fail(message: str) -> int:
    """Print one line on stderr and return the error exit status."""
    # a path's undecodable bytes (surrogate escapes) shown as \xNN, as the shell shows them
    text = " ".join(str(message).split()).encode("utf-8", "surrogateescape")
    print(f"{_prog()}: error: {text.decode('utf-8', 'backslashreplace')}", file=sys.stderr)
    return EXIT_USAGE


def check_network(name: str | None, flag: str = "--network") -> str | None:
    """A network name from swiftseg_ros.nets (None passes: the checkpoint decides)."""
    if name is None:
        return None
    from swiftseg_ros.nets import NETWORKS

    if name not in NETWORKS:
        raise ConfigError(f"{flag} {name!r}: not a network; available: {', '.join(NETWORKS)}")
    return name


def check_device(value: str, flag: str = "--device", *, allow_auto: bool = False) -> str:
    """A --device value that this machine can run (cpu, cuda, cuda:N, and auto where the
    tool takes it), checked before any work; ConfigError naming the flag otherwise."""
    text = str(value).strip().lower()
    if allow_auto and text == "auto":
        return text
    if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", text):
        allowed = "cpu, cuda, cuda:N" + (" or auto" if allow_auto else "")
        raise ConfigError(f"{flag} {value!r}: expected {allowed}")
    if text == "cpu":
        return text
    import torch

    if not torch.cuda.is_available():
        why = ("this PyTorch is a CPU-only build" if torch.version.cuda is None
               else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)")
        raise ConfigError(f"{flag} {text}: {why}; use {flag} cpu")
    count = torch.cuda.device_count()
    if ":" in text and int(text.split(":")[1]) >= count:
        raise ConfigError(f"{flag} {text}: only {count} CUDA device(s) are visible "
                          f"(cuda:0 to cuda:{count - 1})")
    return text


def _run(module: str, argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    main_thread = threading.current_thread() is threading.main_thread()
    # Ctrl-C and SIGTERM raise, and are recorded for the loops that check (interrupts.py)
    previous = interrupts.install() if main_thread else None
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
        terminated = isinstance(exc, Terminated)
        print(f"{_prog()}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except MemoryError as exc:
        _release_frames(exc)
        return fail("out of memory; try a smaller size, fewer frames or a smaller batch")
    except BaseException as exc:  # a bug: the traceback still prints, without the locals
        _release_frames(exc)
        raise
    finally:
        if previous is not None:
            interrupts.restore(previous)


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
    return _run("swiftseg_ros.synthetic.frames", argv)


def train(argv=None) -> int:
    return _run("swiftseg_ros.trainer.train", argv)


def evaluate(argv=None) -> int:
    return _run("swiftseg_ros.trainer.evaluate", argv)


def export(argv=None) -> int:
    return _run("swiftseg_ros.trainer.export", argv)


def import_weights(argv=None) -> int:
    return _run("swiftseg_ros.trainer.importers", argv)


def soak(argv=None) -> int:
    return _run("swiftseg_ros.soak.cli", argv)
