"""EngineConfig checks: every wrong value is a one-line ConfigError naming the field."""

import pytest
import torch

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.engine.config import parse_size
from swiftseg_ros.errors import ConfigError


def test_defaults_are_valid_and_canonical():
    config = EngineConfig(network="fastscnn")
    assert config.device == "cpu" and config.precision == "fp32"
    assert config.outputs == ("label", "color") and config.upsample == "labels"
    assert config.cuda_graphs is True and config.channels_last is True


def test_outputs_are_put_in_canonical_order():
    assert EngineConfig(network="fastscnn", outputs="overlay,label").outputs == (
        "label", "overlay")


@pytest.mark.parametrize("changes, field", [
    ({"network": None}, "weights"),
    ({"device": "gpu"}, "device"),
    ({"device": "cuda:x"}, "device"),
    ({"precision": "int8"}, "precision"),
    ({"outputs": ("label", "depth")}, "outputs"),
    ({"outputs": ()}, "outputs"),
    ({"upsample": "bicubic"}, "upsample"),
    ({"output_size": "half"}, "output_size"),
    ({"inference_size": (1024,)}, "inference_size"),
    ({"inference_size": (0, 512)}, "inference_size"),
    ({"inference_size": "1024by512"}, "inference_size"),
    ({"max_input_size": (-1, 10)}, "max_input_size"),
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": 300}, "num_classes"),
    ({"threads": 0}, "threads"),
    ({"overlay_alpha": 1.5}, "overlay_alpha"),
    ({"cuda_graphs": "yes"}, "cuda_graphs"),
    ({"mean": (1, 2)}, "mean"),
    ({"std": (1, 0, 1)}, "std"),
    ({"stats_window": 0}, "stats_window"),
])
def test_wrong_value_names_the_field(changes, field):
    values = {"network": "fastscnn", **changes}
    with pytest.raises(ConfigError, match=field) as info:
        EngineConfig(**values)
    assert "\n" not in str(info.value)


def test_fp16_on_cpu_points_to_bf16_or_fp32():
    with pytest.raises(ConfigError, match="bf16.*fp32"):
        EngineConfig(network="fastscnn", precision="fp16")


def test_bf16_on_cpu_is_allowed():
    assert EngineConfig(network="fastscnn", precision="bf16").precision == "bf16"


def test_size_text_is_width_by_height():
    assert parse_size("1024x512") == (1024, 512)
    assert EngineConfig(network="fastscnn", inference_size="640x480").inference_size == (640, 480)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="device: cuda.*use device cpu"):
        SegmentationEngine(EngineConfig(network="fastscnn", device="cuda"))


def test_inference_size_must_be_a_multiple_of_the_size_divisor():
    with pytest.raises(ConfigError, match="multiple of 64.*128x64"):
        SegmentationEngine(EngineConfig(network="swiftnet_rn18_pyramid", inference_size=(100, 60)))


def test_unknown_network_lists_the_known_ones():
    with pytest.raises(ConfigError, match="fastscnn"):
        SegmentationEngine(EngineConfig(network="unet"))


def test_replace_checks_again():
    config = EngineConfig(network="fastscnn")
    assert config.replace(precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        config.replace(precision="fp8")
