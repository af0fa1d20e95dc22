"""The Fast-SCNN port's Cityscapes weights as a swiftseg checkpoint (`--from fastscnn-tramac`).

The port is the widely used PyTorch Fast-SCNN of github.com/Tramac/Fast-SCNN-pytorch
(`models/fast_scnn.py`, class `FastSCNN`); its repository holds the Cityscapes model
`weights/fast_scnn_citys.pth` (19 classes; its README reports 54.84% mIoU). Its
`train.py` saves `model.state_dict()` as it is: keys start with `module.` when it
trained under DataParallel (more than one GPU), which is removed, and `auxlayer.*` (the
auxiliary head of `--aux` training, not used at inference) is skipped.

How the port's computation is reproduced here:
- what it computes differently from the paper's network is switched on by the network
  options in `PORT_OPTIONS` (see nets/fastscnn.py), which the checkpoint stores, so
  `checkpoint.load_model` and the engine build that variant unasked;
- the 1x1 convs of its feature fusion (`conv_lower_res`, `conv_higher_res`) have a bias
  followed by BatchNorm: BN(conv(x) + b) with running mean m is BN(conv(x)) with running
  mean m - b, so the bias is folded into the running mean and the network is unchanged;
- its input is torchvision's `ToTensor()` then `Normalize(ImageNet mean, std)` on PIL
  RGB images (train.py, eval.py, demo.py): on 0-255 RGB pixels, mean 255 * (0.485,
  0.456, 0.406) and std 255 * (0.229, 0.224, 0.225).
"""

from __future__ import annotations

from pathlib import Path

import torch

from swiftseg_ros.checkpoint import load_state_strict, make_meta, save_checkpoint
from swiftseg_ros.classes import class_set_for_weights
from swiftseg_ros.errors import CheckpointError, UnsafeFileError
from swiftseg_ros.nets import build_model
from swiftseg_ros.nets.pretrained import read_state_dict
from swiftseg_ros.statedict import fit_problems, listing

SOURCE = "fastscnn-tramac"
NETWORK = "fastscnn"
CODE_URL = "https://github.com/Tramac/Fast-SCNN-pytorch"
# the released model has no auxiliary head (the port's `aux` is off by default)
PORT_OPTIONS = {"aux_heads": False, "align_corners": True, "depthwise_relu": True,
                "fusion_dilation": 1, "first_conv_padding": 0}
PORT_MEAN = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
PORT_STD = tuple(255.0 * s for s in (0.229, 0.224, 0.225))
PORT_TRAIN_SIZE = (768, 768)  # its train.py's crop size, as its README's result states
PORT_CLASSES = 19
REPORTED = "54.84% mIoU, 92.37% pixel accuracy on Cityscapes (the port's README, crop 768)"
AUX_PREFIX = "auxlayer."
DATA_PARALLEL_PREFIX = "module."
LOGITS_WEIGHT = "classifier.conv.1.weight"
# the port's biased 1x1 fusion convs -> our BN (after the bias-free conv) taking the bias
FOLDED_BIASES = {
    "feature_fusion.conv_lower_res.0.bias": "fusion.lower.1.1",
    "feature_fusion.conv_higher_res.0.bias": "fusion.higher.1",
}
# (expansion t is 6 everywhere) blocks per bottleneck stage, as in the paper's Table 1
BOTTLENECK_BLOCKS = (3, 3, 3)


def _dsconv(theirs: str, ours: str) -> dict[str, str]:
    # their _DSConv: conv.0 depthwise, conv.1 BN, (conv.2 ReLU), conv.3 pointwise, conv.4 BN
    return {f"{theirs}.conv.0": f"{ours}.0.0", f"{theirs}.conv.1": f"{ours}.0.1",
            f"{theirs}.conv.3": f"{ours}.1.0", f"{theirs}.conv.4": f"{ours}.1.1"}


