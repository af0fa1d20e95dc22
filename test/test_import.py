"""swiftseg-import: the SwiftNet authors' released model and torchvision ImageNet encoders.

The authors' weights and torchvision's cannot be downloaded here, so the tests build
state_dicts with exactly their key names and shapes (written out below from the
public model files: orsic/swiftnet models/resnet/resnet_single_scale.py, models/util.py,
models/semseg.py, configs/rn18_single_scale.py; pytorch/vision
torchvision/models/resnet.py, mobilenetv2.py) and random values. Architecture
equivalence is checked against `authors_forward`, an independent functional
re-statement of the authors' forward pass over their own state_dict.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from swiftseg_ros.checkpoint import load_checkpoint, load_model
from swiftseg_ros.classes import load_class_set
from swiftseg_ros.cli import _run
from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.nets import build_model
from swiftseg_ros.trainer.importers import main, official_to_ours, ours_to_official

# ---------------------------------------------------------------------------------------
# The authors' single-scale ResNet-18 SwiftNet, `SemsegModel(resnet18(...), 19)`.
# Convs have no bias except logits.conv; every BatchNorm2d has weight, bias,
# running_mean, running_var (and num_batches_tracked with PyTorch >= 0.4.1).
AUTHORS_CONVS = {
    "backbone.conv1": (64, 3, 7, 7),
    "backbone.layer1.0.conv1": (64, 64, 3, 3),
    "backbone.layer1.0.conv2": (64, 64, 3, 3),
    "backbone.layer1.1.conv1": (64, 64, 3, 3),
    "backbone.layer1.1.conv2": (64, 64, 3, 3),
    "backbone.layer2.0.conv1": (128, 64, 3, 3),
    "backbone.layer2.0.conv2": (128, 128, 3, 3),
    "backbone.layer2.0.downsample.0": (128, 64, 1, 1),
    "backbone.layer2.1.conv1": (128, 128, 3, 3),
    "backbone.layer2.1.conv2": (128, 128, 3, 3),
    "backbone.layer3.0.conv1": (256, 128, 3, 3),
    "backbone.layer3.0.conv2": (256, 256, 3, 3),
    "backbone.layer3.0.downsample.0": (256, 128, 1, 1),
    "backbone.layer3.1.conv1": (256, 256, 3, 3),
    "backbone.layer3.1.conv2": (256, 256, 3, 3),
    "backbone.layer4.0.conv1": (512, 256, 3, 3),
    "backbone.layer4.0.conv2": (512, 512, 3, 3),
    "backbone.layer4.0.downsample.0": (512, 256, 1, 1),
    "backbone.layer4.1.conv1": (512, 512, 3, 3),
    "backbone.layer4.1.conv2": (512, 512, 3, 3),
    "backbone.spp.spp.spp_bn.conv": (128, 512, 1, 1),
    "backbone.spp.spp.spp0.conv": (42, 128, 1, 1),
    "backbone.spp.spp.spp1.conv": (42, 128, 1, 1),
    "backbone.spp.spp.spp2.conv": (42, 128, 1, 1),
    "backbone.spp.spp.spp_fuse.conv": (128, 254, 1, 1),
    "backbone.upsample.0.bottleneck.conv": (128, 256, 1, 1),
    "backbone.upsample.0.blend_conv.conv": (128, 128, 3, 3),
    "backbone.upsample.1.bottleneck.conv": (128, 128, 1, 1),
    "backbone.upsample.1.blend_conv.conv": (128, 128, 3, 3),
    "backbone.upsample.2.bottleneck.conv": (128, 64, 1, 1),
    "backbone.upsample.2.blend_conv.conv": (128, 128, 3, 3),
    "logits.conv": (19, 128, 1, 1),
}
AUTHORS_NORMS = {
    "backbone.bn1": 64,
    "backbone.layer1.0.bn1": 64,
    "backbone.layer1.0.bn2": 64,
    "backbone.layer1.1.bn1": 64,
    "backbone.layer1.1.bn2": 64,
    "backbone.layer2.0.bn1": 128,
    "backbone.layer2.0.bn2": 128,
    "backbone.layer2.0.downsample.1": 128,
    "backbone.layer2.1.bn1": 128,
    "backbone.layer2.1.bn2": 128,
    "backbone.layer3.0.bn1": 256,
    "backbone.layer3.0.bn2": 256,
    "backbone.layer3.0.downsample.1": 256,
    "backbone.layer3.1.bn1": 256,
    "backbone.layer3.1.bn2": 256,
    "backbone.layer4.0.bn1": 512,
    "backbone.layer4.0.bn2": 512,
    "backbone.layer4.0.downsample.1": 512,
    "backbone.layer4.1.bn1": 512,
    "backbone.layer4.1.bn2": 512,
    "backbone.spp.spp.spp_bn.norm": 512,
    "backbone.spp.spp.spp0.norm": 128,
    "backbone.spp.spp.spp1.norm": 128,
    "backbone.spp.spp.spp2.norm": 128,
    "backbone.spp.spp.spp_fuse.norm": 254,
    "backbone.upsample.0.bottleneck.norm": 256,
    "backbone.upsample.0.blend_conv.norm": 128,
    "backbone.upsample.1.bottleneck.norm": 128,
    "backbone.upsample.1.blend_conv.norm": 128,
    "backbone.upsample.2.bottleneck.norm": 64,
    "backbone.upsample.2.blend_conv.norm": 128,
    "logits.norm": 128,
}
AUTHORS_BIASES = {"logits.conv.bias": (19,)}
# configs/rn18_single_scale.py: the model normalizes 0-255 RGB itself (scale = 1)
AUTHORS_MEAN = (73.15, 82.90, 72.3)
AUTHORS_STD = (47.67, 48.49, 47.73)
AUTHORS_SPP_GRIDS = (8, 4, 2)
# REFERENCE_NOTES: the authors' model has 11.797M parameters for 19 classes
AUTHORS_PARAMETERS = 11_797_071


def authors_state_dict(seed=0):
    """Random values under the authors' keys; BN statistics plausible, convs He-scaled."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in AUTHORS_CONVS.items():
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"{name}.weight"] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    for name, shape in AUTHORS_BIASES.items():
        state[name] = torch.randn(shape, generator=g) * 0.1
    for name, channels in AUTHORS_NORMS.items():
        # BN scales of both signs and offset means, as trained decoders have: with them
        # a decoder fed pre-ReLU instead of post-ReLU laterals gives clearly other logits
        sign = torch.randint(0, 2, (channels,), generator=g) * 2 - 1
        state[f"{name}.weight"] = sign * (torch.rand(channels, generator=g) + 0.5)
        state[f"{name}.bias"] = torch.randn(channels, generator=g) * 0.1
        state[f"{name}.running_mean"] = torch.randn(channels, generator=g) * 0.5
        state[f"{name}.running_var"] = torch.rand(channels, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)
    state["backbone.img_mean"] = torch.tensor(AUTHORS_MEAN).view(1, -1, 1, 1)
    state["backbone.img_std"] = torch.tensor(AUTHORS_STD).view(1, -1, 1, 1)
    return state


