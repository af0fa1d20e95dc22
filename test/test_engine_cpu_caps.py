"""The CPU capability record: native bf16 only where the CPU has it, and why not otherwise."""

import pytest
import torch

from swiftseg_ros.engine import EngineConfig, SegmentationEngine, cpu_caps
from swiftseg_ros.errors import ConfigError

AVX2_EPYC = {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"}
ZEN4 = AVX2_EPYC | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}
GRAVITON3 = {"fp", "asimd", "asimddp", "sve", "bf16", "i8mm"}
CORTEX_A78 = {"fp", "asimd", "asimddp"}


def caps(flags, arch="x86_64", onednn_bf16=True):
    return cpu_caps.capabilities_from("test CPU", arch, flags, onednn=True,
                                      onednn_bf16=onednn_bf16, torch_capability="AVX2")


def test_avx2_only_cpu_has_no_native_bf16_and_says_what_is_missing():
    record = caps(AVX2_EPYC, onednn_bf16=False)
    assert not record.native_bf16
    assert "AVX512-BF16, AMX-BF16 or AVX-NE-CONVERT" in record.bf16_reason
    assert record.flags == ("avx2", "fma")


@pytest.mark.parametrize("flags", [ZEN4, SAPPHIRE_RAPIDS], ids=["zen4", "sapphire-rapids"])
def test_avx512_bf16_or_amx_is_native_bf16(flags):
    record = caps(flags)
    assert record.native_bf16
    assert "avx512_bf16" in record.flags


def test_bf16_flag_without_onednn_bf16_path_is_not_native():
    record = caps(ZEN4, onednn_bf16=False)
    assert not record.native_bf16 and "oneDNN" in record.bf16_reason


@pytest.mark.parametrize("flags, native", [(GRAVITON3, True), (CORTEX_A78, False)],
                         ids=["graviton3", "cortex-a78"])
def test_aarch64_bf16_follows_the_bf16_feature(flags, native):
    record = caps(flags, arch="aarch64")
    assert record.native_bf16 is native
    assert "asimd" in record.flags


def test_refusal_is_one_line_naming_the_cpu_and_fp32():
    with pytest.raises(ConfigError) as error:
        caps(AVX2_EPYC, onednn_bf16=False).require_bf16()
    message = str(error.value)
    assert "\n" not in message
    assert "test CPU" in message and "use precision fp32" in message


def test_this_machine_record_matches_what_torch_can_run():
    record = cpu_caps.detect()
    assert record.as_dict()["model"] and isinstance(record.as_dict()["flags"], list)
    if record.native_bf16:
        conv = torch.nn.Conv2d(4, 4, 3, padding=1).to(torch.bfloat16)
        x = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)
        torch.ops.aten.mkldnn_convolution(x, conv.weight, conv.bias, [1, 1], [1, 1], [1, 1], 1)


def test_engine_refuses_bf16_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(cpu_caps, "detect", lambda: caps(AVX2_EPYC, onednn_bf16=False))
    with pytest.raises(ConfigError, match="precision: bf16 needs a CPU with native bf16.*fp32"):
        SegmentationEngine(EngineConfig(network="fastscnn", precision="bf16"))


@pytest.mark.skipif(cpu_caps.detect().native_bf16, reason="this CPU has native bf16")
def test_engine_refuses_bf16_on_this_cpu():
    with pytest.raises(ConfigError, match=cpu_caps.detect().bf16_reason):
        SegmentationEngine(EngineConfig(network="fastscnn", precision="bf16"))
