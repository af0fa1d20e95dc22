"""What this CPU can do, as far as the engine's kernel choices care: a capability record.

The engine routes no work to a kernel that raises on the machine at hand (DESIGN.md,
engine contract). oneDNN's bf16 convolution, for one, raises on an AVX2-only x86 CPU
("bf16 path needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq"),
and PyTorch's own bf16 convolutions there emulate bf16 an order of magnitude slower
than fp32. So `precision: bf16` is offered only where the CPU computes bf16 natively:
AVX512-BF16, AMX-BF16 or AVX-NE-CONVERT on x86, the BF16 extension on aarch64 (Graviton
3, Neoverse V1/N2; not the Cortex-A78AE of Jetson Orin nor the A76 of a Raspberry Pi 5),
and only where oneDNN takes its bf16 path (torch's own check).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# x86 flags (as /proc/cpuinfo spells them) and aarch64 features that the choices or the
# reader of a benchmark care about
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx_vnni", "avx_ne_convert", "amx_tile", "amx_bf16", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "sve", "sve2", "bf16", "i8mm")
X86_NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
ARM_NATIVE_BF16 = ("bf16",)


@dataclass(frozen=True)
class CpuCapabilities:
    """The record `stats()["cpu"]` and the bench JSON carry."""

    model: str
    arch: str
    flags: tuple[str, ...]
    torch_capability: str
    onednn: bool
    onednn_bf16: bool
    native_bf16: bool
    bf16_reason: str

    def as_dict(self) -> dict:
        record = asdict(self)
        record["flags"] = list(self.flags)
        return record

    def flags_line(self) -> str:
        """'AMD EPYC 7B13 (x86_64): avx2 fma' for logs and docs."""
        return f"{self.model} ({self.arch}): {' '.join(self.flags) or 'none of interest'}"

    def require_bf16(self) -> None:
        """Raise ConfigError in one line unless bf16 runs natively here."""
        if not self.native_bf16:
            from swiftseg_ros.errors import ConfigError

            raise ConfigError(f"precision: bf16 needs a CPU with native bf16, but this "
                              f"{self.model} {self.bf16_reason}; use precision fp32")


def read_cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; ('', set()) where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def capabilities_from(model: str, arch: str, all_flags: set[str], *, onednn: bool,
                      onednn_bf16: bool, torch_capability: str) -> CpuCapabilities:
    """The record for a CPU described by its flags (separate from detection, for tests)."""
    arm = arch.lower() in ("aarch64", "arm64")
    relevant = ARM_FLAGS if arm else X86_FLAGS
    flags = tuple(f for f in relevant if f in all_flags)
    native = [f for f in (ARM_NATIVE_BF16 if arm else X86_NATIVE_BF16) if f in all_flags]
    wanted = "BF16 (aarch64)" if arm else "AVX512-BF16, AMX-BF16 or AVX-NE-CONVERT"
    if not native:
        reason = f"has no {wanted}"
    elif not onednn:
        reason = f"has {native[0]} but this torch is built without oneDNN"
    elif not onednn_bf16:
        reason = f"has {native[0]} but oneDNN's bf16 path refuses it"
    else:
        reason = f"has {', '.join(native)} and oneDNN's bf16 path"
    return CpuCapabilities(
        model=model or platform.processor() or "unknown CPU", arch=arch, flags=flags,
        torch_capability=torch_capability, onednn=onednn, onednn_bf16=onednn_bf16,
        native_bf16=bool(native) and onednn and onednn_bf16, bf16_reason=reason)


@functools.cache
def detect() -> CpuCapabilities:
    """This machine's record (read once per process)."""
    model, flags = read_cpuinfo()
    onednn = bool(torch.backends.mkldnn.is_available())
    try:
        onednn_bf16 = onednn and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older torch without the check
        onednn_bf16 = False
    return capabilities_from(model, platform.machine(), flags, onednn=onednn,
                             onednn_bf16=onednn_bf16,
                             torch_capability=str(torch.backends.cpu.get_cpu_capability()))
