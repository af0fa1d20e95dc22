"""swiftseg-import --from fastscnn-tramac: the Fast-SCNN port's Cityscapes model, exactly.

The port's weights (github.com/Tramac/Fast-SCNN-pytorch, `weights/fast_scnn_citys.pth`)
cannot be downloaded here, so the tests write out its state_dict as data: every conv,
BatchNorm and bias of its `FastSCNN` (models/fast_scnn.py) under its own key names with
its shapes, filled with random values and random BatchNorm statistics. `port_forward`
re-states the port's eval forward with torch.nn.functional over that state_dict and
those keys (the test's own code; the project holds none of the port's). The imported
checkpoint must give the same logits (to float rounding) and the same labels, in eager
PyTorch and through the engine (conv-BN folding, oneDNN convolutions).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swiftseg_ros.checkpoint import load_checkpoint, load_model, make_meta, save_checkpoint
from swiftseg_ros.classes import load_class_set
from swiftseg_ros.cli import _run
from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.nets import build_model
from swiftseg_ros.trainer.fastscnn_port import PORT_OPTIONS, ours_to_port, port_to_ours
from swiftseg_ros.trainer.importers import main

CLASSES = 19
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the port's global feature extractor: (channels, blocks, first stride), expansion 6
PORT_BOTTLENECKS = ((64, 3, 2), (96, 3, 2), (128, 3, 1))
PORT_PYRAMID_BINS = (1, 2, 3, 6)
# REFERENCE_NOTES: the port has 1.138M parameters for 19 classes
PORT_PARAMETERS_M = 1.138
PAPER_OPTIONS = {"align_corners": False, "depthwise_relu": False, "fusion_dilation": 4,
                 "first_conv_padding": 1}


# ---------------------------------------------------------------------------------------
# The port's FastSCNN state_dict: conv weight shapes, BatchNorm widths, conv biases.


def _port_dsconv(convs, norms, prefix, cin, cout):
    # _DSConv: conv.0 depthwise 3x3, conv.1 BN, conv.2 ReLU, conv.3 1x1, conv.4 BN, conv.5 ReLU
    convs[f"{prefix}.conv.0"] = (cin, 1, 3, 3)
    norms[f"{prefix}.conv.1"] = cin
    convs[f"{prefix}.conv.3"] = (cout, cin, 1, 1)
    norms[f"{prefix}.conv.4"] = cout


def port_shapes(num_classes=CLASSES, aux=False):
    """(convs, norms, biases) of the port's model, in its naming."""
    convs = {"learning_to_downsample.conv.conv.0": (32, 3, 3, 3)}
    norms = {"learning_to_downsample.conv.conv.1": 32}
    _port_dsconv(convs, norms, "learning_to_downsample.dsconv1", 32, 48)
    _port_dsconv(convs, norms, "learning_to_downsample.dsconv2", 48, 64)
    cin = 64
    for stage, (cout, blocks, _) in enumerate(PORT_BOTTLENECKS, start=1):
        for block in range(blocks):
            p, hidden = f"global_feature_extractor.bottleneck{stage}.{block}.block", cin * 6
            convs[f"{p}.0.conv.0"] = (hidden, cin, 1, 1)
            norms[f"{p}.0.conv.1"] = hidden
            convs[f"{p}.1.conv.0"] = (hidden, 1, 3, 3)
            norms[f"{p}.1.conv.1"] = hidden
            convs[f"{p}.2"] = (cout, hidden, 1, 1)
            norms[f"{p}.3"] = cout
            cin = cout
    for level in range(1, 5):
        convs[f"global_feature_extractor.ppm.conv{level}.conv.0"] = (32, 128, 1, 1)
        norms[f"global_feature_extractor.ppm.conv{level}.conv.1"] = 32
    convs["global_feature_extractor.ppm.out.conv.0"] = (128, 256, 1, 1)
    norms["global_feature_extractor.ppm.out.conv.1"] = 128
    convs["feature_fusion.dwconv.conv.0"] = (128, 1, 3, 3)
    norms["feature_fusion.dwconv.conv.1"] = 128
    convs["feature_fusion.conv_lower_res.0"] = (128, 128, 1, 1)
    norms["feature_fusion.conv_lower_res.1"] = 128
    convs["feature_fusion.conv_higher_res.0"] = (128, 64, 1, 1)
    norms["feature_fusion.conv_higher_res.1"] = 128
    _port_dsconv(convs, norms, "classifier.dsconv1", 128, 128)
    _port_dsconv(convs, norms, "classifier.dsconv2", 128, 128)
    convs["classifier.conv.1"] = (num_classes, 128, 1, 1)
    # nn.Conv2d's default bias=True where the port does not say bias=False
    biases = {"feature_fusion.conv_lower_res.0.bias": 128,
              "feature_fusion.conv_higher_res.0.bias": 128,
              "classifier.conv.1.bias": num_classes}
    if aux:  # auxlayer: conv 3x3 (no bias), BN, ReLU, Dropout, conv 1x1
        convs["auxlayer.0"] = (32, 64, 3, 3)
        norms["auxlayer.1"] = 32
        convs["auxlayer.4"] = (num_classes, 32, 1, 1)
        biases["auxlayer.4.bias"] = num_classes
    return convs, norms, biases


