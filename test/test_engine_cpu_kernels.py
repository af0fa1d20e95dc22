"""oneDNN convolution routing: same outputs as nn.Conv2d, parameters and sharing kept."""

import copy

import pytest
import torch
from torch import nn

from swiftseg_ros.engine.kernels.cpu_kernels import (
    OneDnnConv2d,
    onednn_available,
    use_onednn_convolutions,
)
from swiftseg_ros.nets import NETWORKS, build_model, fuse_conv_bn

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("conv", [
    nn.Conv2d(8, 16, 3, padding=1),
    nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8, bias=False),
    nn.Conv2d(8, 4, 1),
], ids=["dense-3x3", "depthwise-dilated-strided", "pointwise"])
def test_onednn_conv_equals_torch_conv(conv):
    torch.manual_seed(0)
    x = torch.randn(1, 8, 9, 13).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = conv(x)
        torch.testing.assert_close(OneDnnConv2d(conv)(x), expected, atol=1e-5, rtol=1e-5)


def test_fused_network_gives_the_same_logits_through_onednn():
    torch.manual_seed(0)
    model = fuse_conv_bn(build_model("fastscnn", 3, **NETWORKS["fastscnn"].inference_options))
    routed = copy.deepcopy(model)
    assert use_onednn_convolutions(routed) > 10
    assert not any(type(m) is nn.Conv2d for m in routed.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(routed.forward_logits(x), model.forward_logits(x),
                                   atol=1e-4, rtol=1e-4)


def test_a_shared_conv_stays_shared():
    shared = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.ModuleDict({"a": nn.Sequential(shared), "b": nn.Sequential(shared)})
    assert use_onednn_convolutions(model) == 1
    assert model["a"][0] is model["b"][0]
    assert model["a"][0].weight is shared.weight
