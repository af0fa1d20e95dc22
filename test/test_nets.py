"""The networks: registry, shapes, size divisors, sizes vs the papers, BN fusion, Fast-SCNN heads."""

import copy
import functools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.nets import (
    NETWORKS,
    build_model,
    count_macs,
    count_parameters,
    fuse_conv_bn,
)
from swiftseg_ros.nets.mobilenetv2 import MobileNetV2Encoder
from swiftseg_ros.nets.resnet import ResNet18Encoder
from swiftseg_ros.nets.summary import main as models_main
from swiftseg_ros.nets.swiftnet import SPP_BN_MOMENTUM, BNReLUConv, SpatialPyramidPooling

NAMES = ["swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid", "fastscnn"]



@functools.cache
def eval_model(name, num_classes=3):
    """The inference form of a network, built once per test session: do not modify it."""
    torch.manual_seed(0)
    return build_model(name, num_classes, **NETWORKS[name].inference_options).eval()


def fresh_eval_model(name, num_classes=3):
    return copy.deepcopy(eval_model(name, num_classes))


def randomize_batch_norms(model):
    """Non-trivial running statistics and affine parameters, so that fusion has work to do."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


# registry

def test_registry_holds_the_four_contract_networks():
    assert list(NETWORKS) == NAMES


def test_unknown_network_is_a_config_error_listing_the_names():
    with pytest.raises(ConfigError, match="unknown network 'swiftnet_rn50'.*swiftnet_rn18, "
                                          "swiftnet_mnv2, swiftnet_rn18_pyramid, fastscnn"):
        build_model("swiftnet_rn50", 19)


@pytest.mark.parametrize("num_classes", [0, 1, 256, -3, 2.5, "19", True, None])
def test_bad_class_count_is_a_config_error(num_classes):
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("fastscnn", num_classes)


def test_unknown_option_is_a_config_error_naming_the_allowed_ones():
    with pytest.raises(ConfigError, match="no option width.*aux_heads .*dropout"):
        build_model("fastscnn", 19, width=2)
    with pytest.raises(ConfigError, match="swiftnet_mnv2 has no option aux_heads; its options: none"):
        build_model("swiftnet_mnv2", 19, aux_heads=False)


@pytest.mark.parametrize("name", NAMES)
def test_model_attributes_match_the_registry(name):
    model = build_model(name, 5)
    info = NETWORKS[name]
    assert (model.network_name, model.num_classes) == (name, 5)
    assert (model.size_divisor, model.output_stride) == (info.size_divisor, info.output_stride)


# shapes and sizes

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("height,width", [(64, 192), (128, 64)])
def test_forward_gives_logits_at_input_size_for_any_aspect(name, height, width):
    model = eval_model(name)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, height, width))
    assert logits.shape == (1, 3, height, width)


@pytest.mark.parametrize("name", NAMES)
def test_forward_logits_are_at_the_output_stride(name):
    model = eval_model(name)
    stride = model.output_stride
    with torch.no_grad():
        logits = model.forward_logits(torch.randn(1, 3, 64, 128))
    assert logits.shape == (1, 3, 64 // stride, 128 // stride)


@pytest.mark.parametrize("name", ["swiftnet_rn18", "fastscnn"])
def test_stride_32_networks_take_sides_that_are_odd_multiples_of_32(name):
    with torch.no_grad():
        assert eval_model(name)(torch.randn(1, 3, 96, 160)).shape == (1, 3, 96, 160)


@pytest.mark.parametrize("name,height,width", [
    ("swiftnet_rn18", 64, 100), ("swiftnet_mnv2", 48, 64), ("fastscnn", 60, 64),
    ("swiftnet_rn18_pyramid", 96, 128)])
def test_sides_not_multiple_of_the_divisor_are_a_clear_value_error(name, height, width):
    model = eval_model(name)
    with pytest.raises(ValueError, match=f"multiples of {model.size_divisor}, got {height}x{width}"):
        model(torch.randn(1, 3, height, width))


def test_non_image_tensor_is_a_value_error():
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        eval_model("fastscnn")(torch.randn(3, 64, 64))


@pytest.mark.parametrize("encoder_class,channels", [
    (ResNet18Encoder, (64, 128, 256, 512)), (MobileNetV2Encoder, (24, 32, 96, 320))])
def test_encoder_laterals_have_documented_channels_at_strides_4_to_32(encoder_class, channels):
    torch.manual_seed(0)
    with torch.no_grad():
        laterals = encoder_class().eval()(torch.randn(1, 3, 64, 128))
    assert [tuple(t.shape) for t in laterals] == [
        (1, c, 64 // s, 128 // s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)]


def test_resnet_laterals_are_pre_relu_sums():
    torch.manual_seed(0)
    with torch.no_grad():
        laterals = ResNet18Encoder().eval()(torch.randn(1, 3, 64, 128))
    assert all(lateral.min() < 0 for lateral in laterals)


def test_resnet_laterals_after_relu_reproduce_the_authors_code():
    torch.manual_seed(0)
    with torch.no_grad():
        laterals = ResNet18Encoder(lateral_after_relu=True).eval()(torch.randn(1, 3, 64, 128))
    assert all(lateral.min() >= 0 for lateral in laterals)


def test_mobilenet_encoder_stops_before_features_18():
    encoder = MobileNetV2Encoder()
    assert len(encoder.features) == 18
    assert not any(key.startswith("features.18.") for key in encoder.state_dict())


@pytest.mark.parametrize("feature_size,grids", [
    ((32, 64), [(8, 16), (4, 8), (2, 4)]), ((64, 32), [(8, 4), (4, 2), (2, 1)])])
def test_spp_pools_to_grids_that_follow_the_aspect_ratio(monkeypatch, feature_size, grids):
    pooled = []
    original = F.adaptive_avg_pool2d

    def recording_pool(x, output_size):
        pooled.append(tuple(output_size))
        return original(x, output_size)

    monkeypatch.setattr(F, "adaptive_avg_pool2d", recording_pool)
    spp = SpatialPyramidPooling(16).eval()
    with torch.no_grad():
        out = spp(torch.randn(1, 16, *feature_size))
    assert pooled == grids
    assert out.shape == (1, 128, *feature_size)


def test_spp_batch_norms_use_the_authors_slow_momentum():
    spp = SpatialPyramidPooling(512)
    momenta = {m.momentum for m in spp.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {SPP_BN_MOMENTUM} == {0.005}


def test_pyramid_level_one_equals_a_bilinear_half_size_image():
    image = torch.randn(1, 3, 64, 128)
    bilinear = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)
    torch.testing.assert_close(F.avg_pool2d(image, 2), bilinear)


# parameter and multiply-add counts (19 classes, 2048x1024) vs the papers

@pytest.mark.parametrize("name,tolerance", [
    ("swiftnet_rn18", 0.03), ("swiftnet_mnv2", 0.03), ("swiftnet_rn18_pyramid", 0.10),
    ("fastscnn", 0.03)])
def test_parameter_count_is_close_to_the_paper(name, tolerance):
    params = count_parameters(eval_model(name, num_classes=19))
    assert params / 1e6 == pytest.approx(NETWORKS[name].paper_params_m, rel=tolerance)


@pytest.mark.parametrize("name", ["swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid"])
def test_multiply_adds_at_2048x1024_are_within_10_percent_of_the_paper(name):
    macs = count_macs(eval_model(name, num_classes=19), 1024, 2048)
    assert macs / 1e9 == pytest.approx(NETWORKS[name].paper_gmacs, rel=0.10)


def test_swiftnet_rn18_has_the_authors_code_size():
    model = eval_model("swiftnet_rn18", num_classes=19)
    assert round(count_parameters(model) / 1e3) == 11797
    assert round(count_macs(model, 1024, 2048) / 1e8) == 1036


def test_fastscnn_aux_heads_are_training_only_parameters():
    with_aux = count_parameters(build_model("fastscnn", 19))
    without = count_parameters(build_model("fastscnn", 19, aux_heads=False))
    assert with_aux - without == 2 * 19 * 33 + (64 + 128) * 32 * 9 + 2 * 2 * 32


def test_multiply_adds_scale_with_the_pixel_count():
    model = eval_model("fastscnn", num_classes=19)
    assert count_macs(model, 512, 1024) == pytest.approx(count_macs(model, 256, 512) * 4, rel=1e-3)


# conv -> BN fusion

@pytest.mark.parametrize("name", NAMES)
def test_fused_and_unfused_outputs_agree(name):
    model = randomize_batch_norms(fresh_eval_model(name))
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        reference = model(x)
        fused = fuse_conv_bn(copy.deepcopy(model))(x)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


@pytest.mark.parametrize("name", NAMES)
def test_fusion_keeps_only_the_decoder_pre_activation_batch_norms(name):
    model = fuse_conv_bn(fresh_eval_model(name))
    kept = {id(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    pre_activation = {id(m.norm) for m in model.modules() if isinstance(m, BNReLUConv)}
    assert kept == pre_activation
    assert (len(kept) == 0) == (name == "fastscnn")


def test_fusing_twice_changes_nothing():
    model = fuse_conv_bn(randomize_batch_norms(fresh_eval_model("swiftnet_mnv2")))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        once = model(x)
        twice = fuse_conv_bn(model)(x)
    torch.testing.assert_close(twice, once, rtol=0, atol=0)


def test_fused_model_runs_channels_last():
    model = randomize_batch_norms(fresh_eval_model("swiftnet_rn18"))
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        reference = model(x)
        fast = fuse_conv_bn(copy.deepcopy(model)).to(memory_format=torch.channels_last)
        out = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


# Fast-SCNN specifics

def test_fastscnn_training_returns_main_and_two_aux_logits_at_input_size():
    torch.manual_seed(0)
    model = build_model("fastscnn", 3).train()
    logits, aux = model(torch.randn(2, 3, 64, 128))
    assert logits.shape == (2, 3, 64, 128)
    assert [a.shape for a in aux] == [(2, 3, 64, 128)] * 2


def test_fastscnn_eval_returns_main_logits_only():
    output = build_model("fastscnn", 3).eval()(torch.randn(1, 3, 64, 64))
    assert isinstance(output, torch.Tensor) and output.shape == (1, 3, 64, 64)


def test_fastscnn_without_aux_heads_returns_logits_in_training():
    model = build_model("fastscnn", 3, aux_heads=False).train()
    assert isinstance(model(torch.randn(2, 3, 64, 64)), torch.Tensor)
    assert not any(k.startswith("aux") for k in model.state_dict())


def test_fastscnn_dropout_is_configurable_and_active_only_in_training():
    torch.manual_seed(0)
    model = build_model("fastscnn", 3, dropout=0.5, aux_heads=False)
    # batch 2: in training, the 1x1 pyramid-pooling level needs more than one value per channel
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model.forward_logits(x), model.forward_logits(x))


def test_fastscnn_bad_dropout_is_a_config_error():
    with pytest.raises(ConfigError, match=r"dropout must be a number in \[0, 1\), got 1.5"):
        build_model("fastscnn", 3, dropout=1.5)


@pytest.mark.parametrize("option,value,allowed", [
    ("align_corners", "yes", "true or false"), ("depthwise_relu", 1, "true or false"),
    ("fusion_dilation", 2, r"4 \(the paper\) or 1"), ("first_conv_padding", 2, r"1 \(the paper\) or 0")])
def test_fastscnn_bad_port_option_is_a_config_error_saying_what_is_allowed(option, value, allowed):
    with pytest.raises(ConfigError, match=f"fastscnn {option} must be {allowed}"):
        build_model("fastscnn", 3, **{option: value})


def test_fastscnn_port_variant_keeps_the_output_stride_and_state_dict_keys():
    paper = build_model("fastscnn", 3, aux_heads=False)
    port = build_model("fastscnn", 3, aux_heads=False, align_corners=True, depthwise_relu=True,
                       fusion_dilation=1, first_conv_padding=0).eval()
    assert {k: v.shape for k, v in paper.state_dict().items()} == \
        {k: v.shape for k, v in port.state_dict().items()}
    assert port.forward_logits(torch.randn(1, 3, 96, 160)).shape == (1, 3, 12, 20)
    assert port.align_corners and not paper.align_corners


def test_fastscnn_fusion_depthwise_conv_is_dilated_by_the_upsampling_factor():
    depthwise = build_model("fastscnn", 3).fusion.lower[0][0]
    assert (depthwise.groups, depthwise.dilation, depthwise.padding) == (128, (4, 4), (4, 4))


# swiftseg-models

def test_models_summary_lists_every_network_with_counts(tmp_path, capsys):
    out = tmp_path / "models.json"
    assert models_main(["--no-time", "--size", "128x64", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in NAMES)
    rows = json.loads(out.read_text())["networks"]
    assert [row["network"] for row in rows] == NAMES
    assert rows[0]["params"] == count_parameters(eval_model("swiftnet_rn18", 19))
    assert "forward_ms" not in rows[0]


def test_models_summary_times_a_network(tmp_path):
    out = tmp_path / "models.json"
    assert models_main(["--network", "fastscnn", "--size", "64x64", "--iters", "1",
                        "--threads", "1", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["networks"][0]
    assert row["forward_ms"] > 0 and row["forward_logits_ms"] > 0


def test_models_summary_refuses_a_size_the_pyramid_cannot_take():
    with pytest.raises(ConfigError, match="swiftnet_rn18_pyramid needs sides that are multiples of 64"):
        models_main(["--no-time", "--size", "480x352"])


def test_models_summary_refuses_a_malformed_size():
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        models_main(["--size", "1024by512"])
