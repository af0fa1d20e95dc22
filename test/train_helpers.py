"""What the training tests share: tiny synthetic scenes and a recipe that trains on them
in seconds on the CPU."""

from __future__ import annotations

from pathlib import Path

import yaml

from swiftseg_ros.synthetic.frames import write_dataset
from swiftseg_ros.trainer.config import load_recipe

# Tiny frames, train set = validation set: the short run must fit these frames.
TINY = ["model.name=fastscnn", "data.val_split=train", "augment.crop=[64, 128]",
        "augment.scale_min=1.0", "augment.scale_max=1.25", "train.batch_size=2",
        "train.workers=0", "log.tensorboard=false"]


def write_tiny_data(folder: Path) -> Path:
    """8 frames of 128x64 in `folder`, split train."""
    return write_dataset(folder, frames=8, width=128, height=64, seed=0, progress=False)


def tiny_config(data: Path, *overrides: str) -> dict:
    return load_recipe(None, [*TINY, f"data.root={data}", *overrides])


def write_tiny_recipe(folder: Path) -> Path:
    """TINY as a recipe file in `folder`, for the command line."""
    config = load_recipe(None, TINY)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({section: config[section]
                                    for section in ("model", "data", "augment", "train")}))
    return path