def port_state_dict(num_classes=CLASSES, aux=False, seed=0):
    """Random values under the port's keys: He-scaled convs, random BN statistics."""
    g = torch.Generator().manual_seed(seed)
    convs, norms, biases = port_shapes(num_classes, aux)
    state = {}
    for name, shape in convs.items():
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"{name}.weight"] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    for name, channels in biases.items():
        state[name] = torch.randn(channels, generator=g) * 0.2
    for name, channels in norms.items():
        sign = torch.randint(0, 2, (channels,), generator=g) * 2 - 1
        state[f"{name}.weight"] = sign * (torch.rand(channels, generator=g) + 0.5)
        state[f"{name}.bias"] = torch.randn(channels, generator=g) * 0.2
        state[f"{name}.running_mean"] = torch.randn(channels, generator=g) * 0.5
        state[f"{name}.running_var"] = torch.rand(channels, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)
    return state


def port_forward(sd, image):
    """The port's eval forward on a 0-255 RGB (N, 3, H, W) image: its logits at the image size.

    ToTensor + Normalize(ImageNet) -> learning to downsample (first conv unpadded, ReLU
    after every depthwise conv) -> bottlenecks -> pyramid pooling (align_corners=True)
    -> fusion (x4 upsampling, undilated depthwise conv, biased 1x1 convs) -> classifier
    -> bilinear upsampling with align_corners=True.
    """
    def conv_bn(x, conv, bn, stride=1, padding=0, groups=1, relu=True):
        x = F.conv2d(x, sd[f"{conv}.weight"], sd.get(f"{conv}.bias"), stride, padding,
                     groups=groups)
        x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"],
                         sd[f"{bn}.weight"], sd[f"{bn}.bias"], training=False, eps=1e-5)
        return F.relu(x) if relu else x

    def dsconv(x, p, stride=1):
        x = conv_bn(x, f"{p}.conv.0", f"{p}.conv.1", stride, 1, groups=x.shape[1])
        return conv_bn(x, f"{p}.conv.3", f"{p}.conv.4")

    def upsample(x, size):
        return F.interpolate(x, size, mode="bilinear", align_corners=True)

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (image / 255.0 - mean) / std
    x = conv_bn(x, "learning_to_downsample.conv.conv.0", "learning_to_downsample.conv.conv.1",
                stride=2)
    x = dsconv(x, "learning_to_downsample.dsconv1", 2)
    higher = dsconv(x, "learning_to_downsample.dsconv2", 2)
    x = higher
    for stage, (_, blocks, first_stride) in enumerate(PORT_BOTTLENECKS, start=1):
        for block in range(blocks):
            p = f"global_feature_extractor.bottleneck{stage}.{block}.block"
            stride = first_stride if block == 0 else 1
            out = conv_bn(x, f"{p}.0.conv.0", f"{p}.0.conv.1")
            out = conv_bn(out, f"{p}.1.conv.0", f"{p}.1.conv.1", stride, 1, groups=out.shape[1])
            out = conv_bn(out, f"{p}.2", f"{p}.3", relu=False)
            x = x + out if stride == 1 and x.shape[1] == out.shape[1] else out
    p = "global_feature_extractor.ppm"
    levels = [x] + [upsample(conv_bn(F.adaptive_avg_pool2d(x, bins), f"{p}.conv{i}.conv.0",
                                     f"{p}.conv{i}.conv.1"), x.shape[2:])
                    for i, bins in enumerate(PORT_PYRAMID_BINS, start=1)]
    x = conv_bn(torch.cat(levels, 1), f"{p}.out.conv.0", f"{p}.out.conv.1")
    lower = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=True)
    lower = conv_bn(lower, "feature_fusion.dwconv.conv.0", "feature_fusion.dwconv.conv.1",
                    padding=1, groups=lower.shape[1])
    lower = conv_bn(lower, "feature_fusion.conv_lower_res.0", "feature_fusion.conv_lower_res.1",
                    relu=False)
    higher = conv_bn(higher, "feature_fusion.conv_higher_res.0",
                     "feature_fusion.conv_higher_res.1", relu=False)
    x = F.relu(higher + lower)
    x = dsconv(dsconv(x, "classifier.dsconv1"), "classifier.dsconv2")
    x = F.conv2d(x, sd["classifier.conv.1.weight"], sd["classifier.conv.1.bias"])
    return upsample(x, image.shape[2:])


