"""Does a checkpoint predict the class set of a bag's ground truth? Checked before a replay.

A checkpoint of another class set still "scores" against ground truth whose ids happen
to be in its range, and prints a meaningless mIoU (Cityscapes weights on the synthetic
bag: 0.15 %). `swiftseg-eval` refuses that by the dataset's class count; a bag carries
no class list in its messages, so replay learns the ground truth's classes from
- `--classes NAME|FILE` (a class set as `swiftseg_ros.classes.load_class_set` reads it),
  or else the bag folder's `classes.yaml` (the synthetic bags carry one), and
- the class ids the ground truth holds (read once, before anything is written):
  an id the checkpoint cannot predict is a mismatch whatever the declared set says.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from swiftseg_ros.checkpoint import load_checkpoint
from swiftseg_ros.classes import ClassSet, load_class_set
from swiftseg_ros.engine.config import DEFAULT_NUM_CLASSES
from swiftseg_ros.engine.onnx_file import is_onnx_file, read_onnx_file
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.metrics import IGNORE_INDEX
from swiftseg_ros.paths import resolve_weights
from swiftseg_ros.replay.bagio import BagDamaged, InputBag, MalformedMessage, deserialize
from swiftseg_ros.ros.conversions import ImageRejected, decode_image

log = logging.getLogger(__name__)

BAG_CLASSES_FILE = "classes.yaml"


def configuration_classes(params) -> tuple[list[str], str]:
    """(class names, what they come from) of the network a parameter set runs."""
    if params.weights:
        path = resolve_weights(params.weights)
        if is_onnx_file(path):  # an exported graph carries the checkpoint's classes
            return list(read_onnx_file(path).meta["class_names"]), f"the ONNX file {path.name}"
        _, meta, _ = load_checkpoint(path)
        return list(meta["class_names"]), f"the checkpoint {path.name}"
    return [f"class_{i}" for i in range(DEFAULT_NUM_CLASSES)], "the random network"


def declared_classes(bag_path: str | Path, classes: str | None) -> tuple[ClassSet, str] | None:
    """The ground truth's class set from --classes, else from the bag folder's classes.yaml."""
    if classes:
        return load_class_set(classes), str(classes)
    beside = Path(bag_path) / BAG_CLASSES_FILE
    if Path(bag_path).is_dir() and beside.is_file():
        return load_class_set(beside), str(beside)
    return None


def ground_truth_ids(bag: InputBag, label_topic: str) -> set[int]:
    """Every class id (the ignore index left out) in the ground truth's decodable mono8
    messages, up to where the bag is readable (the replay reports what it cannot read)."""
    seen = np.zeros(256, dtype=bool)
    try:
        for message in bag.messages([label_topic]):
            try:
                msg = deserialize(message)
                if str(msg.encoding).lower() != "mono8":
                    continue
                label = decode_image(msg)[0]
            except (MalformedMessage, ImageRejected):
                continue
            seen |= np.bincount(label.ravel(), minlength=256).astype(bool)
    except BagDamaged:
        pass
    seen[IGNORE_INDEX] = False
    return {int(i) for i in np.flatnonzero(seen)}


def check_class_set(names: list[str], source: str, truth_ids: set[int],
                    declared: tuple[ClassSet, str] | None, label_topic: str) -> None:
    """ConfigError when the ground truth cannot be this network's class set."""
    advice = ("replay weights trained on the bag's class set, or add --no-accuracy to replay "
              "without scoring")
    outside = sorted(i for i in truth_ids if i >= len(names))
    if outside:
        raise ConfigError(
            f"ground truth on {label_topic} holds class ids up to {max(truth_ids)} but "
            f"{source} predicts {len(names)} classes ({_listing(names)}); {advice}")
    if declared is None:
        return
    classes, where = declared
    if classes.num_classes != len(names):
        raise ConfigError(
            f"the ground truth's class set ({where}: {classes.num_classes} classes, "
            f"{_listing(classes.class_names)}) is not the {len(names)} classes of {source} "
            f"({_listing(names)}); {advice}")
    if list(classes.class_names) != list(names):
        log.warning("class names differ (ground truth, %s: %s; %s: %s); scoring by class id, "
                    "reporting the checkpoint's names", where, ", ".join(classes.class_names),
                    source, ", ".join(names))


def _listing(names, limit: int = 6) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
