"""Class selection along edges only gives the labels of upsampling every logit."""

import pytest
import torch
import torch.nn.functional as F

from swiftseg_ros.engine.edge_labels import EdgeLabels, applies
from swiftseg_ros.engine.palette import CpuColorLookup
from swiftseg_ros.nets import NETWORKS, build_model
from swiftseg_ros.trainer.synth import generate_frame


def reference(logits, size):
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).max(1)[1][0]


def edge_labels(logits, size):
    labels = torch.empty(size, dtype=torch.uint8)
    EdgeLabels(logits, size).run(logits, labels)
    return labels


@pytest.mark.parametrize("network", ["fastscnn", "swiftnet_mnv2"])
def test_labels_equal_upsample_then_max_on_network_logits(network):
    torch.manual_seed(0)
    model = build_model(network, 9, **NETWORKS[network].inference_options).eval()
    frame = torch.from_numpy(generate_frame(2, 0, 256, 128)[0]).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = model.forward_logits((frame.float() - 100.0) / 50.0)
    expected = reference(logits, (128, 256))
    assert len(expected.unique()) > 1
    assert (edge_labels(logits, (128, 256)).long() == expected).float().mean() >= 0.9999


@pytest.mark.parametrize("factor, classes", [(2, 3), (4, 19), (8, 5)])
def test_labels_equal_upsample_then_max_on_noisy_logits(factor, classes):
    # smooth blobs plus noise: many edges, every border and corner case of the blocks
    torch.manual_seed(factor)
    logits = F.interpolate(torch.randn(1, classes, 5, 7), size=(13, 17), mode="bilinear")
    logits = logits + 0.3 * torch.randn_like(logits)
    size = (13 * factor, 17 * factor)
    agreement = (edge_labels(logits, size).long() == reference(logits, size)).float().mean()
    assert agreement >= 0.999


def test_uniform_logits_give_one_class_everywhere():
    logits = torch.zeros(1, 4, 6, 8)
    logits[:, 2] = 1.0
    assert edge_labels(logits, (48, 64)).unique().tolist() == [2]


@pytest.mark.parametrize("logits_hw, output_hw, expected", [
    ((16, 32), (128, 256), True),
    ((16, 32), (120, 256), False),   # not a whole multiple
    ((16, 32), (48, 96), False),     # odd factor
    ((16, 32), (64, 256), False),    # different factors
    ((16, 32), (16, 32), False),     # nothing to upsample
])
def test_applies_to_even_whole_factors_only(logits_hw, output_hw, expected):
    assert applies(torch.zeros(1, 3, *logits_hw), output_hw) is expected


def test_cpu_color_lookup_is_the_palette_of_the_labels_and_black_beyond_it():
    palette = torch.randint(0, 256, (6, 3), dtype=torch.uint8)
    labels = torch.randint(0, 6, (36, 44), dtype=torch.uint8)
    labels[0, :5] = torch.tensor([6, 7, 200, 254, 255], dtype=torch.uint8)
    color = torch.full((36, 44, 3), 9, dtype=torch.uint8)
    CpuColorLookup(palette, labels, color).run()
    expected = torch.cat([palette, torch.zeros((250, 3), dtype=torch.uint8)])[labels.long()]
    assert torch.equal(color, expected)


def test_both_edge_paths_give_upsample_then_max_labels():
    # 19 near-tied classes: edge blocks where just two classes can win and blocks where
    # more can, in one frame
    torch.manual_seed(5)
    logits = F.interpolate(torch.randn(1, 19, 6, 8), size=(16, 24), mode="bilinear")
    logits = logits + 0.05 * torch.randn_like(logits)
    edges = EdgeLabels(logits, (128, 192))
    labels = torch.empty((128, 192), dtype=torch.uint8)
    edges.run(logits, labels)
    assert (labels.long() == reference(logits, (128, 192))).float().mean() >= 0.9999
    # both kinds occurred: count the candidates per edge quad as the selection does
    quads = (~edges.uniform).view(-1).nonzero().view(-1)
    flat = F.pad(logits, (1, 1, 1, 1), mode="replicate").view(19, -1)
    corners = (quads // 25) * 26 + quads % 25
    values = flat[:, (corners.view(-1, 1) + edges.corner_offsets).view(-1)].view(19, -1, 4)
    candidates = (values.amax(2) >= values.amin(2).amax(0)).sum(0)
    assert (candidates == 2).any() and (candidates > 2).any()


@pytest.mark.parametrize("align_corners", [False, True])
def test_postprocessor_uses_edges_only_for_centre_aligned_networks(align_corners):
    from swiftseg_ros.engine.postprocess import Postprocessor

    torch.manual_seed(3)
    logits = F.interpolate(torch.randn(1, 5, 4, 8), size=(8, 16), mode="bilinear")
    palette = torch.randint(0, 256, (5, 3), dtype=torch.uint8)
    post = Postprocessor(logits, ("label", "color"), "logits", (64, 128), palette, 0.5,
                         align_corners=align_corners)
    post.run(logits)
    assert (post.edges is None) is align_corners
    expected = F.interpolate(logits, size=(64, 128), mode="bilinear",
                             align_corners=align_corners).max(1)[1][0]
    assert (post.outputs["label"].long() == expected).float().mean() >= 0.999
    assert torch.equal(post.outputs["color"], palette[post.outputs["label"].long()])
