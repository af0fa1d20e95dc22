"""Training recipes: the shipped YAML files, dotted --set overrides and their errors."""

from pathlib import Path

import pytest

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.paths import config_dir
from swiftseg_ros.trainer.config import SCHEMA, load_recipe

RECIPES = config_dir() / "train"


def test_every_shipped_recipe_loads():
    names = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert {"swiftnet_cityscapes.yaml", "swiftnet_camvid.yaml", "fastscnn_cityscapes.yaml",
            "fastscnn_synth.yaml", "swiftnet_mnv2_synth.yaml"} <= set(names)
    for name in names:
        load_recipe(RECIPES / name)


def test_swiftnet_recipe_holds_the_papers_values():
    config = load_recipe(RECIPES / "swiftnet_cityscapes.yaml")
    optim = config["optim"]
    assert (optim["name"], optim["lr"], optim["betas"], optim["weight_decay"]) == (
        "adam", 4e-4, [0.9, 0.99], 1e-4)
    assert (optim["schedule"], optim["min_lr"]) == ("cosine", 1e-6)
    assert optim["pretrained_lr_scale"] == optim["pretrained_wd_scale"] == 0.25
    assert config["train"]["batch_size"] == 12
    assert config["augment"]["crop"] == [768, 768]
    assert (config["augment"]["scale_min"], config["augment"]["scale_max"]) == (0.5, 2.0)
    assert load_recipe(RECIPES / "swiftnet_camvid.yaml")["augment"]["crop"] == [448, 448]


def test_fastscnn_recipe_holds_the_papers_values():
    config = load_recipe(RECIPES / "fastscnn_cityscapes.yaml")
    optim = config["optim"]
    assert (optim["name"], optim["lr"], optim["momentum"]) == ("sgd", 0.045, 0.9)
    assert (optim["schedule"], optim["power"]) == ("poly", 0.9)
    assert (optim["weight_decay"], optim["decay_depthwise"]) == (4e-5, False)
    assert config["train"]["aux_weight"] == 0.4
    assert config["model"]["options"]["dropout"] > 0
    assert config["augment"]["brightness"] > 0


def test_set_overrides_a_nested_key_with_the_defaults_type():
    config = load_recipe(None, ["optim.lr=0.01", "train.epochs=3", "augment.flip=false",
                                "augment.crop=[448, 224]", "optim.min_lr=1e-7"])
    assert config["optim"]["lr"] == 0.01
    assert config["train"]["epochs"] == 3
    assert config["augment"]["flip"] is False
    assert config["augment"]["crop"] == [448, 224]
    assert config["optim"]["min_lr"] == pytest.approx(1e-7)


def test_an_integer_is_accepted_where_a_number_is_expected():
    assert load_recipe(None, ["optim.lr=1"])["optim"]["lr"] == 1.0


def test_set_applies_after_the_recipe_file(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim: {lr: 0.5}\ntrain: {epochs: 7}\n")
    config = load_recipe(recipe, ["optim.lr=0.25"])
    assert (config["optim"]["lr"], config["train"]["epochs"]) == (0.25, 7)


def test_network_options_are_free_form():
    config = load_recipe(None, ["model.options.dropout=0.2"])
    assert config["model"]["options"] == {"dropout": 0.2}


def test_unknown_key_names_close_matches_on_one_line():
    with pytest.raises(ConfigError) as error:
        load_recipe(None, ["optim.lrr=0.1"])
    message = str(error.value)
    assert "optim.lrr" in message and "optim.lr" in message and "\n" not in message


def test_unknown_key_in_a_recipe_file_names_the_file(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*train\.epoch.*train\.epochs"):
        load_recipe(recipe)


def test_binary_file_given_as_recipe_is_a_config_error(tmp_path: Path):
    recipe = tmp_path / "weights.pt"
    recipe.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ConfigError, match=r"weights\.pt: not a text file"):
        load_recipe(recipe)


def test_fastscnn_batch_of_one_is_refused_before_training():
    with pytest.raises(ConfigError, match="train.batch_size = 1: fastscnn trains with at least 2"):
        load_recipe(None, ["model.name=fastscnn", "train.batch_size=1"])
    assert load_recipe(None, ["model.name=swiftnet_mnv2", "train.batch_size=1"])


def test_crop_that_the_network_cannot_take_names_a_size_that_fits():
    with pytest.raises(ConfigError, match=r"augment.crop = \[50, 70\]: .*multiples of 32, e\.g\. "
                                          r"\[64, 96\]"):
        load_recipe(None, ["model.name=fastscnn", "augment.crop=[50, 70]"])
    with pytest.raises(ConfigError, match="multiples of 64"):
        load_recipe(None, ["model.name=swiftnet_rn18_pyramid", "augment.crop=[96, 96]"])


def test_wrong_type_names_key_value_and_expected_type():
    with pytest.raises(ConfigError, match=r"train\.epochs = 'many'.*expected an integer"):
        load_recipe(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"train\.epochs = 2\.5.*integer"):
        load_recipe(None, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"augment\.flip.*true or false"):
        load_recipe(None, ["augment.flip=1"])


def test_list_of_the_wrong_length_is_refused():
    with pytest.raises(ConfigError, match=r"augment\.crop.*2 integers"):
        load_recipe(None, ["augment.crop=[448]"])


def test_value_outside_the_allowed_choices_lists_them():
    with pytest.raises(ConfigError, match=r"optim\.name = 'rmsprop'.*adam, sgd"):
        load_recipe(None, ["optim.name=rmsprop"])


def test_out_of_range_value_is_refused():
    with pytest.raises(ConfigError, match=r"augment\.scale_min"):
        load_recipe(None, ["augment.scale_min=3"])


def test_set_without_equals_sign_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(None, ["optim.lr"])


def test_every_schema_default_passes_its_own_check():
    config = load_recipe(None)
    assert set(config) == {key.split(".")[0] for key in SCHEMA}
