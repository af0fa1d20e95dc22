"""Host-side frame and result buffers, and the numpy views the engine hands out.

On CUDA the frame is converted into page-locked (pinned) host memory so that the
upload is an asynchronous DMA that a CUDA graph can capture, and each requested
output comes back into its own pinned buffer. On the CPU the "device" buffers are
host memory already: the frame is converted once, straight into the tensor the
pre-processing reads, and the results are views of the post-processing's outputs.
"""

from __future__ import annotations

import numpy as np
import torch

from swiftseg_ros.engine.frames import copy_as_rgb


class FrameIO:
    """The RGB input buffer pair and the output buffer pairs for one input size."""

    def __init__(self, height: int, width: int, device: torch.device):
        self.on_cuda = device.type == "cuda"
        self.device_rgb = torch.empty((height, width, 3), dtype=torch.uint8, device=device)
        self.host_rgb = (torch.empty((height, width, 3), dtype=torch.uint8, pin_memory=True)
                         if self.on_cuda else self.device_rgb)
        self._host_rgb_array = self.host_rgb.numpy()
        self.device_outputs: dict[str, torch.Tensor] = {}
        self.host_outputs: dict[str, torch.Tensor] = {}
        self.arrays: dict[str, np.ndarray] = {}

    def set_outputs(self, device_outputs: dict[str, torch.Tensor]) -> None:
        """Pair every device output with a host buffer (pinned on CUDA) and a numpy view."""
        self.device_outputs = dict(device_outputs)
        if self.on_cuda:
            self.host_outputs = {
                name: torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                for name, t in self.device_outputs.items()}
        else:
            self.host_outputs = self.device_outputs
        self.arrays = {name: t.numpy() for name, t in self.host_outputs.items()}

    def copy_frame(self, frame: np.ndarray, pixel_format: str) -> None:
        """Host copy: a checked frame of any strides and format into the RGB buffer."""
        copy_as_rgb(frame, pixel_format, self._host_rgb_array)

    def upload(self) -> None:
        if self.on_cuda:
            self.device_rgb.copy_(self.host_rgb, non_blocking=True)

    def download(self) -> None:
        if self.on_cuda:
            for name, device_tensor in self.device_outputs.items():
                self.host_outputs[name].copy_(device_tensor, non_blocking=True)


class BatchIO:
    """The buffers of a batch of frames of one size: one FrameIO per frame, with
    FrameIO's interface over all of them (`arrays` is a list, one dict per frame)."""

    def __init__(self, batch: int, height: int, width: int, device: torch.device):
        self.frames = [FrameIO(height, width, device) for _ in range(batch)]
        self.device_rgbs = [frame.device_rgb for frame in self.frames]
        self.arrays: list[dict[str, np.ndarray]] = []

    def set_outputs(self, device_outputs: list[dict[str, torch.Tensor]]) -> None:
        for frame, outputs in zip(self.frames, device_outputs, strict=True):
            frame.set_outputs(outputs)
        self.arrays = [frame.arrays for frame in self.frames]

    def copy_frames(self, frames) -> None:
        """Host copy of each (frame, pixel format) into its frame's RGB buffer."""
        for io, (frame, pixel_format) in zip(self.frames, frames, strict=True):
            io.copy_frame(frame, pixel_format)

    def upload(self) -> None:
        for frame in self.frames:
            frame.upload()

    def download(self) -> None:
        for frame in self.frames:
            frame.download()
