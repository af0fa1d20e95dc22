"""The environment record of a replay: what ran, on what, with which files and settings.

A latency or accuracy number is only comparable with another when both came from the
same software, machine, weights and parameters; report.json's `environment` says which.
Everything here is read, never assumed: a value that cannot be found is None.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

import swiftseg_ros
from swiftseg_ros.engine.cpu_caps import read_cpuinfo

# The CPU flags that decide which kernels can run (the engine routes by them); the full
# /proc/cpuinfo list is a few hundred words that say nothing more to a reader.
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
             "avx_vnni", "asimd", "sve", "sve2")
# engine.stats() keys that describe how the engine runs (the ones absent from a given
# engine version are simply not recorded)
ENGINE_KEYS = ("backend", "choices", "cpu", "onednn_convs", "cuda_graph", "device",
               "precision", "upsample", "inference_size", "pixel_format")


def environment_record(engine, params, weights: str | Path | None) -> dict:
    """The record for one replay: software, machine, engine choices, checkpoint, parameters."""
    return {
        "package": {"version": swiftseg_ros.__version__, "git_revision": git_revision()},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "numpy": _version("numpy"),
        "os": platform.platform(),
        "cpu": cpu_record(),
        "gpu": gpu_name(),
        "threads": torch.get_num_threads(),
        "engine": engine_record(engine.stats()),
        "checkpoint": checkpoint_record(weights),
        "parameters": parameter_values(params),
    }


def engine_record(stats: dict) -> dict:
    """The engine's backend, kernel choices and settings, as far as its stats say them."""
    return {key: _plain(stats[key]) for key in ENGINE_KEYS if key in stats}


def git_revision() -> str | None:
    """The checkout's commit (with "-dirty" for local changes); None for an installed
    package or where git is not available."""
    root = Path(swiftseg_ros.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        revision = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return revision.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def cpu_record() -> dict:
    model, flags = read_cpuinfo()
    return {
        "model": model or platform.processor() or None,
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
    }


def gpu_name() -> str | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(torch.cuda.current_device())


def checkpoint_record(weights: str | Path | None) -> dict | None:
    """File name, size and SHA-256 of the weights file (None: a randomly initialized net)."""
    if weights is None or str(weights) == "":
        return None
    path = Path(weights)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "path": str(path), "bytes": path.stat().st_size,
            "sha256": digest.hexdigest()}


def parameter_values(params) -> dict:
    """The validated node parameters as plain JSON values."""
    if dataclasses.is_dataclass(params):
        return {key: _plain(value) for key, value in dataclasses.asdict(params).items()}
    return {key: _plain(value) for key, value in dict(params).items()}


def _plain(value):
    """JSON-ready: tuples to lists, dicts and lists recursively, other objects as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
