"""What a backend is: the small interface between the engine's core and each way of running
the network's forward pass.

The core (engine.py) owns the plan: frame buffers, pre- and post-processing, timing and
the choice among candidates. A backend owns how its forward pass is built: for a plan
(`PassSpec`: buffers, sizes, precision) it offers named candidate device passes, each
built only when called, and notes on those it cannot offer. The core times every
backend's candidates together and keeps the fastest (choices.pick_pass); it never looks
inside a backend. `refine` lets a backend ask a second question of its own winner (the
ONNX Runtime backend: the same graph with Winograd convolutions); `state` and `restore`
carry what a backend measured besides (which layers are faster compiled) to the choices
cache and back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from swiftseg_ros.engine.choices import DevicePass


@dataclass
class BackendContext:
    """What every backend may read: the settings, the machine and the network."""

    config: Any  # EngineConfig
    device: torch.device
    cpu: Any  # cpu_caps.CpuCapabilities
    network: str
    # the conv-BN-fused network in fp32 on the CPU, eval (None when the weights are an
    # .onnx file); backends copy it to their device and precision, exporters trace it
    model: nn.Module | None
    onnx_file: Any  # onnx_file.OnnxFile or None
    mean: tuple[float, float, float]  # input normalization on 0-255 RGB
    std: tuple[float, float, float]

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class PassSpec:
    """One plan's request to the backends: build candidate passes for these buffers.

    `preprocess(dtype, channels_last)` is the core's pre-processing into a new network
    input of `batch` frames (N, 3, H, W); `finish(name, backend, pre, forward,
    **fields)` shapes the post-processing by one real forward pass and returns the
    DevicePass. `io` is the plan's buffers (buffers.FrameIO, or BatchIO for a batch).
    """

    io: Any
    key: Any  # plans.PlanKey
    net_hw: tuple[int, int]
    output_hw: tuple[int, int]
    precision: str
    preprocess: Callable[[torch.dtype, bool], Any]
    finish: Callable[..., DevicePass]

    @property
    def batch(self) -> int:
        return self.key.batch


Candidates = dict[str, Callable[[], DevicePass]]


class Backend:
    """A backend's answer for each plan; subclasses set `name` and override `candidates`."""

    name = ""

    def __init__(self, context: BackendContext):
        self.context = context

    def candidates(self, spec: PassSpec) -> tuple[Candidates, dict[str, str]]:
        """(named builders of candidate passes for this plan, notes on those left out)."""
        raise NotImplementedError

    def refine(self, chosen: DevicePass, choices: dict, spec: PassSpec) -> DevicePass:
        """The pass to keep when this backend's candidate won (default: as it is)."""
        return chosen

    def state(self, spec: PassSpec) -> dict:
        """What this backend measured for the plan beyond the choices (JSON data), kept
        with them on disk (choice_cache.py) so that `restore` skips measuring it again."""
        return {}

    def restore(self, spec: PassSpec, state: dict) -> None:
        """Take back what `state` returned in an earlier process."""

    def default_model(self) -> nn.Module | None:
        """The torch network this backend runs before any plan (tools read it), or None."""
        return None

    def release(self) -> None:
        """Drop whatever the backend holds across plans."""
