"""Device pre-processing: the interleaved uint8 RGB frame -> the network's normalized input.

uint8 -> float conversion and normalization are ONE fused op, `bias + pixel * scale`
with `scale = 1/std` and `bias = -mean/std` per channel, written straight into the
channels_last (that is, interleaved) network input. The per-channel constants are
laid out as one image row ([r g b r g b ...], width * 3 long), so the op broadcasts
over rows only and runs on contiguous, vectorizable memory: 0.2 ms at 1024x512 on one
CPU core, where broadcasting a (1, 3, 1, 1) constant over the interleaved image takes
3 ms and three strided per-channel ops 1 ms. It computes in fp32 and rounds once into
an fp16/bf16 input. When the network runs at another size, the normalized image is
resized bilinearly (antialias off, align_corners False, like F.interpolate) into the
network input. A contiguous (NCHW) input at the frame's size, what ONNX Runtime reads,
is written plane by plane from the interleaved pixels instead, not normalized interleaved
and then transposed (two passes, the transposing one slow): on the CPU OpenCV splits the
planes and converts each with its scale and offset in one pass (1.2 ms at 1024x512 on one
core, where three strided torch ops take 4.5 ms; the same float results), elsewhere three
strided torch ops. Every tensor is allocated here, once per input size.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

aten = torch.ops.aten


def empty_image(height: int, width: int, dtype, device, channels_last: bool) -> torch.Tensor:
    """An uninitialized (1, 3, height, width) tensor in the requested memory format."""
    tensor = torch.empty((1, 3, height, width), dtype=dtype, device=device)
    if channels_last:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def _rows(image_nchw: torch.Tensor) -> torch.Tensor:
    """A channels_last (1, 3, H, W) tensor viewed as (H, W * 3) interleaved rows."""
    _, _, height, width = image_nchw.shape
    return image_nchw.permute(0, 2, 3, 1).view(height, width * 3)


class Preprocessor:
    """Writes `network_input` from the device RGB frame buffer `device_rgb` (H, W, 3)."""

    def __init__(self, device_rgb: torch.Tensor, inference_hw: tuple[int, int], mean, std,
                 dtype, channels_last: bool, network_input: torch.Tensor | None = None):
        height, width, _ = device_rgb.shape
        device = device_rgb.device
        self.inference_hw = tuple(inference_hw)
        self.resize = (height, width) != self.inference_hw
        # `network_input` given: a (1, 3, H, W) slice of a batch's input to write into
        self.network_input = (network_input if network_input is not None else
                              empty_image(*self.inference_hw, dtype, device, channels_last))
        self.planes = self.cpu_planes = None
        if not self.resize and not channels_last and device.type == "cpu" \
                and dtype == torch.float32:
            self.cpu_planes = _CpuPlanes(device_rgb.numpy(), self.network_input[0].numpy(),
                                         mean, std)
            return
        if not self.resize and not channels_last:
            self.planes = [(torch.tensor([-m / s], dtype=torch.float32, device=device),
                            device_rgb[:, :, c],
                            torch.tensor([1.0 / s], dtype=torch.float32, device=device),
                            self.network_input[0, c])
                           for c, (m, s) in enumerate(zip(mean, std, strict=True))]
            return
        if not self.resize and channels_last:
            self.normalized = self.network_input
        else:
            self.normalized = empty_image(height, width, dtype, device, channels_last=True)
        self._pixel_rows = device_rgb.view(height, width * 3)
        self._normalized_rows = _rows(self.normalized)
        scale = torch.tensor([1.0 / s for s in std], dtype=torch.float32)
        bias = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)],
                            dtype=torch.float32)
        self._scale_row = scale.repeat(width).to(device)
        self._bias_row = bias.repeat(width).to(device)

    def run(self) -> torch.Tensor:
        if self.cpu_planes is not None:
            self.cpu_planes.run()
            return self.network_input
        if self.planes is not None:
            for bias, pixels, scale, plane in self.planes:
                torch.addcmul(bias, pixels, scale, out=plane)
            return self.network_input
        torch.addcmul(self._bias_row, self._pixel_rows, self._scale_row,
                      out=self._normalized_rows)
        if self.resize:
            aten.upsample_bilinear2d.out(self.normalized, list(self.inference_hw), False,
                                         None, None, out=self.network_input)
        elif self.normalized is not self.network_input:
            self.network_input.copy_(self.normalized)  # channels_last off: to NCHW
        return self.network_input


class BatchPreprocessor:
    """Writes a batch's `network_input` (N, 3, H, W): each frame's Preprocessor writes its
    own slice, so the forward pass reads one tensor."""

    def __init__(self, device_rgbs: list[torch.Tensor], inference_hw: tuple[int, int], mean,
                 std, dtype, channels_last: bool):
        self.inference_hw = tuple(inference_hw)
        self.network_input = torch.empty((len(device_rgbs), 3, *self.inference_hw),
                                         dtype=dtype, device=device_rgbs[0].device)
        if channels_last:
            self.network_input = self.network_input.contiguous(
                memory_format=torch.channels_last)
        self.frames = [Preprocessor(rgb, inference_hw, mean, std, dtype, channels_last,
                                    network_input=self.network_input[i:i + 1])
                       for i, rgb in enumerate(device_rgbs)]

    def run(self) -> torch.Tensor:
        for frame in self.frames:
            frame.run()
        return self.network_input


class _CpuPlanes:
    """Interleaved uint8 RGB -> normalized fp32 planes with OpenCV: one split, then per
    plane `pixel * (1/std) + (-mean/std)` converted to float in one pass (addWeighted
    with a zero second weight)."""

    def __init__(self, pixels: np.ndarray, planes: np.ndarray, mean, std):
        self.pixels, self.planes = pixels, planes
        self.split = [np.empty(pixels.shape[:2], np.uint8) for _ in range(3)]
        self.constants = [(1.0 / s, -m / s) for m, s in zip(mean, std, strict=True)]

    def run(self) -> None:
        cv2.split(self.pixels, self.split)
        for channel, (source, (scale, offset)) in enumerate(
                zip(self.split, self.constants, strict=True)):
            cv2.addWeighted(source, scale, source, 0.0, offset, dst=self.planes[channel],
                            dtype=cv2.CV_32F)
