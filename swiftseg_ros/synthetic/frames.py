"""swiftseg-synth: write procedural road scenes with exact labels as a generic-layout dataset.

    swiftseg-synth --out DIR --frames N --size WxH --seed S [--sequence] [--split NAME]

Writes `DIR/images/<split>/frame_XXXXXX.png` (RGB), `DIR/labels/<split>/frame_XXXXXX.png`
(class ids) and `DIR/classes.yaml` (9 classes: sky, building, vegetation, road,
sidewalk, lane marking, car, person, pole, with their palette). Frame k depends only on
(seed, k, size, --sequence), never on how many frames are written. Without --sequence
every frame is a different street seen from a different camera; with it the frames are
a drive along one street (the seed's), for replay demos.

The Python API (`generate_frame`, `render_frame`, `write_dataset`) serves tests,
training and the demo.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import yaml

from swiftseg_ros import files
from swiftseg_ros.classes import GENERIC_CLASSES_FILE
from swiftseg_ros.cli import ArgumentParser, check_count, parse_size_flag
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.progress import progress as progress_display
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE, Canvas, World

MIN_SIZE = (32, 16)
MAX_SIDE = 8192  # a frame's float buffers grow with its area; beyond 8K nobody trains
MAX_SEED = 2**63 - 1
MAX_FRAMES = 1_000_000  # a dataset of a million frames is far beyond any test or demo


def _check_size(width: int, height: int, what: str) -> None:
    if not (MIN_SIZE[0] <= width <= MAX_SIDE and MIN_SIZE[1] <= height <= MAX_SIDE):
        raise ConfigError(f"{what}, expected {MIN_SIZE[0]}x{MIN_SIZE[1]} pixels or more and "
                          f"at most {MAX_SIDE} a side")


def _check(seed: int, index: int, width: int, height: int) -> None:
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed {seed}: must be an integer in 0..{MAX_SEED}")
    if int(index) < 0:
        raise ConfigError(f"frame index {index}: must be 0 or more")
    _check_size(width, height, f"frame size {width}x{height}")


@functools.lru_cache(maxsize=4)
def _sequence_world(seed: int, width: int, height: int) -> World:
    # one world per sequence, reused so consecutive frames share its scenery cache
    return World((int(seed), 1), width, height, still=False)


def render_frame(seed: int, index: int, width: int, height: int, sequence: bool = False,
                 effects: bool = True) -> Canvas:
    """Frame `index` of a seed as a Canvas (`rgb`, `label`, and `colours`: the set of RGB
    colours drawn for each class, which equals the image's colours when effects are off)."""
    _check(seed, index, width, height)
    if sequence:
        return _sequence_world(seed, width, height).render(int(index), effects)
    return World((int(seed), 0, int(index)), width, height, still=True).render(0, effects)


def generate_frame(seed: int, index: int, width: int, height: int, sequence: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 HxWx3, class ids uint8 HxW) of frame `index` of a seed."""
    canvas = render_frame(seed, index, width, height, sequence)
    return canvas.rgb, canvas.label


def classes_yaml() -> dict:
    return {
        "name": "synthetic",
        "ignore_index": 255,
        "classes": [{"name": n, "color": list(c)} for n, c in zip(CLASS_NAMES, PALETTE, strict=True)],
    }


def write_dataset(out: str | Path, frames: int, width: int, height: int, seed: int = 0,
                  sequence: bool = False, split: str = "train", start: int = 0,
                  progress: bool = True) -> Path:
    """Write frames start..start+frames-1 in the generic layout under `out`; return `out`."""
    if frames < 1:
        raise ConfigError(f"frames {frames}: must be at least 1")
    if not split or "/" in split or split in (".", ".."):
        raise ConfigError(f"split {split!r}: must be a plain folder name such as train or val")
    _check(seed, start, width, height)
    out = Path(out)
    image_dir, label_dir = out / "images" / split, out / "labels" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(
        out / GENERIC_CLASSES_FILE,
        "# written by swiftseg-synth: class ids 0-8 in labels/, 255 would be ignored\n"
        + yaml.safe_dump(classes_yaml(), sort_keys=False, default_flow_style=None))
    for index in progress_display(range(start, start + frames), desc=f"synth {split}",
                                  unit="frame", enabled=progress):
        rgb, label = generate_frame(seed, index, width, height, sequence)
        name = f"frame_{index:06d}.png"
        files.write_image(image_dir / name, rgb)
        files.write_image(label_dir / name, label)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-synth",
        description="Write procedural road scenes with exact labels (generic dataset layout).")
    parser.add_argument("--out", required=True, help="dataset folder to write into")
    parser.add_argument("--frames", type=int, default=100, help="number of frames (default 100)")
    parser.add_argument("--size", default="512x256", help="WIDTHxHEIGHT (default 512x256)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--sequence", action="store_true",
                        help="a drive along one street: consecutive frames follow each other")
    parser.add_argument("--split", default="train", help="split folder name (default train)")
    parser.add_argument("--start", type=int, default=0,
                        help="index of the first frame (default 0); frame k is the same in "
                             "every run")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    width, height = parse_size_flag(args.size, "--size")
    check_count(args.frames, "--frames", 1, MAX_FRAMES)
    check_count(args.seed, "--seed", 0, MAX_SEED)
    check_count(args.start, "--start", 0, MAX_SEED - MAX_FRAMES)
    files.check_output_folder(args.out, "--out")
    if not args.split or "/" in args.split or args.split in (".", ".."):
        raise ConfigError(f"--split {args.split!r}: a plain folder name such as train or val")
    began = time.perf_counter()
    out = write_dataset(args.out, args.frames, width, height, seed=args.seed,
                        sequence=args.sequence, split=args.split, start=args.start,
                        progress=not args.quiet)
    seconds = time.perf_counter() - began
    kind = "sequence" if args.sequence else "independent frames"
    print(f"wrote {args.frames} {width}x{height} frames ({kind}, seed {args.seed}) to "
          f"{out / 'images' / args.split} and {out / 'labels' / args.split} in {seconds:.1f} s "
          f"({args.frames / seconds:.1f} frames/s); classes in {out / GENERIC_CLASSES_FILE}")
    return 0