def _module_renames() -> dict[str, str]:
    """The port's path -> ours for every conv and BatchNorm module (keys are path.name)."""
    renames = {"learning_to_downsample.conv.conv.0": "downsample.0.0",
               "learning_to_downsample.conv.conv.1": "downsample.0.1"}
    for i in (1, 2):
        renames.update(_dsconv(f"learning_to_downsample.dsconv{i}", f"downsample.{i}"))
    index = 0
    for stage, blocks in enumerate(BOTTLENECK_BLOCKS, start=1):
        for block in range(blocks):
            theirs = f"global_feature_extractor.bottleneck{stage}.{block}.block"
            ours = f"global_features.bottlenecks.{index}.conv"
            renames.update({f"{theirs}.0.conv.0": f"{ours}.0.0", f"{theirs}.0.conv.1": f"{ours}.0.1",
                            f"{theirs}.1.conv.0": f"{ours}.1.0", f"{theirs}.1.conv.1": f"{ours}.1.1",
                            f"{theirs}.2": f"{ours}.2", f"{theirs}.3": f"{ours}.3"})
            index += 1
    for level in range(4):
        for part in (0, 1):
            renames[f"global_feature_extractor.ppm.conv{level + 1}.conv.{part}"] = \
                f"global_features.ppm.levels.{level}.{part}"
    for part in (0, 1):
        renames[f"global_feature_extractor.ppm.out.conv.{part}"] = f"global_features.ppm.fuse.{part}"
        renames[f"feature_fusion.dwconv.conv.{part}"] = f"fusion.lower.0.{part}"
        renames[f"feature_fusion.conv_lower_res.{part}"] = f"fusion.lower.1.{part}"
        renames[f"feature_fusion.conv_higher_res.{part}"] = f"fusion.higher.{part}"
    for i in (1, 2):
        renames.update(_dsconv(f"classifier.dsconv{i}", f"classifier.{i - 1}"))
    renames["classifier.conv.1"] = "classifier.3"
    return renames


MODULE_RENAMES = _module_renames()
_OURS_TO_PORT = {ours: theirs for theirs, ours in MODULE_RENAMES.items()}


def port_to_ours(key: str) -> str | None:
    """Our state_dict key for one of the port's, or None when no module of ours matches."""
    module, _, name = key.rpartition(".")
    ours = MODULE_RENAMES.get(module)
    return f"{ours}.{name}" if ours else None


def ours_to_port(key: str) -> str | None:
    """The port's key for one of ours (the inverse of `port_to_ours`)."""
    module, _, name = key.rpartition(".")
    theirs = _OURS_TO_PORT.get(module)
    return f"{theirs}.{name}" if theirs else None


def read_port_file(path: Path) -> dict:
    """The file's state_dict; a pickled whole model is refused with what to do instead."""
    try:
        return read_state_dict(path)
    except UnsafeFileError as exc:
        raise CheckpointError(
            f"{path}: a pickled Python object ({exc.blocked or 'unknown class'}), not a plain "
            f"state_dict: most likely a whole model saved with torch.save(model), which cannot "
            f"be read without running code; where the port's code is installed and only if you trust "
            f"the file, save its weights with torch.save(torch.load(FILE, weights_only=False)"
            f".state_dict(), 'fast_scnn_state.pth') and import that file") from exc


