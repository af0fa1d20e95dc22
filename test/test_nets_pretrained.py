"""ImageNet initialization of the encoders from torchvision-format state_dict files.

The files are made here with torchvision's key names and shapes, written out from the
torchvision architectures (resnet.py, mobilenetv2.py) independently of our encoders.
"""

import pytest
import torch

from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.nets import build_model, load_imagenet_encoder

MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))



def add_batch_norm(shapes, prefix, channels):
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = (channels,)


def torchvision_resnet18_shapes():
    shapes = {"conv1.weight": (64, 3, 7, 7)}
    add_batch_norm(shapes, "bn1", 64)
    in_channels = 64
    for stage, (channels, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), 1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            block_in = in_channels if block == 0 else channels
            shapes[f"{prefix}.conv1.weight"] = (channels, block_in, 3, 3)
            add_batch_norm(shapes, f"{prefix}.bn1", channels)
            shapes[f"{prefix}.conv2.weight"] = (channels, channels, 3, 3)
            add_batch_norm(shapes, f"{prefix}.bn2", channels)
            if block == 0 and (stride != 1 or block_in != channels):
                shapes[f"{prefix}.downsample.0.weight"] = (channels, block_in, 1, 1)
                add_batch_norm(shapes, f"{prefix}.downsample.1", channels)
        in_channels = channels
    shapes["fc.weight"] = (1000, 512)
    shapes["fc.bias"] = (1000,)
    return shapes


def torchvision_mobilenet_v2_shapes():
    shapes = {"features.0.0.weight": (32, 3, 3, 3)}
    add_batch_norm(shapes, "features.0.1", 32)
    in_channels, index = 32, 1
    for t, c, n, _ in MOBILENET_V2_SETTING:
        for _ in range(n):
            hidden, prefix, j = in_channels * t, f"features.{index}.conv", 0
            if t != 1:
                shapes[f"{prefix}.0.0.weight"] = (hidden, in_channels, 1, 1)
                add_batch_norm(shapes, f"{prefix}.0.1", hidden)
                j = 1
            shapes[f"{prefix}.{j}.0.weight"] = (hidden, 1, 3, 3)
            add_batch_norm(shapes, f"{prefix}.{j}.1", hidden)
            shapes[f"{prefix}.{j + 1}.weight"] = (c, hidden, 1, 1)
            add_batch_norm(shapes, f"{prefix}.{j + 2}", c)
            in_channels, index = c, index + 1
    shapes["features.18.0.weight"] = (1280, 320, 1, 1)
    add_batch_norm(shapes, "features.18.1", 1280)
    shapes["classifier.1.weight"] = (1000, 1280)
    shapes["classifier.1.bias"] = (1000,)
    return shapes


def random_state(shapes):
    generator = torch.Generator().manual_seed(0)
    return {key: torch.rand(shape, generator=generator) + 0.1 for key, shape in shapes.items()}


@pytest.fixture(scope="module")
def resnet18_state():
    return random_state(torchvision_resnet18_shapes())


@pytest.fixture(scope="module")
def mobilenet_v2_state():
    return random_state(torchvision_mobilenet_v2_shapes())


