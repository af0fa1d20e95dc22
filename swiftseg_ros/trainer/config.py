"""Training recipes: the YAML schema with its defaults, loading, and typed `--set` overrides.

A recipe is a nested mapping (`model`, `data`, `augment`, `train`, `optim`, `log`). Every
key that may appear is declared once in `SCHEMA` with its default, its type and, where
it has one, its allowed values; a recipe file only states what differs from the defaults.
Keys are addressed with dots (`optim.lr`), on the command line as `--set optim.lr=0.01`.
An unknown key or a value of the wrong type is a `ConfigError` whose message names the
key, the value and what is allowed (close matches for a misspelled key).
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from swiftseg_ros.checkpoint import CITYSCAPES_MEAN, CITYSCAPES_STD
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.nets import NETWORKS
from swiftseg_ros.nets.base import round_up_to_multiple


@dataclass(frozen=True)
class Option:
    """One recipe key: default, type (`str`, `int`, `float`, `bool`, `path`, `floats`,
    `ints`, `dict`), allowed values, list length, and whether null is allowed."""

    default: Any
    kind: str
    help: str
    choices: tuple = ()
    length: int | None = None
    nullable: bool = False


SCHEMA: dict[str, Option] = {
    # network
    "model.name": Option("fastscnn", "str", "network name (swiftseg-models lists them)"),
    "model.options": Option({}, "dict", "keyword options of build_model for this network"),
    "model.imagenet_init": Option(None, "path", "torchvision-format ImageNet state_dict of "
                                  "the encoder (resnet18 / mobilenet_v2), loaded before "
                                  "training", nullable=True),
    # data
    "data.root": Option(None, "path", "dataset folder (--data overrides it)", nullable=True),
    "data.layout": Option("auto", "str", "dataset layout",
                          choices=("auto", "cityscapes", "camvid", "generic")),
    "data.train_split": Option("train", "str", "split trained on"),
    "data.val_split": Option("val", "str", "split validated on; null: no validation",
                             nullable=True),
    "data.val_root": Option(None, "path", "dataset folder of the validation split when it is "
                            "not data.root", nullable=True),
    "data.scale": Option(1.0, "float", "resize factor applied to every frame first "
                         "(0.5: half-resolution Cityscapes)"),
    "data.mean": Option(list(CITYSCAPES_MEAN), "floats", "per-channel RGB mean on 0-255",
                        length=3),
    "data.std": Option(list(CITYSCAPES_STD), "floats", "per-channel RGB std on 0-255",
                       length=3),
    # augmentation
    "augment.crop": Option([768, 768], "ints", "training crop [height, width]", length=2),
    "augment.scale_min": Option(0.5, "float", "smallest random scale factor"),
    "augment.scale_max": Option(2.0, "float", "largest random scale factor"),
    "augment.flip": Option(True, "bool", "random horizontal flip"),
    "augment.brightness": Option(0.0, "float", "brightness jitter: factor in 1 +- value"),
    "augment.contrast": Option(0.0, "float", "contrast jitter: factor in 1 +- value"),
    "augment.saturation": Option(0.0, "float", "saturation jitter: factor in 1 +- value"),
    # schedule and run
    "train.epochs": Option(200, "int", "epochs to train"),
    "train.batch_size": Option(12, "int", "images per step (per process under torchrun)"),
    "train.workers": Option(4, "int", "DataLoader worker processes (0: in the main process)"),
    "train.seed": Option(0, "int", "seed of the initial weights, data order and augmentation"),
    "train.device": Option("auto", "str", "auto (cuda when available), cpu, cuda or cuda:N"),
    "train.precision": Option("auto", "str", "autocast precision; auto: bf16 on CUDA when "
                              "supported, else fp16 on CUDA, fp32 on CPU",
                              choices=("auto", "fp32", "bf16", "fp16")),
    "train.aux_weight": Option(0.4, "float", "weight of each auxiliary loss"),
    "train.class_weights": Option("none", "str", "per-class loss weights; enet: "
                                  "1 / ln(c + pixel frequency in the training labels), "
                                  "for rare classes", choices=("none", "enet")),
    "train.enet_c": Option(1.02, "float", "c of the enet class weights (ENet's 1.02; larger "
                           "is flatter: rare classes weigh at most 1 / ln(c))"),
    "train.val_every": Option(1, "int", "validate every N epochs (and after the last)"),
    # optimizer
    "optim.name": Option("adam", "str", "optimizer", choices=("adam", "sgd")),
    "optim.lr": Option(4e-4, "float", "base learning rate"),
    "optim.betas": Option([0.9, 0.99], "floats", "Adam betas", length=2),
    "optim.momentum": Option(0.9, "float", "SGD momentum"),
    "optim.weight_decay": Option(1e-4, "float", "L2 weight decay"),
    "optim.decay_depthwise": Option(True, "bool", "apply weight decay to depthwise convs"),
    "optim.pretrained_lr_scale": Option(0.25, "float", "lr factor of ImageNet-initialized "
                                        "parameters"),
    "optim.pretrained_wd_scale": Option(0.25, "float", "weight decay factor of "
                                        "ImageNet-initialized parameters"),
    "optim.schedule": Option("cosine", "str", "learning-rate decay over all steps",
                             choices=("cosine", "poly", "constant")),
    "optim.min_lr": Option(1e-6, "float", "cosine: learning rate at the last step"),
    "optim.power": Option(0.9, "float", "poly: exponent"),
    # the exported final.pt
    "export.fp16": Option(False, "bool", "store final.pt's weights as fp16 (half the size; "
                          "loading converts them back to fp32)"),
    # logging
    "log.tensorboard": Option(True, "bool", "write TensorBoard events when tensorboard is "
                              "installed"),
}


_SECTIONS = {key.split(".", 1)[0] for key in SCHEMA}


def defaults() -> dict:
    """The full recipe with every default value, as a nested dict."""
    config: dict = {}
    for key, option in SCHEMA.items():
        _assign(config, key, copy.deepcopy(option.default))
    return config


def load_recipe(path: str | Path | None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults, then the recipe file (if any), then `key=value` overrides: a checked dict."""
    config = defaults()
    if path is not None:
        merge_into(config, read_recipe_file(path), str(path))
    apply_overrides(config, overrides)
    validate(config)
    return config