def convert_port(state: dict, source: str) -> tuple[dict, dict]:
    """The port's state_dict as ours for the port's Fast-SCNN variant: (state_dict, facts).

    Raises CheckpointError naming unexpected keys, missing ones (in the port's naming) and
    mis-shaped ones: a file of another network fails that way.
    """
    prefixed = bool(state) and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state)
    if prefixed:
        state = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    skipped = sorted(k for k in state if k.startswith(AUX_PREFIX))
    logits = state.get(LOGITS_WEIGHT)
    # a file without the classifier is reported below with the other missing keys
    num_classes = (int(logits.shape[0]) if isinstance(logits, torch.Tensor) and logits.dim() == 4
                   else PORT_CLASSES)
    model = build_model(NETWORK, num_classes, **PORT_OPTIONS)
    own = model.state_dict()
    renamed, biases, unexpected = {}, {}, []
    for key, value in state.items():
        ours = port_to_ours(key)
        if key in FOLDED_BIASES:
            biases[key] = value
        elif ours in own:
            renamed[ours] = value
        elif key not in skipped:
            unexpected.append(key)
    missing = sorted([ours_to_port(k) or k for k in own
                      if k not in renamed and not k.endswith("num_batches_tracked")]
                     + [k for k in FOLDED_BIASES if k not in state])
    mismatched = [f"{ours_to_port(k)} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
                  for k, v in renamed.items() if v.shape != own[k].shape]
    for key, bias in biases.items():
        expected = own[FOLDED_BIASES[key] + ".running_mean"].shape
        if bias.shape != expected:
            mismatched.append(f"{key} {tuple(bias.shape)} (expected {tuple(expected)})")
    problems = fit_problems(missing, sorted(unexpected), mismatched)
    if problems:
        raise CheckpointError(f"{source}: not the Fast-SCNN port's model ({CODE_URL} "
                              f"models/fast_scnn.py FastSCNN): {problems}")
    for key, bias in biases.items():
        mean = FOLDED_BIASES[key] + ".running_mean"
        renamed[mean] = (renamed[mean].double() - bias.double()).to(renamed[mean].dtype)
    # counters of BN updates: meaningless at inference, absent from files of torch < 0.4.1
    renamed.update({k: v for k, v in own.items() if k not in renamed})
    load_state_strict(model, renamed, source)
    return model.state_dict(), {"num_classes": num_classes, "keys": len(state) - len(skipped),
                                "skipped": skipped, "data_parallel": prefixed}


def import_port(path, out, classes: str | None = None) -> dict:
    """Convert the port's file at `path` into our checkpoint `out`; returns what was done."""
    path = Path(path)
    state, facts = convert_port(read_port_file(path), str(path))
    num_classes = facts["num_classes"]
    names, palette = class_set_for_weights(
        classes or "cityscapes", num_classes, str(path),
        detail=f" ({LOGITS_WEIGHT} has {num_classes} rows)",
        advice=f"the port's Cityscapes model predicts {PORT_CLASSES}: for a model trained on "
               f"another dataset give --classes with a class set of {num_classes} classes")
    meta = make_meta(
        NETWORK, num_classes, class_names=names, palette=palette, mean=PORT_MEAN, std=PORT_STD,
        train_size=PORT_TRAIN_SIZE, network_options=PORT_OPTIONS,
        provenance={"source": SOURCE, "source_file": str(path.resolve()), "code": CODE_URL,
                    "reported": REPORTED,
                    "normalization": "torchvision ToTensor + Normalize(ImageNet mean, std) on "
                                     "RGB, as the port's train.py, eval.py and demo.py",
                    "command": f"swiftseg-import --from {SOURCE} {path}"})
    save_checkpoint(out, state, meta)
    return {"out": str(out), "source": SOURCE, "network": NETWORK, "num_classes": num_classes,
            "keys_mapped": facts["keys"], "keys_skipped": facts["skipped"],
            "data_parallel_prefix_removed": facts["data_parallel"],
            "network_options": dict(PORT_OPTIONS), "mean": list(PORT_MEAN),
            "std": list(PORT_STD)}


def summary_line(info: dict, file) -> str:
    """What `swiftseg-import` prints after a successful import of the port's file."""
    skipped = (f", skipped {len(info['keys_skipped'])} auxiliary-head keys "
               f"({listing(info['keys_skipped'], 2)}: training only)"
               if info["keys_skipped"] else "")
    prefix = ", removed DataParallel's 'module.' prefix" if info["data_parallel_prefix_removed"] \
        else ""
    options = ", ".join(f"{k}={v}" for k, v in info["network_options"].items())
    return (f"wrote {info['out']}: {info['network']} ({options}), {info['num_classes']} "
            f"classes, all {info['keys_mapped']} keys of {file} mapped{skipped}{prefix}; input "
            f"mean {[round(m, 3) for m in info['mean']]} std {[round(s, 3) for s in info['std']]} "
            f"on 0-255 RGB (ImageNet's, as the port normalizes)")
