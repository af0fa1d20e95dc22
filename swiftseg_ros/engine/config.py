"""EngineConfig: every setting of the inference engine, checked when it is made.

Each wrong value is a `ConfigError` in one line that names the field, the value and
what is allowed. Checks that need the machine (is CUDA there?) or the network (its
size divisor, its checkpoint's classes) happen when the engine is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from swiftseg_ros.errors import ConfigError

OUTPUTS = ("label", "color", "confidence", "overlay")
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
UPSAMPLE_MODES = ("logits", "labels")
OUTPUT_SIZES = ("input", "network")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
# Input normalization on 0-255 RGB for random-weight builds: the Cityscapes statistics
# SwiftNet uses (REFERENCE_NOTES), the same defaults as swiftseg_ros.checkpoint.make_meta.
DEFAULT_MEAN = (73.15, 82.90, 72.3)
DEFAULT_STD = (47.67, 48.49, 47.73)
DEFAULT_NUM_CLASSES = 19
# Labels are published as mono8 and 255 is the ignore label (as in swiftseg_ros.nets).
MAX_CLASSES = 255

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass
class EngineConfig:
    """Settings of a `SegmentationEngine` (DESIGN.md, engine contract).

    Give `weights` (a checkpoint; its network, classes, palette and mean/std win) or
    `network` (a name, random weights: for benchmarks and tests). Sizes are (width,
    height) like the camera's. `inference_size=None` runs the network at the input
    size rounded to multiples of the network's size divisor (aspect by resizing, never
    by cropping). `output_size="network"` gives outputs at the inference size.
    `backend`: "torch", "onnxruntime" (fp32; the graph is exported and cached in
    `cache_dir`, see engine/graph_cache.py), "openvino" (the same graph, fp32 or bf16) or
    "auto" (every installed one timed at prepare, the fastest kept). `channels_last` and
    `onednn_convs` say which candidates may be timed
    on the CPU: channels_last besides contiguous, every convolution through oneDNN
    besides PyTorch's per-call kernel choice (engine/kernels/cpu_kernels.py); the faster
    working one is kept. `winograd` (CPU, fp32): the chosen pass is timed once more
    with its wide 3x3 convolutions as Winograd F(4x4, 3x3) (engine/kernels/winograd.py), and
    kept that way if faster.
    `warmup_iters` eager passes run per new input size (the first, a forward, shapes the
    post-processing; after one full pass more the next frame runs at its steady time on
    the CPU, docs/benchmarks.md "Second configure"); `stats_window` recent frames
    feed the percentiles of `stats()`. `tf32` (CUDA, fp32 only) lets cuDNN and cuBLAS
    round fp32 operands to TF32 (10-bit mantissa) on Ampere and newer: faster, and no
    longer fp32 arithmetic, so it is off unless asked for. `plan_cache` prepared plans
    (buffers and CUDA graph per input size, outputs and overlay alpha) are kept, so a
    camera or subscriber change back to an earlier setting costs no re-plan; at least 2,
    since the pipelined mode alternates two plans.
    `precision="auto"`: the precisions the device runs natively (fp16 on CUDA, bf16 on a
    CPU with native bf16) are candidates beside fp32, and the fastest measured pass is
    kept. `openvino_device` is the OpenVINO device of backend openvino ("CPU", "GPU",
    "NPU", as OpenVINO names them; engine/backends/openvino.py). What a prepare measured
    is cached on disk under a key of everything that can change it
    (engine/choice_cache.py); `retune` measures afresh (and stores the new answer).
    """

    network: str | None = None
    weights: str | Path | None = None
    num_classes: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    inference_size: tuple[int, int] | None = None
    outputs: tuple[str, ...] = ("label", "color")
    upsample: str = "labels"
    output_size: str = "input"
    cuda_graphs: bool = True
    threads: int | None = None
    max_input_size: tuple[int, int] = (4096, 4096)
    overlay_alpha: float = 0.5
    palette: list | None = None
    channels_last: bool = True
    onednn_convs: bool = True
    winograd: bool = True
    backend: str = "torch"
    cache_dir: str | Path | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    warmup_iters: int = 2
    stats_window: int = 1000
    tf32: bool = False
    plan_cache: int = 4
    openvino_device: str = "CPU"
    retune: bool = False

    def __post_init__(self) -> None:
        if self.network is None and self.weights is None:
            raise ConfigError("engine: give weights (a checkpoint file) or network (a name "
                              "for random weights)")
        if self.network is not None and (not isinstance(self.network, str) or not self.network):
            raise ConfigError(f"network: {self.network!r} is not a network name")
        if self.weights is not None and not str(self.weights).strip():
            raise ConfigError("weights: empty path; give a checkpoint file (.pt) or leave unset")
        if self.num_classes is not None:
            if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                    or not 2 <= self.num_classes <= MAX_CLASSES:
                raise ConfigError(f"num_classes: {self.num_classes!r}, expected an int in "
                                  f"2-{MAX_CLASSES} (labels are one byte, 255 = ignore)")
        self.device = str(self.device).strip().lower()
        if not _DEVICE_RE.match(self.device):
            raise ConfigError(f"device: {self.device!r}, expected cpu, cuda or cuda:N")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r}, expected one of "
                              f"{', '.join(PRECISIONS)}")
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError("precision: fp16 is not supported on the CPU; use bf16 (on CPUs "
                              "with native bf16: AVX512-BF16, AMX) or fp32")
        if self.inference_size is not None:
            self.inference_size = _size("inference_size", self.inference_size)
        self.max_input_size = _size("max_input_size", self.max_input_size)
        self.outputs = check_outputs(self.outputs)
        if self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample: {self.upsample!r}, expected 'logits' (bilinear "
                              f"logits, the paper's) or 'labels' (nearest labels, cheaper)")
        if self.output_size not in OUTPUT_SIZES:
            raise ConfigError(f"output_size: {self.output_size!r}, expected 'input' or "
                              f"'network'")
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"cuda_graphs: {self.cuda_graphs!r}, expected true or false")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: {self.backend!r}, expected one of "
                              f"{', '.join(BACKENDS)}")
        if not isinstance(self.onednn_convs, bool):
            raise ConfigError(f"onednn_convs: {self.onednn_convs!r}, expected true or false")
        if not isinstance(self.winograd, bool):
            raise ConfigError(f"winograd: {self.winograd!r}, expected true or false")
        if not isinstance(self.retune, bool):
            raise ConfigError(f"retune: {self.retune!r}, expected true or false")
        if not isinstance(self.openvino_device, str) or not self.openvino_device.strip():
            raise ConfigError(f"openvino_device: {self.openvino_device!r}, expected an "
                              f"OpenVINO device name such as CPU, GPU or NPU")
        self.openvino_device = self.openvino_device.strip()
        if not isinstance(self.tf32, bool):
            raise ConfigError(f"tf32: {self.tf32!r}, expected true or false")
        if isinstance(self.plan_cache, bool) or not isinstance(self.plan_cache, int) \
                or self.plan_cache < 2:
            raise ConfigError(f"plan_cache: {self.plan_cache!r}, expected an int >= 2 (plans "
                              f"kept per input size and outputs)")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"channels_last: {self.channels_last!r}, expected true or false")
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads: {self.threads!r}, expected a positive int or unset")
        if isinstance(self.overlay_alpha, bool) or not isinstance(self.overlay_alpha, int | float) \
                or not 0.0 <= self.overlay_alpha <= 1.0:
            raise ConfigError(f"overlay_alpha: {self.overlay_alpha!r}, expected a number in 0-1")
        self.mean = _triple("mean", self.mean, positive=False)
        self.std = _triple("std", self.std, positive=True)
        if isinstance(self.warmup_iters, bool) or not isinstance(self.warmup_iters, int) \
                or self.warmup_iters < 1:
            raise ConfigError(f"warmup_iters: {self.warmup_iters!r}, expected an int >= 1")
        if isinstance(self.stats_window, bool) or not isinstance(self.stats_window, int) \
                or self.stats_window < 1:
            raise ConfigError(f"stats_window: {self.stats_window!r}, expected an int >= 1 "
                              f"(frames kept for percentiles)")

    def replace(self, **changes) -> EngineConfig:
        """A copy with some fields changed, checked again."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return EngineConfig(**values)