def validate(config: dict) -> None:
    """Check the values that are well-typed but out of range, and their combinations."""
    def need(ok: bool, key: str, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{key} = {get_value(config, key)!r}: {allowed}")

    need(config["train"]["epochs"] >= 1, "train.epochs", "must be at least 1")
    need(config["train"]["batch_size"] >= 1, "train.batch_size", "must be at least 1")
    # the 1x1 pyramid-pooling level holds one value per channel per image: BatchNorm
    # cannot normalize it in a batch of one (docs/models.md)
    need(config["model"]["name"] != "fastscnn" or config["train"]["batch_size"] >= 2,
         "train.batch_size", "fastscnn trains with at least 2 images per batch (per process)")
    need(config["train"]["workers"] >= 0, "train.workers", "must be 0 or more")
    need(config["train"]["val_every"] >= 1, "train.val_every", "must be at least 1")
    need(config["train"]["aux_weight"] >= 0, "train.aux_weight", "must be 0 or more")
    need(config["train"]["enet_c"] > 1, "train.enet_c", "must be greater than 1")
    need(min(config["augment"]["crop"]) >= 1, "augment.crop", "sides must be positive")
    _check_crop_fits_network(config, need)
    need(0 < config["augment"]["scale_min"] <= config["augment"]["scale_max"],
         "augment.scale_min", "must be positive and at most augment.scale_max")
    for name in ("brightness", "contrast", "saturation"):
        need(0 <= config["augment"][name] < 1, f"augment.{name}", "must be in [0, 1)")
    need(config["data"]["scale"] > 0, "data.scale", "must be positive")
    need(min(config["data"]["std"]) > 0, "data.std", "every value must be positive")
    need(config["optim"]["lr"] > 0, "optim.lr", "must be positive")
    need(config["optim"]["weight_decay"] >= 0, "optim.weight_decay", "must be 0 or more")
    need(0 <= config["optim"]["min_lr"] <= config["optim"]["lr"], "optim.min_lr",
         "must be between 0 and optim.lr")


def _check_crop_fits_network(config: dict, need) -> None:
    """Training crops go to the network as they are: sides must be multiples of its divisor."""
    info = NETWORKS.get(config["model"]["name"])
    if info is None:  # an unknown name is reported when the network is built
        return
    divisor = info.size_divisor
    fitted = [round_up_to_multiple(side, divisor) for side in config["augment"]["crop"]]
    need(fitted == list(config["augment"]["crop"]), "augment.crop",
         f"{info.name} needs [height, width] multiples of {divisor}, e.g. {fitted}")


def read_recipe_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path}: no such file (the shipped ones are in config/train/)")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {path}: not a text file, expected a YAML recipe like "
                          f"config/train/fastscnn_synth.yaml") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of sections (model, data, train, "
                          f"...), found {type(data).__name__}")
    return data


def merge_into(config: dict, values: dict, source: str) -> None:
    """Set every leaf of the nested `values` into `config`, checking keys and types."""
    for key, value in _flatten(values):
        set_value(config, key, value, source)


