"""What a prepare measured, kept on disk so that the next start builds only the winner.

Timing every candidate of SwiftNet-RN18 at 1024x512 on one core takes most of a minute;
a node restarted by its launch file must be back in seconds. So each plan's choices are
stored as one small JSON file (in the graph cache folder's `choices/`, graph_cache.py)
under a key of everything that can change the answer: the CPU (model, flags of
interest, bf16 support) or the GPU (name, compute capability, CUDA and driver), the
thread count, the versions of torch, onnxruntime, openvino, numba, onnx and this
package, the network with its build options and class count (not its weights' values;
an .onnx file by path, size and time), the input and inference sizes, the batch, the
outputs, upsampling and output size, and the precision, backend and candidate settings.
The key's hash names the file and the key itself is stored in it and compared.

A later prepare with the same key builds only the stored winner (and still warms it up);
`retune` measures afresh and stores the new answer. An entry that cannot be used (not
JSON, truncated, written by another format version, another key) is ignored with a
warning and measured again; a winner that no longer builds is measured again; a folder
that cannot be written costs the next start its measurement, with a warning, never the
engine. Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

import torch

log = logging.getLogger("swiftseg_ros.engine")

FORMAT = 1
LIBRARIES = ("onnxruntime", "openvino", "numba", "onnx", "onnxscript", "numpy")


def choice_key(engine, key, net_hw: tuple[int, int]) -> dict:
    """Everything that can change what a plan's measurement picks (see the module doc)."""
    config = engine.config
    return {
        "format": FORMAT,
        "machine": _machine(engine),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "swiftseg_ros": _version("swiftseg_ros"),
                     **{name: _version(name) for name in LIBRARIES}},
        "network": engine.network,
        "network_options": engine.network_options,
        "num_classes": engine.num_classes,
        "input": [key.width, key.height],
        "inference": [net_hw[1], net_hw[0]],
        "batch": key.batch,
        "outputs": list(key.outputs),
        "upsample": config.upsample,
        "output_size": config.output_size,
        "precision": config.precision,
        "backend": config.backend,
        "openvino_device": config.openvino_device,
        "channels_last": config.channels_last,
        "onednn_convs": config.onednn_convs,
        "winograd": config.winograd,
        "cuda_graphs": config.cuda_graphs,
        "tf32": config.tf32,
    }


class ChoiceCache:
    """The stored choices of one folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder) / "choices"

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:24]
        width, height = key["input"]
        return self.folder / f"{key['network']}_{width}x{height}_{digest}.json"

    def load(self, key: dict) -> dict | None:
        """The stored record for `key`, or None (missing, or unusable: with a warning)."""
        path = self.path(key)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("engine: choices cache %s: cannot read (%s); measuring", path,
                        exc.strerror or exc)
            return None
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("winner"), dict) \
                or not isinstance(record.get("choices"), dict):
            log.warning("engine: choices cache %s is corrupt (not a choices record); "
                        "ignored, measuring again", path)
            return None
        if record.get("format") != FORMAT:
            log.warning("engine: choices cache %s is of format %r, this version reads %d; "
                        "ignored, measuring again", path, record.get("format"), FORMAT)
            return None
        if _canonical(record.get("key")) != _canonical(key):
            log.warning("engine: choices cache %s holds another setup's choices; ignored, "
                        "measuring again", path)
            return None
        return record

    def store(self, key: dict, record: dict) -> Path | None:
        """Write the record for `key` (temporary name, then renamed); None with a warning
        when the folder cannot take it."""
        path = self.path(key)
        temporary = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp",
                                                 dir=self.folder)
            with os.fdopen(handle, "w") as file:
                json.dump({"format": FORMAT, "key": key, **record}, file, indent=1,
                          sort_keys=True, default=str)
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("engine: choices cache %s: cannot write (%s); the next start "
                        "measures again (set SWIFTSEG_CACHE_DIR to a writable folder)",
                        self.folder, exc.strerror or exc)
            return None
        finally:
            if temporary is not None and os.path.exists(temporary):
                os.unlink(temporary)
        return path


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _machine(engine) -> dict:
    if engine.on_cuda:
        device = engine.device
        major, minor = torch.cuda.get_device_capability(device)
        return {"gpu": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}",
                "cuda": torch.version.cuda, "driver": _nvidia_driver()}
    cpu = engine.cpu
    return {"cpu": cpu.model, "arch": cpu.arch, "flags": list(cpu.flags),
            "onednn": cpu.onednn, "onednn_bf16": cpu.onednn_bf16,
            "native_bf16": cpu.native_bf16}


def _nvidia_driver() -> str | None:
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