def check_outputs(outputs) -> tuple[str, ...]:
    """The requested outputs as a tuple in canonical order, or ConfigError."""
    if isinstance(outputs, str):
        outputs = [o for o in outputs.replace(" ", "").split(",") if o]
    try:
        requested = list(outputs)
    except TypeError as exc:
        raise ConfigError(f"outputs: {outputs!r}, expected a list of {', '.join(OUTPUTS)}") \
            from exc
    unknown = [o for o in requested if o not in OUTPUTS]
    if unknown:
        raise ConfigError(f"outputs: unknown {', '.join(map(repr, unknown))}; allowed: "
                          f"{', '.join(OUTPUTS)}")
    if not requested:
        raise ConfigError(f"outputs: empty; ask for at least one of {', '.join(OUTPUTS)}")
    return tuple(o for o in OUTPUTS if o in requested)


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """'1024x512' -> (1024, 512), as (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise ConfigError(f"{what}: {text!r}, expected WIDTHxHEIGHT such as 1024x512")
    return _size(what, (int(match.group(1)), int(match.group(2))))


def _size(name: str, value) -> tuple[int, int]:
    if isinstance(value, str):
        return parse_size(value, name)
    try:
        width, height = value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {value!r}, expected (width, height)") from exc
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (width, height)):
        raise ConfigError(f"{name}: {value!r}, expected two positive ints (width, height)")
    return int(width), int(height)


def _triple(name: str, value, positive: bool):
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {value!r}, expected 3 numbers (R, G, B on 0-255)") from exc
    if len(values) != 3 or (positive and min(values) <= 0):
        limit = ", each > 0" if positive else ""
        raise ConfigError(f"{name}: {value!r}, expected 3 numbers (R, G, B on 0-255{limit})")
    return values
