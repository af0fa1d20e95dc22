"""ImageNet initialization of the SwiftNet encoders from torchvision-format state_dict files.

The encoders use torchvision's key names, so `resnet18` and `mobilenet_v2` ImageNet
weights (e.g. `resnet18-f37072fd.pth`, `mobilenet_v2-b0353104.pth`, or any file that
holds such a state_dict) load as they are. Nothing is downloaded: the caller gives a
path. The file is read with `torch.load(weights_only=True)` only, so it cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.statedict import fit_problems, listing, read_torch_file

# classifier parts of the torchvision models that the segmentation encoders do not have
IGNORED_PREFIXES = {
    "resnet18": ("fc.",),
    "mobilenet_v2": ("classifier.", "features.18."),
}
# a key that only the given torchvision model has, to name the model a wrong file holds
_SIGNATURE_KEYS = {
    "resnet18": "layer1.0.conv1.weight",
    "mobilenet_v2": "features.1.conv.0.0.weight",
}


class EncoderLoadResult(NamedTuple):
    """Keys copied into the encoder and keys of the file that were skipped (classifier)."""

    loaded: list[str]
    ignored: list[str]


def load_imagenet_encoder(model: nn.Module, path: str | Path) -> EncoderLoadResult:
    """Copy a torchvision `resnet18` / `mobilenet_v2` state_dict file into `model`'s encoder.

    `model` is a SwiftNet network (its `encoder` is used) or an encoder itself. The file
    holds a bare state_dict or `{"state_dict": ...}`. Classifier keys (`fc.*`;
    `classifier.*` and `features.18.*` for MobileNetV2) are ignored; any other missing,
    unexpected or mis-shaped key is a CheckpointError naming the keys. BatchNorm
    `num_batches_tracked` counters may be absent (older torchvision files).
    """
    encoder = _encoder_of(model)
    arch = encoder.torchvision_name
    state = read_state_dict(path)
    ignored = sorted(k for k in state if k.startswith(IGNORED_PREFIXES[arch]))
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES[arch])}
    own = encoder.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [f"{k} {tuple(state[k].shape)} (encoder: {tuple(own[k].shape)})"
                  for k in own if k in state and state[k].shape != own[k].shape]
    problems = fit_problems(missing, unexpected, mismatched)
    if problems:
        raise CheckpointError(
            f"{path}: not a torchvision {arch} state_dict{_other_model_hint(state, arch)}: "
            f"{problems}")
    encoder.load_state_dict(state, strict=False)
    return EncoderLoadResult(loaded=sorted(state), ignored=ignored)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict (bare or under 'state_dict') from a file, safely, as CPU tensors."""
    payload = read_torch_file(path, "weights", "a PyTorch state_dict file")
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of parameter names to "
                              f"tensors, bare or under 'state_dict'), found {_describe(payload)}")
    return payload


def _encoder_of(model: nn.Module) -> nn.Module:
    if hasattr(model, "torchvision_name"):
        return model
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "torchvision_name"):
        name = getattr(model, "network_name", type(model).__name__)
        raise ConfigError(f"{name} has no ImageNet encoder to initialize; ImageNet weights "
                          f"apply to swiftnet_rn18, swiftnet_mnv2 and swiftnet_rn18_pyramid")
    return encoder


def _other_model_hint(state: dict, arch: str) -> str:
    for other, key in _SIGNATURE_KEYS.items():
        if other != arch and key in state:
            return f" (it looks like {other} weights)"
    return ""


def _describe(payload) -> str:
    if isinstance(payload, dict):
        return f"a dict with keys {listing(sorted(map(str, payload)))}" if payload else "an empty dict"
    return type(payload).__name__
