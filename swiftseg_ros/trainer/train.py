"""`swiftseg-train`: train a network from a YAML recipe into a checkpoint the node loads.

    swiftseg-train --config config/train/fastscnn_cityscapes.yaml --data ~/cityscapes \\
        --out runs/fastscnn [--set optim.lr=0.01 ...] [--epochs N] [--device cuda]
    swiftseg-train --out runs/fastscnn --resume          # continue an interrupted run
    torchrun --standalone --nproc_per_node 4 -m swiftseg_ros.trainer.train --config ...

Writes out/last.pt and out/best.pt (resumable training checkpoints), out/final.pt (the
exported weights), out/metrics.csv and out/curves.png. Ctrl-C or SIGTERM finishes the
current step, saves out/last.pt and exits with 130 or 143; `--resume` continues from it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from swiftseg_ros.cli import ArgumentParser, check_count, check_device
from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.files import check_output_folder
from swiftseg_ros.trainer import config as recipes
from swiftseg_ros.trainer.loop import FINAL, LAST, train

EXIT_SIGNAL_BASE = 128


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipe keys (--set KEY=VALUE, VALUE in YAML):\n" + recipes.describe())
    parser.add_argument("--config", metavar="FILE",
                        help="recipe YAML (config/train/*.yaml); with --resume and no "
                             "--config, the interrupted run's recipe")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="folder for checkpoints, metrics.csv and curves.png")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (sets data.root)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        dest="overrides", help="override a recipe value, e.g. optim.lr=0.01 "
                        "or augment.crop=[448,448] (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from DIR/last.pt at the step it stopped")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (sets train.device)")
    parser.add_argument("--epochs", type=int, help="epochs to train (sets train.epochs)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def resolve_config(args: argparse.Namespace) -> dict:
    """The recipe of this run: file (or the resumed run's), then --set, then the flags."""
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.root={_yaml_string(args.data)}")
    if args.device is not None:
        overrides.append(f"train.device={_yaml_string(args.device)}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.config is None:
        if not args.resume:
            raise ConfigError("give a recipe with --config FILE (see config/train/), "
                                      "or --resume to continue the run in --out")
        return _resumed_config(Path(args.out) / LAST, overrides)
    return recipes.load_recipe(args.config, overrides)


def _resumed_config(path: Path, overrides: list[str]) -> dict:
    from swiftseg_ros.checkpoint import load_checkpoint

    if not path.exists():
        raise CheckpointError(f"{path}: nothing to resume (no training checkpoint in "
                              f"{path.parent}); start without --resume")
    _, _, training = load_checkpoint(path)
    if not training or not isinstance(training.get("config"), dict):
        raise CheckpointError(f"{path}: holds no training state to resume from")
    config = recipes.defaults()
    recipes.merge_into(config, training["config"], str(path))
    recipes.apply_overrides(config, overrides)
    recipes.validate(config)
    return config


def _yaml_string(text: str) -> str:
    # Quoted so that a path or device name is never read as a number or a bool.
    return "'" + str(text).replace("'", "''") + "'"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_output_folder(args.out, "--out")
    if args.config is not None and Path(args.config).is_dir():
        raise ConfigError(f"--config {args.config} is a folder; give the recipe file, e.g. "
                          "config/train/fastscnn_cityscapes.yaml")
    if args.device is not None:
        check_device(args.device, allow_auto=True)
    if args.epochs is not None:
        check_count(args.epochs, "--epochs", 1, 100_000)
    config = resolve_config(args)
    command = shlex.join(["swiftseg-train", *(sys.argv[1:] if argv is None else argv)])
    result = train(config, args.out, resume=args.resume, command=command,
                   recipe=args.config, progress=not args.quiet)
    if result.interrupted_by is not None:
        if os.environ.get("RANK", "0") == "0":  # rank 0 speaks for a torchrun job
            print(interrupted_message(result, Path(args.out) / LAST), file=sys.stderr)
        return EXIT_SIGNAL_BASE + int(result.interrupted_by)
    best = "" if result.best_miou is None else f", best val mIoU {100 * result.best_miou:.2f}%"
    if FINAL in result.files:
        print(f"done: {result.epochs_done} epochs{best}; exported {result.files[FINAL]}",
              file=sys.stderr)
    return 0


def interrupted_message(result, last: Path) -> str:
    """Where the run stopped, in the words the resume message will use."""
    return (f"interrupted at {result.position()} (global step {result.step}); {last} "
            "resumes there: continue with --resume")


if __name__ == "__main__":  # torchrun ... -m swiftseg_ros.trainer.train
    from swiftseg_ros.cli import train as cli_train

    sys.exit(cli_train())
