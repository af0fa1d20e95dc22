"""How a state_dict fails to fit a model, in the words every weights loader reports."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from swiftseg_ros.errors import CheckpointError, UnsafeFileError

LISTED_KEYS = 6
# torch.save writes a zip archive; files of torch < 1.6 are a bare pickle (protocol 2+)
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def listing(items: list[str], limit: int = LISTED_KEYS) -> str:
    """The first `limit` items, comma-separated, and how many more there are."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def fit_problems(missing=(), unexpected=(), mismatched=()) -> str:
    """'unexpected keys ...; missing keys ...; shape mismatches ...', or '' when all fit.

    Unexpected keys come first: for a wrong file they are what tells the user which
    model it really holds.
    """
    parts = [f"{what} {listing(list(keys))}" for what, keys in (
        ("unexpected keys", unexpected), ("missing keys", missing),
        ("shape mismatches", mismatched)) if keys]
    return "; ".join(parts)


def read_torch_file(path: Path, kind: str, what: str):
    """`torch.load(weights_only=True)` of an untrusted file, every failure a CheckpointError.

    `kind` names the file in "no such {kind} file"; `what` is what it should have been
    ("a swiftseg checkpoint"). A file that would build Python objects is refused for
    safety, without repeating torch's advice to load it unsafely.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such {kind} file")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a folder, expected {what} (.pt)")
    _check_torch_file_start(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # garbage bytes fail the unpickler too
            raise CheckpointError(f"{path}: cannot be read as {what} (truncated, corrupt or "
                                  f"another format: not a PyTorch file)") from exc
        blocked = next(line for line in str(exc).splitlines() if "global" in line.lower())
        name = re.search(r"GLOBAL (\S+)", blocked)
        raise UnsafeFileError(
            f"{path}: refused for safety: it holds Python objects beyond tensors and plain "
            f"values ({blocked.strip()[:120]})", name.group(1) if name else None) from exc
    except OSError as exc:
        if exc.filename is not None:  # the file itself could not be opened (permissions)
            raise
        raise CheckpointError(f"{path}: cannot be read as {what} (truncated or corrupt: "
                              f"torch's zip reader failed, {exc.strerror or exc})") from exc
    except Exception as exc:  # torch's loader raises many types on corrupt bytes
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.split(". This is an internal")[0]  # drop torch's advice after it
        raise CheckpointError(f"{path}: cannot be read as {what} "
                              f"(truncated, corrupt or another format: {reason})") from exc


def _check_torch_file_start(path: Path, what: str) -> None:
    """Name an empty file or another format by its first bytes, before torch's loader
    fails on it with an internal message (a pickle opcode, "pop from empty list")."""
    with path.open("rb") as file:
        head = file.read(8)
    if not head:
        raise CheckpointError(f"{path}: is empty, expected {what} (an interrupted copy or "
                              f"download?)")
    if not head.startswith(TORCH_FILE_STARTS):
        raise CheckpointError(f"{path}: not a PyTorch file, expected {what} (torch.save "
                              f"writes a zip archive; this file starts with {head!r})")
