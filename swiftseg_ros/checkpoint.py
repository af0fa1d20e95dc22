"""Checkpoints: a state_dict plus metadata, readable with `torch.load(weights_only=True)`.

A weights file is untrusted input: it is only ever loaded with `weights_only=True`, so
it can hold tensors and plain Python values but never run code. Every way a file can
be unusable (missing, not a checkpoint, truncated, another format version, another
network or class count) is a `CheckpointError` that names the file and says what was
expected.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from swiftseg_ros.errors import CheckpointError
from swiftseg_ros.statedict import fit_problems, read_torch_file

FORMAT = "swiftseg-checkpoint"
VERSION = 1
CITYSCAPES_MEAN = (73.15, 82.90, 72.3)
CITYSCAPES_STD = (47.67, 48.49, 47.73)
REQUIRED_META = ("format", "version", "network", "num_classes", "class_names", "palette",
                 "mean", "std", "train_size", "provenance")


def make_meta(network: str, num_classes: int, *, class_names=None, palette=None,
              mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD, train_size=None, provenance=None,
              network_options=None) -> dict:
    """Checkpoint metadata with the contract's keys, checked and as plain Python values."""
    from swiftseg_ros.classes import default_palette, validate_palette

    num_classes = int(num_classes)
    names = [str(n) for n in class_names] if class_names else [
        f"class_{i}" for i in range(num_classes)]
    palette = validate_palette(palette if palette is not None else default_palette(num_classes),
                               num_classes, "checkpoint palette")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "network": str(network),
        "num_classes": num_classes,
        "class_names": names,
        "palette": palette[:num_classes],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "train_size": [int(s) for s in train_size] if train_size else None,
        "provenance": dict(provenance or {}),
        "network_options": dict(network_options or {}),
    }
    meta["provenance"].setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(
        timespec="seconds"))
    _check_meta(meta, "new checkpoint")
    return meta


def save_checkpoint(path, model: torch.nn.Module | dict, meta: dict, training: dict | None = None,
                    *, half: bool = False) -> Path:
    """Write a checkpoint atomically (a temporary file renamed into place).

    `model` is a module or a state_dict; `half=True` stores floating tensors as fp16
    (the exported demo weights), loading converts them back.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give the checkpoint file to write (.pt)")
    _check_meta(meta, str(path))
    state = model.state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu()
             for k, v in state.items()}
    payload = {"meta": meta, "state_dict": state}
    if training is not None:
        payload["training"] = training
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path) -> tuple[dict, dict, dict | None]:
    """Read (state_dict, meta, training or None) from a checkpoint file, safely."""
    path = Path(path)
    payload = read_torch_file(path, "checkpoint", "a swiftseg checkpoint")
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        keys = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path}: not a swiftseg checkpoint (expected keys 'meta' and 'state_dict', found "
            f"{keys}); import foreign weights with swiftseg-import")
    meta = payload["meta"]
    _check_meta(meta, str(path))
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'state_dict' is not a mapping of names to tensors")
    return state, meta, payload.get("training")


def _check_meta(meta: Any, where: str) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: metadata is {type(meta).__name__}, expected a dict")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {meta.get('version')!r}, this swiftseg_ros "
            f"reads version {VERSION}; re-export it with a matching swiftseg_ros")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{where}: metadata lacks {', '.join(missing)}")
    n = meta["num_classes"]
    if not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{where}: num_classes is {n!r}, expected a positive int")
    if len(meta["class_names"]) != n or len(meta["palette"]) < n:
        raise CheckpointError(
            f"{where}: {len(meta['class_names'])} class names and {len(meta['palette'])} "
            f"palette colours for num_classes={n}")
    if len(meta["mean"]) != 3 or len(meta["std"]) != 3 or min(meta["std"]) <= 0:
        raise CheckpointError(f"{where}: mean/std must be 3 values each, std > 0")


def check_compatible(meta: dict, network: str | None = None, num_classes: int | None = None,
                     where: str = "checkpoint") -> None:
    """Raise when a requested network or class count contradicts the checkpoint's."""
    if network and network != meta["network"]:
        raise CheckpointError(
            f"{where} holds network {meta['network']!r} but {network!r} was asked for; "
            f"drop the network setting or use weights of that network")
    if num_classes is not None and int(num_classes) != meta["num_classes"]:
        raise CheckpointError(
            f"{where} has {meta['num_classes']} classes but {num_classes} were asked for")


def load_model(path, network: str | None = None, num_classes: int | None = None,
               **options) -> tuple[torch.nn.Module, dict]:
    """Build the checkpoint's network and load its weights strictly: (model in eval mode, meta).

    `options` are passed to build_model on top of the checkpoint's `network_options`
    (e.g. aux_heads=False for inference).
    """
    from swiftseg_ros.nets import build_model

    state, meta, _ = load_checkpoint(path)
    check_compatible(meta, network, num_classes, where=str(path))
    model = build_model(meta["network"], meta["num_classes"],
                        **{**meta.get("network_options", {}), **options})
    load_state_strict(model, state, str(path))
    return model.eval(), meta


def load_state_strict(model: torch.nn.Module, state: dict, where: str) -> None:
    """Load a state_dict, turning missing/unexpected/mis-shaped keys into a CheckpointError.

    Auxiliary training heads present in the file but not in the model are skipped, so a
    training checkpoint loads into an inference model.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith("aux")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = fit_problems(missing, unexpected, shapes)
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the network: {problems}")
    model.load_state_dict(state, strict=True)

