"""Device post-processing: logits -> uint8 label, color, confidence and overlay images.

Two upsampling modes (DESIGN.md):
- "logits": bilinear upsampling of the logits to the output size, then class
  selection (the paper's way; costs C full-size channels).
- "labels": class selection at the network's resolution, then nearest upsampling of
  the one-byte results (labels, colours, confidences): far cheaper on the CPU.
Class selection is `torch.max(dim=1)`, which gives argmax's indices ~2x faster on the
CPU (REFERENCE_NOTES). Confidence is the largest softmax probability, exp(max -
logsumexp), scaled to 0-255 without materializing the softmax, always computed at the
network's resolution and then upsampled like the mode's other outputs (bilinearly in
"logits" mode): at full resolution it would need fp32 copies of all C upsampled logit
channels plus temporaries every frame, 160 MB at 2048x1024 with 19 classes. Colours are a palette
lookup of the labels; the overlay blends them over the image. Every buffer is
allocated in the constructor and written with out= / in-place ops, so running it
allocates nothing and can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch

from swiftseg_ros.engine.kernels.edge_labels import applies as edges_apply
from swiftseg_ros.engine.kernels.edge_labels import edge_kernels
from swiftseg_ros.engine.palette import CpuColorLookup

aten = torch.ops.aten


def _as_nchw(image: torch.Tensor) -> torch.Tensor:
    """(H, W) or (H, W, 3) -> a (1, C, H, W) view of the same memory."""
    if image.dim() == 2:
        return image.view(1, 1, *image.shape)
    return image.permute(2, 0, 1).unsqueeze(0)


class NearestUpsampler:
    """Nearest upsampling of a fixed (h, w) or (h, w, 3) uint8 image into `out` (H, W[, 3]).

    Pixel centres are sampled (nearest-exact, aligned like the bilinear resize). For
    whole-number factors, the network's stride when it runs at the input size, that is
    block replication, done in two expanded copies (columns into an (h, W) buffer, then
    whole rows), which keeps the inner loops long: 0.03 ms for a 1024x512 label image on
    one core, where the resampling kernel takes 0.5 ms.
    """

    def __init__(self, source: torch.Tensor, out: torch.Tensor):
        self.source, self.out = source, out
        (h, w), (height, width) = source.shape[:2], out.shape[:2]
        self.blocks = height % h == 0 and width % w == 0
        if self.blocks:
            fy, fx, tail = height // h, width // w, tuple(source.shape[2:])
            rows = torch.empty((h, width, *tail), dtype=source.dtype, device=source.device)
            self._steps = (
                (rows.view(h, w, fx, *tail), source.view(h, w, 1, *tail).expand(h, w, fx, *tail)),
                (out.view(h, fy, width, *tail),
                 rows.view(h, 1, width, *tail).expand(h, fy, width, *tail)),
            )

    def run(self) -> None:
        if self.blocks:
            for target, expanded in self._steps:
                target.copy_(expanded)
        else:
            aten._upsample_nearest_exact2d.out(_as_nchw(self.source), list(self.out.shape[:2]),
                                               None, None, out=_as_nchw(self.out))


class Postprocessor:
    """Turns logits of a fixed shape into the requested device output buffers.

    `outputs` holds, after `run`, a (H, W) or (H, W, 3) uint8 tensor per requested
    output name. `overlay_source` is the image under the overlay at the output size:
    `(image, scale, offset)`, a (1, 3, H, W) RGB tensor and per channel the `scale` and
    `offset` that give `pixel = offset + scale * image` on 0-255 (the uint8 frame: 1
    and 0; the normalized network input: std and mean). `align_corners` is the network's
    (`model.align_corners`), so upsampled logits are those of `model(x)`.
    """

    def __init__(self, logits: torch.Tensor, outputs: tuple[str, ...], upsample: str,
                 output_hw: tuple[int, int], palette: torch.Tensor, overlay_alpha: float,
                 overlay_source=None, align_corners: bool = False):
        device = logits.device
        _, num_classes, net_h, net_w = logits.shape
        out_h, out_w = output_hw
        self.upsample = upsample
        self.align_corners = bool(align_corners)
        self.palette = palette
        want_color = "color" in outputs or "overlay" in outputs
        want_conf = "confidence" in outputs
        memory_format = (torch.channels_last
                         if logits.is_contiguous(memory_format=torch.channels_last)
                         and not logits.is_contiguous() else torch.contiguous_format)
        u8 = dict(dtype=torch.uint8, device=device)

        self.outputs: dict[str, torch.Tensor] = {}
        if "label" in outputs:
            self.outputs["label"] = torch.empty((out_h, out_w), **u8)
        if want_color:
            self.outputs["color"] = torch.empty((out_h, out_w, 3), **u8)
        if want_conf:
            self.outputs["confidence"] = torch.empty((out_h, out_w), **u8)
        if "overlay" in outputs:
            self.outputs["overlay"] = torch.empty((out_h, out_w, 3), **u8)

        # labels only (no confidence, which needs every upsampled score), on the CPU, at a
        # whole multiple of the network's size, pixel centres aligned (the blocks' geometry):
        # interpolate along class edges only, with the implementation the engine picks
        # (use_edge_kernel; torch's until then)
        self.edges = None
        self.edge_kernels: dict[str, object] = {}  # builders, by name (edge_kernels)
        self.edge_notes: dict[str, str] = {}
        self._edges_built: dict[str, object] = {}
        # full-size one-byte labels on the CPU in logits mode (the label output itself when
        # requested): what the edge selection writes and the colours are looked up from
        self.full_labels = (self.outputs.get("label", torch.empty((out_h, out_w), **u8))
                            if device.type == "cpu" and upsample == "logits"
                            and ("label" in outputs or want_color) else None)
        self._colors = (CpuColorLookup(palette, self.full_labels, self.outputs["color"])
                        if want_color and self.full_labels is not None else None)
        if self.full_labels is not None and not want_conf and not self.align_corners \
                and edges_apply(logits, (out_h, out_w)):
            self.edge_kernels, self.edge_notes = edge_kernels(logits, (out_h, out_w))
            self.use_edge_kernel("torch")
            self.upsampled = None
        elif upsample == "logits":
            self.upsampled = torch.empty((1, num_classes, out_h, out_w), dtype=logits.dtype,
                                         device=device).contiguous(memory_format=memory_format)
        else:
            self.upsampled = None
        if self.edges is None:
            sel_h, sel_w = (out_h, out_w) if upsample == "logits" else (net_h, net_w)
            self.max_values = torch.empty((1, sel_h, sel_w), dtype=logits.dtype, device=device)
            self.indices = torch.empty((1, sel_h, sel_w), dtype=torch.long, device=device)

        # labels mode: one-byte results at network resolution, nearest-upsampled
        if upsample == "labels" and "label" in outputs:
            self.net_label = torch.empty((net_h, net_w), **u8)
            self._label_up = NearestUpsampler(self.net_label, self.outputs["label"])
        if upsample == "labels" and want_color:
            self.net_color = torch.empty((net_h, net_w, 3), **u8)
            self._color_up = NearestUpsampler(self.net_color, self.outputs["color"])
        if want_conf:
            # logsumexp in fp32 even for fp16/bf16 logits: 2/255 needs more than 8 bits
            self.logits_fp32 = (None if logits.dtype == torch.float32 else torch.empty(
                (1, num_classes, net_h, net_w), dtype=torch.float32,
                device=device).contiguous(memory_format=memory_format))
            self.net_max = (None if upsample == "labels" else
                            torch.empty((1, net_h, net_w), dtype=logits.dtype, device=device))
            self.log_sum_exp = torch.empty((1, net_h, net_w), dtype=torch.float32, device=device)
            self.probability = torch.empty((1, net_h, net_w), dtype=torch.float32, device=device)
            if upsample == "labels":
                self.net_conf = torch.empty((net_h, net_w), **u8)
                self._conf_up = NearestUpsampler(self.net_conf, self.outputs["confidence"])
            else:
                self.conf_full = torch.empty((1, 1, out_h, out_w), dtype=torch.float32,
                                             device=device)
        if "overlay" in outputs:
            # blended in an interleaved fp32 buffer, row by row (see preprocess.py for why)
            image, scale, offset = overlay_source
            keep = 1.0 - overlay_alpha
            self._overlay_image = image
            self.blend = torch.empty((1, 3, out_h, out_w), dtype=torch.float32,
                                     device=device).contiguous(memory_format=torch.channels_last)
            self._blend_rows = self.blend.permute(0, 2, 3, 1).view(out_h, out_w * 3)
            # +0.5: the final copy_ to uint8 truncates, so this rounds to nearest
            self._overlay_offset = torch.tensor([o * keep + 0.5 for o in offset],
                                                dtype=torch.float32).repeat(out_w).to(device)
            self._overlay_scale = torch.tensor([s * keep for s in scale],
                                               dtype=torch.float32).repeat(out_w).to(device)
            self.alpha = float(overlay_alpha)

    def use_edge_kernel(self, name: str) -> None:
        """Select the edge selection's implementation: a key of `edge_kernels`, built on
        its first selection (which raises where it cannot be built: numba missing)."""
        kernel = self._edges_built.get(name)
        if kernel is None:
            kernel = self._edges_built[name] = self.edge_kernels[name]()
        self.edges = kernel

    def run(self, logits: torch.Tensor) -> None:
        if self.edges is not None:
            self.edges.run(logits, self.full_labels)
            scores = None
        elif self.upsample == "logits":
            scores = self.upsampled
            aten.upsample_bilinear2d.out(logits, list(scores.shape[-2:]), self.align_corners,
                                         None, None, out=scores)
            torch.max(scores, 1, out=(self.max_values, self.indices))
        else:
            scores = logits
            torch.max(scores, 1, out=(self.max_values, self.indices))
        outputs = self.outputs
        if self.edges is None and self.full_labels is not None:
            self.full_labels.copy_(self.indices[0])
        elif "label" in outputs and self.edges is None:
            if self.upsample == "logits":
                outputs["label"].copy_(self.indices[0])
            else:
                self.net_label.copy_(self.indices[0])
                self._label_up.run()
        if self._colors is not None:
            self._colors.run()
        elif "color" in outputs:
            self._colorize(outputs["color"])
        if "confidence" in outputs:
            self._confidence(logits, outputs["confidence"])
        if "overlay" in outputs:
            self._overlay(outputs["color"], outputs["overlay"])

    def _colorize(self, color: torch.Tensor) -> None:
        flat_labels = self.indices.view(-1)
        if self.upsample == "logits":
            torch.index_select(self.palette, 0, flat_labels, out=color.view(-1, 3))
        else:
            torch.index_select(self.palette, 0, flat_labels, out=self.net_color.view(-1, 3))
            self._color_up.run()

    def _confidence(self, logits: torch.Tensor, confidence: torch.Tensor) -> None:
        """Largest softmax probability at the network's resolution, then upsampled."""
        if self.net_max is None:
            max_values = self.max_values  # labels mode: selected at network resolution
        else:
            max_values = self.net_max
            torch.amax(logits, 1, out=max_values)
        if self.logits_fp32 is not None:
            self.logits_fp32.copy_(logits)
            logits = self.logits_fp32
        torch.logsumexp(logits, 1, out=self.log_sum_exp)
        prob = self.probability
        torch.sub(max_values, self.log_sum_exp, out=prob)
        prob.exp_().mul_(255.0).add_(0.5)  # +0.5 then truncation in copy_: round to nearest
        if self.upsample == "labels":
            self.net_conf.copy_(prob[0])
            self._conf_up.run()
        else:
            # bilinear weights sum to 1, so upsampling 255 p + 0.5 keeps the rounding
            aten.upsample_bilinear2d.out(prob.unsqueeze(1), list(self.conf_full.shape[-2:]),
                                         self.align_corners, None, None, out=self.conf_full)
            confidence.copy_(self.conf_full[0, 0])

    def _overlay(self, color: torch.Tensor, overlay: torch.Tensor) -> None:
        rows = self._blend_rows
        height, width = overlay.shape[:2]
        self.blend.copy_(self._overlay_image)  # any layout and dtype -> interleaved fp32
        torch.addcmul(self._overlay_offset, rows, self._overlay_scale, out=rows)
        rows.add_(color.view(height, width * 3), alpha=self.alpha).clamp_(0.0, 255.0)
        overlay.view(height, width * 3).copy_(rows)


class BatchPostprocessor:
    """A batch's post-processing: one Postprocessor per frame, each on its frame's slice
    of the batch's logits; `outputs` is a list of each frame's output buffers."""

    def __init__(self, frames: list[Postprocessor]):
        self.frames = frames
        self.outputs = [frame.outputs for frame in frames]
        self.edge_kernels = frames[0].edge_kernels
        self.edge_notes = frames[0].edge_notes

    def use_edge_kernel(self, name: str) -> None:
        for frame in self.frames:
            frame.use_edge_kernel(name)

    def run(self, logits: torch.Tensor) -> None:
        for index, frame in enumerate(self.frames):
            frame.run(logits[index:index + 1])
