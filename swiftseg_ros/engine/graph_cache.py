"""The network's forward pass as ONNX graphs, exported at prepare and cached on disk: what
the ONNX Runtime and OpenVINO backends run.

A graph is exported per inference size and batch (onnx_graph.py, the exporter shared
with `swiftseg-export`): the file name holds a hash of the weights' content, the size,
the batch, the opset and the torch version, so a new checkpoint, size or exporter gets
its own file and an unchanged setup loads in milliseconds. The cache folder is
`$SWIFTSEG_CACHE_DIR`, else `$XDG_CACHE_HOME/swiftseg_ros/onnx`, else
`~/.cache/swiftseg_ros/onnx` (or the engine config's `cache_dir`); the measured choices
(choice_cache.py) and OpenVINO's compiled models live beside the graphs. A file is
written under a temporary name and renamed, so a full or read-only disk leaves nothing
behind. An `.onnx` file given as weights is used as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.onnx_graph import require_onnx, trace_to_onnx

OPSET = 18


class GraphCache:
    """The graphs of one engine's network (backends.base.BackendContext)."""

    def __init__(self, context):
        self.context = context
        self._digest: str | None = None

    def path(self, net_hw, batch: int = 1, variant: str = "",
             rewrite: Callable[[nn.Module], nn.Module] | None = None) -> Path:
        """The graph at this inference size and batch (an .onnx weights file: that file).
        `rewrite(network)` makes the network of a `variant` (built only when the file must
        be exported)."""
        context = self.context
        if context.onnx_file is not None:
            return context.onnx_file.path
        if self._digest is None:
            self._digest = weights_digest(context.model)
        source = context.model
        if rewrite is not None:
            def source():
                return rewrite(context.model)
        return cached_graph(source, context.network, *net_hw, digest=self._digest,
                            folder=cache_folder(context.config.cache_dir), variant=variant,
                            batch=batch)


def cache_folder(override: str | Path | None = None) -> Path:
    """The folder of exported graphs, measured choices and compiled models."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("SWIFTSEG_CACHE_DIR"):
        return Path(os.environ["SWIFTSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "swiftseg_ros" / "onnx"


def weights_digest(model: nn.Module) -> str:
    """sha256 of the network's state (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        shape = tensor.shape
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class _Logits(nn.Module):
    """What the cached graph computes: normalized (1, 3, H, W) -> logits at the stride."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_logits(image)


def cached_graph(model: nn.Module | Callable[[], nn.Module], network: str, height: int,
                 width: int, *, digest: str, folder: Path, variant: str = "",
                 batch: int = 1) -> Path:
    """The ONNX file of `model.forward_logits` at this input size and batch, exported if
    not cached.

    `model` may be a function that returns the network, called only when the file must
    be exported. `variant` names a rewrite of the network with the same weights (e.g.
    "winograd256"), which gets its own file.
    """
    # batch 1 keeps the key (and the file) it had before batches existed
    rewrite = (f"|{variant}" if variant else "") + (f"|batch{batch}" if batch > 1 else "")
    key = hashlib.sha256(
        f"{digest}|{network}{rewrite}|{height}x{width}|opset{OPSET}|torch{torch.__version__}"
        .encode()).hexdigest()[:24]
    stem = f"{network}_{variant}" if variant else network
    batched = f"x{batch}" if batch > 1 else ""
    path = folder / f"{stem}_{width}x{height}{batched}_{key}.onnx"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=folder)
        os.close(handle)
    except OSError as exc:
        raise _cache_error(folder, exc) from exc
    try:
        if not isinstance(model, nn.Module):
            model = model()
        proto = _export(model, network, height, width, batch)
        with open(temporary, "wb") as file:
            file.write(proto.SerializeToString())
        os.replace(temporary, path)
    except OSError as exc:
        raise _cache_error(folder, exc) from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _cache_error(folder: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"ONNX cache folder {folder}: cannot write ({exc.strerror or exc}); "
                       f"set SWIFTSEG_CACHE_DIR to a writable folder with space, or use "
                       f"backend torch")


def _export(model: nn.Module, network: str, height: int, width: int, batch: int = 1):
    require_onnx()
    graph = _Logits(model).eval()
    example = torch.zeros(batch, 3, height, width)
    # the exporter's optimizer passes log every step at INFO; the engine logs the choice
    chatty = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in chatty]
    for logger in chatty:
        logger.setLevel(logging.WARNING)
    try:
        return trace_to_onnx(graph, example, network, dynamic=False,
                             divisor=int(model.size_divisor), spatial_axes=(2, 3), opset=OPSET)
    finally:
        for logger, level in zip(chatty, levels, strict=True):
            logger.setLevel(level)