# ---------------------------------------------------------------------------------------
# helpers


def save(tmp_path, name, payload):
    path = tmp_path / name
    torch.save(payload, path)
    return path


def import_port(tmp_path, state, name="fast_scnn_citys.pth", *extra):
    source = save(tmp_path, name, state)
    out = tmp_path / f"{source.stem}_imported.pt"
    assert main(["--from", "fastscnn-tramac", str(source), "--out", str(out), *extra]) == 0
    return source, out


def camera_image(height, width, seed=1):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


def normalized(image, meta):
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    return (image - mean) / std


def relative_error(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.fixture(scope="module")
def port_import(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("port")
    state = port_state_dict()
    source, out = import_port(tmp_path, state)
    return state, source, out


# ---------------------------------------------------------------------------------------
# the import reproduces the port's model


def test_port_key_table_holds_the_ports_parameter_count():
    parameters = sum(v.numel() for k, v in port_state_dict().items()
                     if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert round(parameters / 1e6, 3) == PORT_PARAMETERS_M


def test_every_port_key_maps_to_one_of_ours_and_back(port_import):
    state, _, out = port_import
    ours, _, _ = load_checkpoint(out)
    folded = {"feature_fusion.conv_lower_res.0.bias", "feature_fusion.conv_higher_res.0.bias"}
    mapped = {port_to_ours(k) for k in state if k not in folded}
    assert None not in mapped
    assert mapped == set(ours)
    assert all(ours_to_port(port_to_ours(k)) == k for k in state if k not in folded)


def test_imported_tensors_are_the_ports_except_the_means_that_took_the_fusion_biases(port_import):
    state, _, out = port_import
    ours, _, _ = load_checkpoint(out)
    for conv, bn in (("conv_lower_res", "fusion.lower.1.1"), ("conv_higher_res", "fusion.higher.1")):
        expected = (state[f"feature_fusion.{conv}.1.running_mean"]
                    - state[f"feature_fusion.{conv}.0.bias"])
        assert torch.allclose(ours[f"{bn}.running_mean"], expected, atol=1e-6)
    for key, value in state.items():
        if port_to_ours(key) in ours and not key.endswith("res.1.running_mean"):
            assert torch.equal(ours[port_to_ours(key)], value), key


@pytest.mark.parametrize("height,width", [(96, 160), (256, 192)])
def test_imported_model_reproduces_the_ports_logits_and_labels(port_import, height, width):
    state, _, out = port_import
    model, meta = load_model(out)
    image = camera_image(height, width)
    with torch.no_grad():
        theirs = port_forward(state, image)
        ours = model(normalized(image, meta))
    assert ours.shape == theirs.shape == (1, CLASSES, height, width)
    assert relative_error(ours, theirs) <= 1e-5
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_engine_labels_are_the_ports_labels(port_import):
    """The engine folds BN into the convs, runs oneDNN convs and upsamples the logits
    itself (with the network's align_corners): still the port's labels."""
    state, _, out = port_import
    height, width = 128, 224
    image = camera_image(height, width, seed=2).round()
    frame = image[0].permute(1, 2, 0).to(torch.uint8).numpy()
    engine = SegmentationEngine(EngineConfig(weights=str(out), device="cpu", upsample="logits",
                                             outputs=("label",), warmup_iters=1))
    try:
        label = engine.infer(np.ascontiguousarray(frame), "rgb8").label.copy()
    finally:
        engine.release()
    with torch.no_grad():
        theirs = port_forward(state, image)[0]
    expected = theirs.argmax(0).numpy()
    top2 = theirs.topk(2, dim=0).values
    # where two classes tie to float rounding, the folded and reordered arithmetic may
    # pick the other one (on the development machine no pixel differed)
    clear = ((top2[0] - top2[1]) > 1e-5 * theirs.abs().max()).numpy()
    assert np.array_equal(label[clear], expected[clear])
    assert (label != expected).mean() < 1e-3


def test_imported_checkpoint_builds_the_ports_variant_with_cityscapes_classes(port_import):
    _, source, out = port_import
    _, meta, training = load_checkpoint(out)
    cityscapes = load_class_set("cityscapes")
    assert training is None
    assert meta["network"] == "fastscnn" and meta["num_classes"] == CLASSES
    assert meta["network_options"] == PORT_OPTIONS
    assert meta["class_names"] == list(cityscapes.class_names)
    assert meta["palette"] == [list(c) for c in cityscapes.palette]
    assert meta["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert meta["std"] == pytest.approx([58.395, 57.12, 57.375])
    assert meta["train_size"] == [768, 768]
    assert meta["provenance"]["source_file"] == str(source.resolve())


@pytest.mark.parametrize("option", sorted(PAPER_OPTIONS))
def test_each_port_option_is_needed_for_the_ports_logits(port_import, option):
    state, _, out = port_import
    ours, meta, _ = load_checkpoint(out)
    model = build_model("fastscnn", CLASSES,
                        **{**PORT_OPTIONS, option: PAPER_OPTIONS[option]}).eval()
    model.load_state_dict(ours)
    image = camera_image(96, 160)
    with torch.no_grad():
        theirs = port_forward(state, image)
        paper_style = model(normalized(image, meta))
    assert relative_error(paper_style, theirs) > 0.01


# ---------------------------------------------------------------------------------------
# the port's files as they come


def test_data_parallel_prefix_is_removed(tmp_path, port_import):
    state, _, reference = port_import
    _, out = import_port(tmp_path, {f"module.{k}": v for k, v in state.items()}, "dp.pth")
    ours, _, _ = load_checkpoint(out)
    expected, _, _ = load_checkpoint(reference)
    assert all(torch.equal(ours[k], expected[k]) for k in expected)


def test_auxiliary_head_keys_are_skipped_and_said(tmp_path, port_import, capsys):
    _, _, reference = port_import
    aux = {k: v for k, v in port_state_dict(aux=True).items() if k.startswith("auxlayer.")}
    _, out = import_port(tmp_path, {**port_state_dict(), **aux}, "aux.pth")
    printed = capsys.readouterr().out
    ours, _, _ = load_checkpoint(out)
    expected, _, _ = load_checkpoint(reference)
    assert set(ours) == set(expected)
    assert all(torch.equal(ours[k], expected[k]) for k in expected)
    assert "skipped 8 auxiliary-head keys (auxlayer." in printed


def test_file_without_batch_norm_counters_imports(tmp_path):
    state = {k: v for k, v in port_state_dict().items() if not k.endswith("num_batches_tracked")}
    _, out = import_port(tmp_path, state, "old.pth")
    load_model(out)


# ---------------------------------------------------------------------------------------
# what is refused, one line each, nothing written


def run_cli(tmp_path, source, *extra):
    out = tmp_path / "x.pt"
    status = _run("swiftseg_ros.trainer.importers",
                  ["--from", "fastscnn-tramac", str(source), "--out", str(out), *extra])
    return status, out


def test_file_of_another_network_is_one_error_line_naming_its_keys(tmp_path, capsys):
    source = save(tmp_path, "swiftnet.pth", build_model("swiftnet_mnv2", CLASSES).state_dict())
    status, out = run_cli(tmp_path, source)
    err = capsys.readouterr().err.strip()
    assert status == 2 and not out.exists()
    assert len(err.splitlines()) == 1
    assert "not the Fast-SCNN port's model" in err
    assert "unexpected keys decoder" in err or "unexpected keys encoder" in err
    assert "missing keys classifier.conv.1.bias" in err


def test_swiftseg_checkpoint_given_as_the_ports_file_is_refused(tmp_path, capsys):
    model = build_model("fastscnn", CLASSES, aux_heads=False)
    source = tmp_path / "ours.pt"
    save_checkpoint(source, model, make_meta("fastscnn", CLASSES))
    status, out = run_cli(tmp_path, source)
    err = capsys.readouterr().err.strip()
    assert status == 2 and not out.exists()
    assert "unexpected keys classifier.0.0.0.weight" in err


def test_wrong_class_count_is_refused_naming_both_counts(tmp_path, capsys):
    source = save(tmp_path, "voc.pth", port_state_dict(num_classes=21))
    status, out = run_cli(tmp_path, source)
    err = capsys.readouterr().err.strip()
    assert status == 2 and not out.exists()
    assert len(err.splitlines()) == 1
    assert "predicts 21 classes" in err and "has 19" in err and "--classes" in err


def test_misshaped_tensor_is_named_in_the_ports_naming(tmp_path):
    state = port_state_dict()
    state["feature_fusion.dwconv.conv.0.weight"] = torch.zeros(128, 1, 5, 5)
    source = save(tmp_path, "shape.pth", state)
    with pytest.raises(CheckpointError, match=r"feature_fusion\.dwconv\.conv\.0\.weight "
                                              r"\(128, 1, 5, 5\) \(expected \(128, 1, 3, 3\)\)"):
        main(["--from", "fastscnn-tramac", str(source), "--out", str(tmp_path / "x.pt")])


class PortLikeModel(nn.Module):
    """Stands for the port's FastSCNN class in a whole-model pickle."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Conv2d(128, CLASSES, 1)


def test_pickled_whole_model_is_refused_saying_what_it_is_and_what_to_do(tmp_path, capsys):
    source = save(tmp_path, "whole_model.pth", PortLikeModel())
    status, out = run_cli(tmp_path, source)
    err = capsys.readouterr().err.strip()
    assert status == 2 and not out.exists()
    assert len(err.splitlines()) == 1
    assert "PortLikeModel" in err and "not a plain state_dict" in err
    assert "torch.save(model)" in err and ".state_dict()" in err


def test_another_network_or_a_class_count_flag_is_a_config_error(tmp_path):
    source = save(tmp_path, "f.pth", port_state_dict())
    with pytest.raises(ConfigError, match="imports as fastscnn"):
        main(["--from", "fastscnn-tramac", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt")])
    with pytest.raises(ConfigError, match="--num-classes"):
        main(["--from", "fastscnn-tramac", str(source), "--num-classes", "19",
              "--out", str(tmp_path / "x.pt")])