def authors_forward(sd, image):
    """The authors' eval forward on a 0-255 RGB (N, 3, H, W) image, from their code's structure.

    ResNet-18 (conv-BN-ReLU, maxpool, BasicBlocks) -> SPP on layer4 -> three upsampling
    modules (1/32 -> 1/16 -> 1/8 -> 1/4) -> BN-ReLU-conv logits -> bilinear to the image.
    Their BasicBlock returns `relu(out), out` after `self.relu(out)` with an in-place
    ReLU, so the lateral it hands to the decoder is the sum *after* ReLU.
    """
    def conv(x, name, stride=1):
        weight = sd[f"{name}.weight"]
        return F.conv2d(x, weight, sd.get(f"{name}.bias"), stride, weight.shape[-1] // 2)

    def bn(x, name):
        return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                            sd[f"{name}.weight"], sd[f"{name}.bias"], False, 0.0, 1e-5)

    def bn_relu_conv(x, name):  # their _BNReluConv: norm, relu, conv
        return conv(F.relu(bn(x, f"{name}.norm")), f"{name}.conv")

    def upsample(x, size):
        return F.interpolate(x, size, mode="bilinear", align_corners=False)

    x = (image - sd["backbone.img_mean"]) / sd["backbone.img_std"]
    x = F.relu(bn(conv(x, "backbone.conv1", 2), "backbone.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    features = []
    for stage in (1, 2, 3, 4):
        for block in (0, 1):
            p = f"backbone.layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            residual = x
            if f"{p}.downsample.0.weight" in sd:
                residual = bn(conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1")
            out = F.relu(bn(conv(x, f"{p}.conv1", stride), f"{p}.bn1"))
            out = bn(conv(out, f"{p}.conv2"), f"{p}.bn2") + residual
            x = F.relu(out)
        features.append(x)  # in-place ReLU: the lateral equals x
    # SpatialPyramidPooling.forward
    spp_in = features[3]
    height, width = spp_in.shape[2:4]
    ratio = width / height
    y = bn_relu_conv(spp_in, "backbone.spp.spp.spp_bn")
    levels = [y]
    for i, grid in enumerate(AUTHORS_SPP_GRIDS):
        pooled = F.adaptive_avg_pool2d(y, (grid, max(1, round(ratio * grid))))
        levels.append(upsample(bn_relu_conv(pooled, f"backbone.spp.spp.spp{i}"), (height, width)))
    x = bn_relu_conv(torch.cat(levels, 1), "backbone.spp.spp.spp_fuse")
    # forward_up: upsample.0 takes layer3, upsample.1 layer2, upsample.2 layer1
    for i, skip in enumerate((features[2], features[1], features[0])):
        skip = bn_relu_conv(skip, f"backbone.upsample.{i}.bottleneck")
        x = upsample(x, skip.shape[2:4]) + skip
        x = bn_relu_conv(x, f"backbone.upsample.{i}.blend_conv")
    logits = bn_relu_conv(x, "logits")
    return upsample(logits, image.shape[2:4])


# ---------------------------------------------------------------------------------------
# torchvision's resnet18 and mobilenet_v2 state_dicts (torchvision/models/resnet.py,
# mobilenetv2.py): conv and BN names with their shapes.
def torchvision_resnet18_shapes():
    convs = {"conv1": (64, 3, 7, 7)}
    norms = {"bn1": 64}
    cin = 64
    for stage, cout in zip((1, 2, 3, 4), (64, 128, 256, 512), strict=True):
        for block in (0, 1):
            p = f"layer{stage}.{block}"
            convs[f"{p}.conv1"] = (cout, cin if block == 0 else cout, 3, 3)
            convs[f"{p}.conv2"] = (cout, cout, 3, 3)
            norms[f"{p}.bn1"] = norms[f"{p}.bn2"] = cout
            if block == 0 and stage > 1:
                convs[f"{p}.downsample.0"] = (cout, cin, 1, 1)
                norms[f"{p}.downsample.1"] = cout
        cin = cout
    linear = {"fc.weight": (1000, 512), "fc.bias": (1000,)}
    return convs, norms, linear


# t (expansion), c (channels), n (blocks), s (stride) of torchvision's MobileNetV2
MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def torchvision_mobilenet_v2_shapes():
    convs = {"features.0.0": (32, 3, 3, 3)}
    norms = {"features.0.1": 32}
    cin, index = 32, 1
    for t, c, n, _ in MOBILENET_V2_SETTING:
        for _ in range(n):
            p, hidden = f"features.{index}.conv", cin * t
            if t == 1:  # depthwise 3x3 (conv.0), projection conv.1, BN conv.2
                convs[f"{p}.0.0"] = (hidden, 1, 3, 3)
                norms[f"{p}.0.1"] = hidden
                convs[f"{p}.1"] = (c, hidden, 1, 1)
                norms[f"{p}.2"] = c
            else:  # expansion 1x1 (conv.0), depthwise (conv.1), projection conv.2, BN conv.3
                convs[f"{p}.0.0"] = (hidden, cin, 1, 1)
                norms[f"{p}.0.1"] = hidden
                convs[f"{p}.1.0"] = (hidden, 1, 3, 3)
                norms[f"{p}.1.1"] = hidden
                convs[f"{p}.2"] = (c, hidden, 1, 1)
                norms[f"{p}.3"] = c
            cin, index = c, index + 1
    convs["features.18.0"] = (1280, 320, 1, 1)
    norms["features.18.1"] = 1280
    linear = {"classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,)}
    return convs, norms, linear


def torchvision_state_dict(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    convs, norms, linear = shapes
    state = {f"{name}.weight": torch.randn(shape, generator=g) * 0.05
             for name, shape in convs.items()}
    for name, channels in norms.items():
        state[f"{name}.weight"] = torch.rand(channels, generator=g) + 0.5
        state[f"{name}.bias"] = torch.randn(channels, generator=g) * 0.1
        state[f"{name}.running_mean"] = torch.randn(channels, generator=g) * 0.1
        state[f"{name}.running_var"] = torch.rand(channels, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    state.update({name: torch.randn(shape, generator=g) * 0.01 for name, shape in linear.items()})
    return state


def save(tmp_path, name, state):
    path = tmp_path / name
    torch.save(state, path)
    return path


def import_official(tmp_path, state, *extra):
    source = save(tmp_path, "swiftnet_authors.pt", state)
    out = tmp_path / "imported.pt"
    assert main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
                 "--out", str(out), *extra]) == 0
    return source, out


def normalized(image, meta):
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    return (image - mean) / std


@pytest.fixture(scope="module")
def authors_import(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("authors")
    state = authors_state_dict()
    source, out = import_official(tmp_path, state)
    return state, source, out



# ---------------------------------------------------------------------------------------
# the authors' model


def test_authors_key_table_holds_their_parameter_count():
    state = authors_state_dict()
    parameters = sum(v.numel() for k, v in state.items()
                     if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                     and not k.startswith("backbone.img_"))
    assert parameters == AUTHORS_PARAMETERS


def test_every_authors_key_maps_to_one_of_ours_and_back(authors_import):
    state, _, out = authors_import
    ours, _, _ = load_checkpoint(out)
    weights = [k for k in state if not k.startswith("backbone.img_")]
    mapped = {official_to_ours(k) for k in weights}
    assert None not in mapped
    assert mapped == set(ours)
    assert all(ours_to_official(official_to_ours(k)) == k for k in weights)


def test_imported_tensors_are_the_authors_tensors(authors_import):
    state, _, out = authors_import
    ours, _, _ = load_checkpoint(out)
    for key, value in state.items():
        if not key.startswith("backbone.img_"):
            assert torch.equal(ours[official_to_ours(key)], value), key


@pytest.mark.parametrize("height,width", [(64, 128), (96, 160)])
def test_imported_model_reproduces_the_authors_logits(authors_import, height, width):
    state, _, out = authors_import
    model, meta = load_model(out)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        theirs = authors_forward(state, image)
        ours = model(normalized(image, meta))
    assert ours.shape == theirs.shape == (1, 19, height, width)
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def test_imported_meta_has_cityscapes_classes_and_the_files_normalization(authors_import):
    _, source, out = authors_import
    _, meta, training = load_checkpoint(out)
    cityscapes = load_class_set("cityscapes")
    assert training is None
    assert meta["network"] == "swiftnet_rn18" and meta["num_classes"] == 19
    assert meta["class_names"] == list(cityscapes.class_names)
    assert meta["palette"] == [list(c) for c in cityscapes.palette]
    assert meta["mean"] == pytest.approx(AUTHORS_MEAN)
    assert meta["std"] == pytest.approx(AUTHORS_STD)
    assert meta["provenance"]["source_file"] == str(source.resolve())


def test_normalization_with_img_scale_is_converted_to_0_255(tmp_path):
    state = authors_state_dict()
    state["backbone.img_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1)
    state["backbone.img_std"] = torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)
    state["backbone.img_scale"] = torch.tensor(255.0).view(1, -1, 1, 1)
    _, out = import_official(tmp_path, state)
    _, meta, _ = load_checkpoint(out)
    assert meta["mean"] == pytest.approx([123.675, 116.28, 103.53], rel=1e-6)
    assert meta["std"] == pytest.approx([58.395, 57.12, 57.375], rel=1e-6)


def test_2019_release_is_refused_with_a_pointer_to_the_2020_release(tmp_path):
    state = authors_state_dict()
    del state["backbone.img_mean"], state["backbone.img_std"], state["logits.conv.bias"]
    state["logits.conv.weight"] = torch.zeros(19, 128, 3, 3)
    source = save(tmp_path, "swiftnet_ss_cs.pt", state)
    with pytest.raises(CheckpointError, match=r"missing keys backbone\.img_mean.*2019 release"
                                              r".*rn18_single_scale/model_best\.pt"):
        main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt")])


def test_authors_file_with_an_extra_key_names_it_as_unexpected(tmp_path):
    state = authors_state_dict()
    state["border_logits.conv.weight"] = torch.zeros(2, 128, 1, 1)
    source = save(tmp_path, "extra.pt", state)
    with pytest.raises(CheckpointError, match=r"unexpected keys border_logits\.conv\.weight"):
        main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt")])


def test_authors_file_with_a_missing_key_names_it_in_their_naming(tmp_path):
    state = authors_state_dict()
    del state["backbone.spp.spp.spp_fuse.conv.weight"]
    source = save(tmp_path, "missing.pt", state)
    with pytest.raises(CheckpointError,
                       match=r"missing keys backbone\.spp\.spp\.spp_fuse\.conv\.weight"):
        main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt")])


def test_authors_file_with_a_misshaped_tensor_names_key_and_shapes(tmp_path):
    state = authors_state_dict()
    state["backbone.spp.spp.spp0.conv.weight"] = torch.zeros(64, 128, 1, 1)
    source = save(tmp_path, "shape.pt", state)
    with pytest.raises(CheckpointError, match=r"backbone\.spp\.spp\.spp0\.conv\.weight "
                                              r"\(64, 128, 1, 1\) \(expected \(42, 128, 1, 1\)\)"):
        main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt")])


def test_torchvision_file_given_as_authors_model_is_refused_with_its_keys(tmp_path):
    source = save(tmp_path, "resnet18.pth", torchvision_state_dict(torchvision_resnet18_shapes()))
    with pytest.raises(CheckpointError, match=r"unexpected keys bn1\.bias.*missing keys "
                                              r"backbone\.bn1\.bias"):
        main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()


def test_authors_file_with_a_class_set_of_another_size_names_both_counts(authors_import,
                                                                       tmp_path):
    _, source, _ = authors_import
    camvid = load_class_set("camvid").num_classes
    with pytest.raises(ConfigError, match=rf"predicts 19 classes but the class set camvid has "
                                          rf"{camvid}; give --classes with a class set of 19"):
        main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt"), "--classes", "camvid"])
    assert not (tmp_path / "x.pt").exists()


def test_file_of_something_else_is_one_error_line_and_exit_2(tmp_path, capsys):
    source = save(tmp_path, "other.pt", {"optimizer": torch.zeros(3)})
    status = _run("swiftseg_ros.trainer.importers",
                  ["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
                   "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "unexpected keys optimizer" in err


def test_authors_model_into_another_network_is_a_config_error(tmp_path):
    source = save(tmp_path, "a.pt", authors_state_dict())
    with pytest.raises(ConfigError, match="single-scale ResNet-18"):
        main(["--from", "swiftnet-official", str(source), "--network", "swiftnet_mnv2",
              "--out", str(tmp_path / "x.pt")])


def test_authors_model_imports_as_swiftnet_rn18_without_network_flag(tmp_path):
    source, out = save(tmp_path, "a.pt", authors_state_dict()), tmp_path / "x.pt"
    assert main(["--from", "swiftnet-official", str(source), "--out", str(out)]) == 0
    _, meta, _ = load_checkpoint(out)
    assert meta["network"] == "swiftnet_rn18"


def test_torchvision_import_without_network_flag_is_a_config_error(tmp_path):
    source = save(tmp_path, "resnet18.pth", torchvision_state_dict(torchvision_resnet18_shapes()))
    with pytest.raises(ConfigError, match="--network is required with --from torchvision"):
        main(["--from", "torchvision", str(source), "--out", str(tmp_path / "x.pt")])


# ---------------------------------------------------------------------------------------
# torchvision ImageNet encoders


def test_torchvision_resnet18_becomes_a_starting_checkpoint_with_its_encoder(tmp_path):
    state = torchvision_state_dict(torchvision_resnet18_shapes())
    source, out = save(tmp_path, "resnet18.pth", state), tmp_path / "start.pt"
    assert main(["--from", "torchvision", str(source), "--network", "swiftnet_rn18",
                 "--out", str(out)]) == 0
    ours, meta, _ = load_checkpoint(out)
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(ours[f"encoder.{key}"], value), key
    assert meta["class_names"] == list(load_class_set("cityscapes").class_names)
    load_model(out)


def test_torchvision_mobilenet_v2_initializes_swiftnet_mnv2(tmp_path):
    state = torchvision_state_dict(torchvision_mobilenet_v2_shapes())
    source, out = save(tmp_path, "mobilenet_v2.pth", state), tmp_path / "start.pt"
    assert main(["--from", "torchvision", str(source), "--network", "swiftnet_mnv2",
                 "--out", str(out), "--classes", "camvid"]) == 0
    ours, meta, _ = load_checkpoint(out)
    encoder_keys = [k for k in state if not k.startswith(("classifier.", "features.18."))]
    assert all(torch.equal(ours[f"encoder.{k}"], state[k]) for k in encoder_keys)
    assert meta["num_classes"] == load_class_set("camvid").num_classes


def test_torchvision_resnet18_initializes_the_pyramid_with_a_class_count(tmp_path):
    state = torchvision_state_dict(torchvision_resnet18_shapes())
    source, out = save(tmp_path, "resnet18.pth", state), tmp_path / "start.pt"
    assert main(["--from", "torchvision", str(source), "--network", "swiftnet_rn18_pyramid",
                 "--out", str(out), "--num-classes", "5"]) == 0
    ours, meta, _ = load_checkpoint(out)
    assert torch.equal(ours["encoder.layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert meta["num_classes"] == 5 and meta["class_names"][0] == "class_0"


def test_torchvision_mobilenet_file_for_resnet_network_says_what_it_holds(tmp_path):
    source = save(tmp_path, "mnv2.pth", torchvision_state_dict(torchvision_mobilenet_v2_shapes()))
    with pytest.raises(CheckpointError, match="looks like mobilenet_v2"):
        main(["--from", "torchvision", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt")])


def test_torchvision_weights_for_fastscnn_are_a_config_error(tmp_path):
    source = save(tmp_path, "resnet18.pth", {"conv1.weight": torch.zeros(64, 3, 7, 7)})
    with pytest.raises(ConfigError, match="swiftnet_rn18, swiftnet_mnv2"):
        main(["--from", "torchvision", str(source), "--network", "fastscnn",
              "--out", str(tmp_path / "x.pt")])


def test_class_count_contradicting_class_set_is_a_config_error(tmp_path):
    source = save(tmp_path, "resnet18.pth", torchvision_state_dict(torchvision_resnet18_shapes()))
    with pytest.raises(ConfigError, match="contradicts --classes cityscapes"):
        main(["--from", "torchvision", str(source), "--network", "swiftnet_rn18",
              "--out", str(tmp_path / "x.pt"), "--num-classes", "7",
              "--classes", "cityscapes"])


def test_imported_model_takes_laterals_after_relu_as_the_authors_code_does(authors_import):
    _, _, out = authors_import
    _, meta, _ = load_checkpoint(out)
    assert meta["network_options"] == {"lateral_after_relu": True}


def test_paper_style_pre_relu_laterals_would_not_reproduce_the_authors_logits(authors_import):
    state, _, out = authors_import
    ours, meta, _ = load_checkpoint(out)
    model = build_model("swiftnet_rn18", 19, lateral_after_relu=False).eval()
    model.load_state_dict(ours)
    image = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        theirs = authors_forward(state, image)
        paper_style = model(normalized(image, meta))
    assert (paper_style - theirs).abs().max() > 0.01 * theirs.abs().max()


def test_existing_out_file_is_refused_unless_force(tmp_path, capsys):
    source, out = import_official(tmp_path, authors_state_dict())
    before = out.read_bytes()
    argv = ["--from", "swiftnet-official", str(source), "--network", "swiftnet_rn18",
            "--out", str(out)]
    status = _run("swiftseg_ros.trainer.importers", argv)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "already exists" in err and "--force" in err
    assert out.read_bytes() == before
    assert main([*argv, "--force"]) == 0
