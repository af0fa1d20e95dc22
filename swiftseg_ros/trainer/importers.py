"""Foreign weights into swiftseg checkpoints (`swiftseg-import`).

Three sources:

- `swiftnet-official`: a state_dict saved by the SwiftNet authors' code (orsic/swiftnet,
  2020, `SemsegModel(resnet18(...), 19)`: the released Cityscapes single-scale ResNet-18
  model `rn18_single_scale/model_best.pt`). Every key is renamed by `OFFICIAL_RENAMES` or
  reported; the input normalization is read from the model's own buffers
  (`backbone.img_mean/img_std`, on 0-255 RGB: their pipeline reads images with PIL
  `convert('RGB')`, so no channel swap is needed). The 2019 code's files
  (`swiftnet_ss_cs.pt`) have another head (a 3x3 conv without bias) and normalize
  outside the model; they are refused with a message saying so.
- `fastscnn-tramac`: the Cityscapes model of the Fast-SCNN port
  github.com/Tramac/Fast-SCNN-pytorch (`weights/fast_scnn_citys.pth`), in its own
  module, `fastscnn_port.py`.
- `torchvision`: an ImageNet `resnet18` / `mobilenet_v2` state_dict turned into a
  starting checkpoint, with the mapping the trainer uses (`load_imagenet_encoder`).

The authors' ResNet blocks apply their final ReLU in place to the residual sum they
also return as the lateral output, so their decoder and SPP see laterals after the
ReLU (not the pre-ReLU sums the paper's Figure 2 describes); imported models are built
with `lateral_after_relu=True` to compute what the authors' model computes.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from swiftseg_ros.checkpoint import load_state_strict, make_meta, save_checkpoint
from swiftseg_ros.classes import class_set_for_weights, default_palette, load_class_set
from swiftseg_ros.cli import ArgumentParser, check_network, write_json
from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.files import check_output_file
from swiftseg_ros.nets import NETWORKS, build_model, load_imagenet_encoder
from swiftseg_ros.nets.pretrained import read_state_dict
from swiftseg_ros.statedict import fit_problems
from swiftseg_ros.trainer import fastscnn_port

SOURCES = ("swiftnet-official", "fastscnn-tramac", "torchvision")
OFFICIAL_NETWORKS = ("swiftnet_rn18",)

# The authors' module names (orsic/swiftnet models/resnet/resnet_single_scale.py,
# models/util.py, models/semseg.py) and ours (swiftseg_ros/nets/swiftnet.py, resnet.py):
# `{i}` is a number, `{rest}` the remaining path (`norm.weight`, `0.bn1.running_var`, ...).
OFFICIAL_RENAMES = (
    ("backbone.conv1.{rest}", "encoder.conv1.{rest}"),
    ("backbone.bn1.{rest}", "encoder.bn1.{rest}"),
    ("backbone.layer{i}.{rest}", "encoder.layer{i}.{rest}"),
    ("backbone.spp.spp.spp_bn.{rest}", "spp.bottleneck.{rest}"),
    ("backbone.spp.spp.spp{i}.{rest}", "spp.levels.{i}.{rest}"),
    ("backbone.spp.spp.spp_fuse.{rest}", "spp.fuse.{rest}"),
    ("backbone.upsample.{i}.bottleneck.{rest}", "upsample.{i}.bottleneck.{rest}"),
    ("backbone.upsample.{i}.blend_conv.{rest}", "upsample.{i}.blend.{rest}"),
    ("logits.{rest}", "logits.{rest}"),
)
# buffers of the authors' ResNet: the model normalizes its 0-255 RGB input itself as
# (image / img_scale - img_mean) / img_std; img_scale exists only when it is not 1
OFFICIAL_NORMALIZATION = ("backbone.img_mean", "backbone.img_std")
OFFICIAL_SCALE = "backbone.img_scale"
OFFICIAL_OPTIONS = {"lateral_after_relu": True}
OFFICIAL_TRAIN_SIZE = (768, 768)
CITYSCAPES_CLASSES = 19


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>[0-9]+)")
    return re.compile(pattern.replace(r"\{rest\}", r"(?P<rest>.+)") + r"\Z")


_RENAMES = tuple((_template_regex(theirs), theirs, _template_regex(ours), ours)
                 for theirs, ours in OFFICIAL_RENAMES)


def official_to_ours(key: str) -> str | None:
    """Our state_dict key for one of the authors' keys, or None when no rule covers it."""
    for theirs_re, _, _, ours in _RENAMES:
        match = theirs_re.match(key)
        if match:
            return ours.format(**match.groupdict())
    return None


