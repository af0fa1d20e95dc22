"""Folding of conv -> BatchNorm pairs into the convs, for inference.

The SwiftNet paper times its models with batch norm fused into the preceding convs
(section 4.2). Every module that owns such pairs lists them in `conv_bn_pairs()`
(paths relative to itself): the encoders' post-activation pairs and all of
Fast-SCNN's. SwiftNet's decoder is pre-activation (BN -> ReLU -> conv): a ReLU sits
between each of its BNs and the next conv, so those BNs stay.
"""

from __future__ import annotations

import torch
from torch import nn


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every declared conv -> BN pair of `model` in place; returns `model` in eval mode.

    The BN's running statistics and affine parameters become the conv's weight scale and
    bias, and the BN is replaced by `nn.Identity`. The result is for inference only
    (its state_dict no longer has the BN keys); fusing twice changes nothing.
    """
    model.eval()
    for module in list(model.modules()):
        declare = getattr(module, "conv_bn_pairs", None)
        if declare is None:
            continue
        for conv_path, bn_path in declare():
            bn = module.get_submodule(bn_path)
            if isinstance(bn, nn.Identity):
                continue
            _fold_into_conv(module.get_submodule(conv_path), bn)
            parent_path, _, name = bn_path.rpartition(".")
            parent = module.get_submodule(parent_path) if parent_path else module
            setattr(parent, name, nn.Identity())
    return model


@torch.no_grad()
def _fold_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    # computed in float64 so that fused and unfused outputs agree to float32 rounding
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused_bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    conv.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(fused_bias.to(conv.weight.dtype))