def apply_overrides(config: dict, overrides) -> None:
    """Apply `key=value` strings; the value is YAML (`0.01`, `true`, `[448, 448]`, `null`)."""
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set optim.lr=0.01")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML "
                              f"({' '.join(str(exc).split())})") from exc
        set_value(config, key, value, "--set")


def set_value(config: dict, key: str, value: Any, source: str = "--set") -> None:
    """Check `value` against the schema entry of the dotted `key` and store it."""
    option = SCHEMA.get(key)
    if option is None:
        parent = _free_form_parent(key)
        if parent is None:
            raise ConfigError(f"{source}: unknown config key {key!r}{_suggest(key)}")
        options = get_value(config, parent)
        options[key[len(parent) + 1:]] = value
        return
    _assign(config, key, _checked(key, value, option, source))


def get_value(config: dict, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def describe() -> str:
    """Every key with its default and meaning, one per line (for --help)."""
    lines = []
    for key, option in SCHEMA.items():
        allowed = f" ({'|'.join(option.choices)})" if option.choices else ""
        lines.append(f"  {key} = {option.default!r}{allowed}: {option.help}")
    return "\n".join(lines)


def _free_form_parent(key: str) -> str | None:
    """`model.options.dropout` belongs to the free-form dict `model.options`."""
    for name, option in SCHEMA.items():
        if option.kind == "dict" and key.startswith(name + ".") and len(key) > len(name) + 1:
            return name
    return None


def _suggest(key: str) -> str:
    names = list(SCHEMA)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    initials = "".join(word[:1] for word in leaf.split("_"))  # learning_rate -> lr
    close = [n for n in names if n.rsplit(".", 1)[-1] in (leaf, initials)] + [
        n for n in close if n.rsplit(".", 1)[-1] not in (leaf, initials)]
    if not close:
        section = key.split(".", 1)[0]
        close = [n for n in names if n.startswith(section + ".")][:6]
    return f" (close matches: {', '.join(close[:4])})" if close else (
        f" (sections: {', '.join(sorted({n.split('.')[0] for n in names}))})")


def _checked(key: str, value: Any, option: Option, source: str) -> Any:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} = {value!r} is of type {type(value).__name__}, "
                           f"expected {expected}")

    if value is None:
        if option.nullable:
            return None
        raise wrong(_expected(option))
    kind = option.kind
    if kind in ("str", "path"):
        if not isinstance(value, str):
            raise wrong("a string" if kind == "str" else "a file or folder path")
        if option.choices and value not in option.choices:
            raise ConfigError(f"{source}: {key} = {value!r} is not allowed "
                              f"(allowed: {', '.join(option.choices)})")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if kind == "float":
        number = _as_float(value)
        if number is None:
            raise wrong("a number")
        return number
    if kind in ("floats", "ints"):
        if not isinstance(value, (list, tuple)):
            raise wrong(_expected(option))
        if option.length is not None and len(value) != option.length:
            raise ConfigError(f"{source}: {key} = {value!r} has {len(value)} values, expected "
                              f"{_expected(option)}")
        if kind == "ints":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise wrong(_expected(option))
            return list(value)
        numbers = [_as_float(v) for v in value]
        if any(n is None for n in numbers):
            raise wrong(_expected(option))
        return numbers
    if kind == "dict":
        if not isinstance(value, dict):
            raise wrong("a mapping (key: value)")
        return dict(value)
    raise AssertionError(f"schema kind {kind!r} of {key} is not handled")


def _expected(option: Option) -> str:
    count = f"{option.length} " if option.length else ""
    return {
        "str": "a string", "path": "a path", "bool": "true or false", "int": "an integer",
        "float": "a number", "dict": "a mapping",
        "floats": f"a list of {count}numbers, e.g. {option.default}",
        "ints": f"a list of {count}integers, e.g. {option.default}",
    }[option.kind] + (" or null" if option.nullable else "")


def _as_float(value: Any) -> float | None:
    # PyYAML reads 1e-4 (no dot) as a string: accept any text that Python parses as a number.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _flatten(values: dict, prefix: str = ""):
    for name, value in values.items():
        key = f"{prefix}{name}"
        option = SCHEMA.get(key)
        if isinstance(value, dict) and (option is None or option.kind != "dict") and (
                _free_form_parent(key) is None):
            yield from _flatten(value, key + ".")
        elif prefix == "" and key in _SECTIONS:
            raise ConfigError(f"section {key!r} holds {value!r}, expected a mapping of its "
                              f"keys ({', '.join(n for n in SCHEMA if n.startswith(key + '.'))})")
        else:
            yield key, value


def _assign(config: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