def ours_to_official(key: str) -> str | None:
    """The authors' key for one of ours (the inverse of `official_to_ours`)."""
    for _, theirs, ours_re, _ in _RENAMES:
        match = ours_re.match(key)
        if match:
            return theirs.format(**match.groupdict())
    return None


def official_normalization(state: dict, source: str) -> tuple[list, list]:
    """(mean, std) on 0-255 RGB from an authors' state_dict's normalization buffers."""
    mean = state["backbone.img_mean"].double().flatten()
    std = state["backbone.img_std"].double().flatten()
    scale = state.get(OFFICIAL_SCALE, torch.ones(1, dtype=torch.float64)).double().flatten()
    if mean.numel() != 3 or std.numel() != 3 or scale.numel() not in (1, 3):
        raise CheckpointError(
            f"{source}: backbone.img_mean/img_std/img_scale hold {mean.numel()}, {std.numel()} "
            f"and {scale.numel()} values, expected 3 each (RGB; img_scale 1 or 3)")
    # (x / scale - mean) / std == (x - mean * scale) / (std * scale)
    return (mean * scale).tolist(), (std * scale).tolist()


def convert_official(state: dict, network: str, source: str) -> tuple[dict, dict]:
    """The authors' state_dict renamed to ours: (state_dict for `network`, facts found).

    Raises CheckpointError naming the unexpected keys (theirs that map to nothing of
    ours), the missing ones (in their naming) and the mis-shaped ones.
    """
    if network not in OFFICIAL_NETWORKS:
        raise ConfigError(
            f"--network {network}: the authors' released models are single-scale ResNet-18 "
            f"SwiftNets; import them as {', '.join(OFFICIAL_NETWORKS)}")
    logits = state.get("logits.conv.weight")
    # a file without the head is reported below with the other missing keys
    num_classes = int(logits.shape[0]) if isinstance(logits, torch.Tensor) and logits.dim() \
        else CITYSCAPES_CLASSES
    model = build_model(network, num_classes, **OFFICIAL_OPTIONS)
    own = model.state_dict()
    renamed, unexpected = {}, []
    for key, value in state.items():
        if key in OFFICIAL_NORMALIZATION or key == OFFICIAL_SCALE:
            continue
        ours = official_to_ours(key)
        if ours is None or ours not in own:
            unexpected.append(key)
        else:
            renamed[ours] = value
    missing = sorted([ours_to_official(k) or k for k in own if k not in renamed]
                     + [k for k in OFFICIAL_NORMALIZATION if k not in state])
    mismatched = [f"{ours_to_official(k)} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
                  for k, v in renamed.items() if v.shape != own[k].shape]
    problems = fit_problems(missing, sorted(unexpected), mismatched)
    if problems:
        raise CheckpointError(
            f"{source}: not the SwiftNet authors' single-scale ResNet-18 model "
            f"(orsic/swiftnet SemsegModel over resnet18): {problems}"
            f"{_release_2019_hint(state)}")
    load_state_strict(model, renamed, source)
    mean, std = official_normalization(state, source)
    return model.state_dict(), {"num_classes": num_classes, "mean": mean, "std": std,
                                "keys": len(state)}


def _release_2019_hint(state: dict) -> str:
    logits = state.get("logits.conv.weight")
    if "backbone.img_mean" in state or not isinstance(logits, torch.Tensor) \
            or logits.dim() != 4 or logits.shape[-1] != 3:
        return ""
    return ("; this looks like the 2019 release (swiftnet_ss_cs.pt), whose head is a 3x3 conv "
            "without bias and whose normalization is outside the model: use the 2020 release "
            "rn18_single_scale/model_best.pt of github.com/orsic/swiftnet")


def import_official(path, network: str, out, classes: str | None = None) -> dict:
    """Convert the authors' SwiftNet file at `path` into our checkpoint `out`."""
    path = Path(path)
    state, facts = convert_official(read_state_dict(path), network, str(path))
    names, palette = class_set_for_weights(classes or "cityscapes", facts["num_classes"],
                                           str(path))
    meta = make_meta(
        network, facts["num_classes"], class_names=names, palette=palette, mean=facts["mean"],
        std=facts["std"], train_size=OFFICIAL_TRAIN_SIZE, network_options=OFFICIAL_OPTIONS,
        provenance={"source": "swiftnet-official", "source_file": str(path.resolve()),
                    "code": "https://github.com/orsic/swiftnet",
                    "normalization": "backbone.img_mean/img_std of the file",
                    "command": f"swiftseg-import --from swiftnet-official {path}"})
    save_checkpoint(out, state, meta)
    return {"out": str(out), "source": "swiftnet-official", "network": network,
            "num_classes": facts["num_classes"], "keys_mapped": facts["keys"],
            "mean": facts["mean"], "std": facts["std"]}