def saved(tmp_path, state, name="weights.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def assert_encoder_holds(encoder, state, ignored_prefixes):
    own = encoder.state_dict()
    for key, value in state.items():
        if not key.startswith(ignored_prefixes):
            assert torch.equal(own[key], value), key


@pytest.mark.parametrize("network", ["swiftnet_rn18", "swiftnet_rn18_pyramid"])
def test_resnet18_weights_land_in_the_encoder_and_fc_is_ignored(tmp_path, resnet18_state, network):
    model = build_model(network, 3)
    result = load_imagenet_encoder(model, saved(tmp_path, resnet18_state))
    assert_encoder_holds(model.encoder, resnet18_state, ("fc.",))
    assert result.ignored == ["fc.bias", "fc.weight"]
    assert len(result.loaded) == len(resnet18_state) - 2


def test_mobilenet_v2_weights_land_and_classifier_and_features_18_are_ignored(
        tmp_path, mobilenet_v2_state):
    model = build_model("swiftnet_mnv2", 3)
    result = load_imagenet_encoder(model, saved(tmp_path, mobilenet_v2_state))
    assert_encoder_holds(model.encoder, mobilenet_v2_state, ("classifier.", "features.18."))
    assert result.ignored == sorted(k for k in mobilenet_v2_state
                                    if k.startswith(("classifier.", "features.18.")))


def test_state_dict_under_a_state_dict_key_loads(tmp_path, resnet18_state):
    model = build_model("swiftnet_rn18", 3)
    load_imagenet_encoder(model, saved(tmp_path, {"state_dict": resnet18_state, "epoch": 90}))
    assert_encoder_holds(model.encoder, resnet18_state, ("fc.",))


def test_batch_norm_counters_in_the_file_are_accepted(tmp_path, resnet18_state):
    state = dict(resnet18_state, **{"bn1.num_batches_tracked": torch.tensor(7)})
    model = build_model("swiftnet_rn18", 3)
    load_imagenet_encoder(model, saved(tmp_path, state))
    assert model.encoder.bn1.num_batches_tracked == 7


def test_missing_key_is_an_error_naming_it(tmp_path, resnet18_state):
    state = {k: v for k, v in resnet18_state.items() if k != "layer3.1.bn2.running_var"}
    with pytest.raises(CheckpointError, match="missing keys layer3.1.bn2.running_var"):
        load_imagenet_encoder(build_model("swiftnet_rn18", 3), saved(tmp_path, state))


def test_shape_mismatch_is_an_error_naming_the_key_and_shapes(tmp_path, resnet18_state):
    state = dict(resnet18_state, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(CheckpointError, match=r"shape mismatches conv1.weight \(64, 3, 3, 3\) "
                                              r"\(encoder: \(64, 3, 7, 7\)\)"):
        load_imagenet_encoder(build_model("swiftnet_rn18", 3), saved(tmp_path, state))


def test_unexpected_key_is_an_error_naming_it(tmp_path, mobilenet_v2_state):
    state = dict(mobilenet_v2_state, **{"features.19.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected keys features.19.0.weight"):
        load_imagenet_encoder(build_model("swiftnet_mnv2", 3), saved(tmp_path, state))


def test_weights_of_the_other_encoder_are_named(tmp_path, mobilenet_v2_state):
    with pytest.raises(CheckpointError, match="not a torchvision resnet18 state_dict "
                                              r"\(it looks like mobilenet_v2 weights\)"):
        load_imagenet_encoder(build_model("swiftnet_rn18", 3), saved(tmp_path, mobilenet_v2_state))


def test_failed_load_leaves_the_encoder_untouched(tmp_path, resnet18_state):
    model = build_model("swiftnet_rn18", 3)
    before = model.encoder.conv1.weight.clone()
    state = {k: v for k, v in resnet18_state.items() if k != "bn1.bias"}
    with pytest.raises(CheckpointError):
        load_imagenet_encoder(model, saved(tmp_path, state))
    assert torch.equal(model.encoder.conv1.weight, before)


def test_fastscnn_has_no_imagenet_encoder(tmp_path, resnet18_state):
    with pytest.raises(ConfigError, match="fastscnn has no ImageNet encoder"):
        load_imagenet_encoder(build_model("fastscnn", 3), saved(tmp_path, resnet18_state))


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_imagenet_encoder(build_model("swiftnet_mnv2", 3), tmp_path / "absent.pth")


@pytest.mark.parametrize("garbage", [b"not a torch file" * 8,
                                     b"this is not a torch file at all" * 10])
def test_unreadable_bytes_are_a_checkpoint_error(tmp_path, garbage):
    path = tmp_path / "junk.pth"
    path.write_bytes(garbage)
    with pytest.raises(CheckpointError, match="not a PyTorch file, expected a PyTorch state_dict"):
        load_imagenet_encoder(build_model("swiftnet_mnv2", 3), path)


def test_truncated_file_is_a_checkpoint_error(tmp_path, mobilenet_v2_state):
    path = saved(tmp_path, mobilenet_v2_state)
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_imagenet_encoder(build_model("swiftnet_mnv2", 3), path)


def test_file_that_is_not_a_state_dict_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_imagenet_encoder(build_model("swiftnet_mnv2", 3),
                              saved(tmp_path, {"weights": [1, 2, 3]}, "list.pth"))
