"""The by-hand OpenVINO reference of swiftseg-bench: what a user who runs OpenVINO without
the engine gets, as OpenVINO's documentation shows it.

The network with its input normalization, its upsampling (the network's own forward,
logits at the input size) and the class selection (argmax, as uint8) is converted with
`openvino.convert_model` from the same checkpoint the engine loads, and compiled for the
CPU with the bench's threads, a latency hint and the precision hint of the row (f32 or
bf16). Per frame: the uint8 frame in host memory in, uint8 labels in host memory out.
It is a reference row like the naive loop: the engine's own OpenVINO backend reads the
engine's exported graph instead and keeps the engine's pre- and post-processing.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

HINTS = {"fp32": "f32", "bf16": "bf16"}


class _LabelsGraph(nn.Module):
    """uint8 (1, H, W, 3) RGB -> uint8 (1, H, W) labels."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return self.model(x).argmax(1).to(torch.uint8)


def openvino_precisions() -> list[str]:
    """The precisions the by-hand reference runs on this CPU: fp32, and bf16 where
    OpenVINO reports native bf16; empty without the openvino package."""
    try:
        import openvino as ov
    except ImportError:
        return []
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ["fp32", "bf16"] if native else ["fp32"]


def convert_labels_graph(weights, frame: np.ndarray):
    """The network with normalization, upsampling and argmax, converted by OpenVINO for
    frames of this shape (seconds: torch.jit tracing and OpenVINO's frontend), to be
    compiled once per precision."""
    import openvino as ov

    from swiftseg_ros.checkpoint import load_checkpoint, load_model
    from swiftseg_ros.nets import NETWORKS

    _, meta, _ = load_checkpoint(weights)
    info = NETWORKS.get(meta["network"])
    model, meta = load_model(weights, **(info.inference_options if info else {}))
    graph = _LabelsGraph(model.eval(), meta["mean"], meta["std"]).eval()
    example = torch.from_numpy(frame[None])
    # convert_model traces with torch.jit, which warns about its own deprecation and
    # the network's shape checks; the reference row needs neither on the console
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ov.convert_model(graph, example_input=example)


class OpenVinoReference:
    """One compiled labels graph (from `convert_labels_graph`) and its infer request, on
    one frame."""

    def __init__(self, converted, frame: np.ndarray, precision: str, threads: int | None):
        import openvino as ov

        compiled = ov.Core().compile_model(converted, "CPU", {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        })
        self.request = compiled.create_infer_request()
        self.frame = frame[None]

    def __call__(self) -> np.ndarray:
        self.request.infer({0: self.frame})
        return self.request.get_output_tensor(0).data