def import_torchvision(path, network: str, out, num_classes: int | None = None,
                       classes: str | None = None) -> dict:
    """A starting checkpoint: `network` with its encoder from a torchvision ImageNet file."""
    info = NETWORKS.get(network)
    if info is None or info.imagenet_encoder is None:
        usable = [n for n, i in NETWORKS.items() if i.imagenet_encoder]
        raise ConfigError(f"--network {network}: torchvision ImageNet weights initialize "
                          f"{', '.join(usable)}")
    if classes is None and num_classes is None:
        classes = "cityscapes"
    if classes is not None:
        class_set = load_class_set(classes)
        if num_classes is not None and num_classes != class_set.num_classes:
            raise ConfigError(f"--num-classes {num_classes} contradicts --classes {classes} "
                              f"({class_set.num_classes} classes); give one of them")
        num_classes = class_set.num_classes
        names, palette = list(class_set.class_names), [list(c) for c in class_set.palette]
    else:
        names, palette = [f"class_{i}" for i in range(num_classes)], default_palette(num_classes)
    model = build_model(network, num_classes)
    result = load_imagenet_encoder(model, path)
    meta = make_meta(
        network, num_classes, class_names=names, palette=palette,
        provenance={"source": "torchvision", "source_file": str(Path(path).resolve()),
                    "imagenet_encoder": info.imagenet_encoder,
                    "note": "ImageNet encoder, randomly initialized decoder: train before use",
                    "command": f"swiftseg-import --from torchvision {path}"})
    save_checkpoint(out, model, meta)
    return {"out": str(out), "source": "torchvision", "network": network,
            "num_classes": num_classes, "keys_mapped": len(result.loaded),
            "keys_ignored": result.ignored}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-import",
        description="Convert weights made elsewhere into a swiftseg checkpoint: the SwiftNet "
                    "authors' released Cityscapes model, the Fast-SCNN port's "
                    "(Tramac/Fast-SCNN-pytorch) Cityscapes model, or torchvision ImageNet "
                    "encoders.")
    parser.add_argument("file", help="the state_dict file to convert (.pt / .pth)")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="who made the file")
    parser.add_argument("--network", choices=sorted(NETWORKS),
                        help="our network to build: required for torchvision; the authors' "
                             "model is swiftnet_rn18, the port's fastscnn (the defaults)")
    parser.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write")
    parser.add_argument("--num-classes", type=int,
                        help="torchvision: class count of the new head (default: that of "
                             "--classes)")
    parser.add_argument("--classes", metavar="NAME|FILE",
                        help="class set: cityscapes, camvid or a palette YAML (default "
                             "cityscapes)")
    parser.add_argument("--json", metavar="FILE", help="write what was imported here")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    return parser


def check_out_free(out: str, force: bool) -> None:
    """Refuse, before any work, a checkpoint path that cannot be written or would overwrite
    one unasked (replay and train do the same)."""
    check_output_file(out, "--out", force=force)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_out_free(args.out, args.force)
    check_network(args.network)
    if args.json:
        check_output_file(args.json, "--json")
    if args.source == "swiftnet-official":
        if args.num_classes is not None:
            raise ConfigError("--num-classes: the authors' file fixes the class count; "
                              "leave it out")
        info = import_official(args.file, args.network or OFFICIAL_NETWORKS[0], args.out,
                               classes=args.classes)
        print(f"wrote {info['out']}: {info['network']}, {info['num_classes']} classes, all "
              f"{info['keys_mapped']} keys of {args.file} mapped; input mean "
              f"{[round(m, 3) for m in info['mean']]} std {[round(s, 3) for s in info['std']]} "
              f"on 0-255 RGB (from the file)")
    elif args.source == "fastscnn-tramac":
        if args.num_classes is not None:
            raise ConfigError("--num-classes: the port's file fixes the class count; "
                              "leave it out")
        if args.network not in (None, fastscnn_port.NETWORK):
            raise ConfigError(f"--network {args.network}: the Fast-SCNN port's model imports "
                              f"as {fastscnn_port.NETWORK}; leave --network out")
        info = fastscnn_port.import_port(args.file, args.out, classes=args.classes)
        print(fastscnn_port.summary_line(info, args.file))
    else:
        if args.network is None:
            raise ConfigError("--network is required with --from torchvision: the network "
                              "whose encoder the ImageNet weights initialize")
        info = import_torchvision(args.file, args.network, args.out,
                                  num_classes=args.num_classes, classes=args.classes)
        print(f"wrote {info['out']}: {info['network']} with its encoder from {args.file} "
              f"({info['keys_mapped']} keys, ignored {len(info['keys_ignored'])} classifier "
              f"keys), {info['num_classes']} classes, decoder randomly initialized")
    write_json(args.json, info)
    return 0
