"""Class selection along edges only gives the labels of upsampling every logit, in both
implementations (torch's and the compiled loop)."""

import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.engine.kernels.edge_labels import EdgeLabels, applies, edge_kernels
from swiftseg_ros.engine.palette import CpuColorLookup
from swiftseg_ros.nets import NETWORKS, build_model
from swiftseg_ros.synthetic.frames import generate_frame


def reference(logits, size):
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).max(1)[1][0]


HAS_NUMBA = importlib.util.find_spec("numba") is not None
KINDS = ["torch", pytest.param("compiled", marks=pytest.mark.skipif(
    not HAS_NUMBA, reason="numba is not installed (the compiled edge selection needs it)"))]


def edge_labels(logits, size, kind="torch"):
    labels = torch.empty(size, dtype=torch.uint8)
    kernels, _ = edge_kernels(logits, size)
    kernels[kind]().run(logits, labels)
    return labels


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("network", ["fastscnn", "swiftnet_mnv2"])
def test_labels_equal_upsample_then_max_on_network_logits(network, kind):
    torch.manual_seed(0)
    model = build_model(network, 9, **NETWORKS[network].inference_options).eval()
    frame = torch.from_numpy(generate_frame(2, 0, 256, 128)[0]).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = model.forward_logits((frame.float() - 100.0) / 50.0)
    expected = reference(logits, (128, 256))
    assert len(expected.unique()) > 1
    assert (edge_labels(logits, (128, 256), kind).long() == expected).float().mean() >= 0.9999


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("factor, classes", [(2, 3), (4, 19), (8, 5)])
def test_labels_equal_upsample_then_max_on_noisy_logits(factor, classes, kind):
    # smooth blobs plus noise: many edges, every border and corner case of the blocks
    torch.manual_seed(factor)
    logits = F.interpolate(torch.randn(1, classes, 5, 7), size=(13, 17), mode="bilinear")
    logits = logits + 0.3 * torch.randn_like(logits)
    size = (13 * factor, 17 * factor)
    agreement = (edge_labels(logits, size, kind).long() == reference(logits, size)).float().mean()
    assert agreement >= 0.999


@pytest.mark.parametrize("kind", KINDS)
def test_uniform_logits_give_one_class_everywhere(kind):
    logits = torch.zeros(1, 4, 6, 8)
    logits[:, 2] = 1.0
    assert edge_labels(logits, (48, 64), kind).unique().tolist() == [2]


@pytest.mark.parametrize("kind", KINDS)
def test_ties_go_to_the_smaller_class_as_max_gives_them(kind):
    # an exact tie inside an edge block, 1 + 0.125 * -8 == 0 at the block's first column:
    # between two candidates (classes 0 and 3), then among three (1 and 2 equal, and 3)
    logits = torch.zeros(1, 4, 1, 2)
    logits[0, 3] = torch.tensor([[1.0, -7.0]])
    logits[0, 1:3] = -20.0
    for winner in (0, 1):
        expected = reference(logits, (4, 8))
        assert expected[0].tolist() == [3, 3] + [winner] * 6
        assert torch.equal(edge_labels(logits, (4, 8), kind).long(), expected)
        logits[0, 0], logits[0, 1:3] = -20.0, 0.0
    logits[0, 1:3] = 5.0  # classes 1 and 2 tied on top everywhere
    assert edge_labels(logits, (4, 8), kind).unique().tolist() == [1]


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_labels_are_torch_edge_labels_bit_for_bit(channels_last):
    torch.manual_seed(11)
    logits = F.interpolate(torch.randn(1, 19, 9, 12), size=(32, 64), mode="bilinear")
    logits = logits + 0.2 * torch.randn_like(logits)
    if channels_last:  # what a channels_last torch forward hands over
        logits = logits.contiguous(memory_format=torch.channels_last)
    assert torch.equal(edge_labels(logits, (256, 512), "compiled"),
                       edge_labels(logits, (256, 512), "torch"))


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_labels_of_bf16_logits_are_those_of_the_same_logits_in_fp32(channels_last):
    """A bf16 forward's logits, widened exactly: the fp32 selection's labels, bit for bit,
    and those of torch's edge selection in bf16 arithmetic on all but a few pixels."""
    torch.manual_seed(12)
    logits = F.interpolate(torch.randn(1, 19, 9, 12), size=(32, 64), mode="bilinear")
    logits = (logits + 0.2 * torch.randn_like(logits)).bfloat16()
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    compiled = edge_labels(logits, (256, 512), "compiled")
    assert torch.equal(compiled, edge_labels(logits.float(), (256, 512), "torch"))
    in_bf16 = edge_labels(logits, (256, 512), "torch")
    assert (compiled == in_bf16).float().mean() >= 0.999


def test_kernels_offered_say_why_one_is_left_out(monkeypatch):
    logits = torch.randn(1, 3, 4, 4)
    kernels, notes = edge_kernels(logits.half(), (16, 16))
    assert set(kernels) == {"torch"} and "fp32 or bf16 logits only" in notes["compiled"]
    monkeypatch.setitem(sys.modules, "swiftseg_ros.engine.kernels.edge_kernel", None)  # no numba
    kernels, notes = edge_kernels(logits, (16, 16))
    kernels["torch"]()
    if "compiled" in kernels:  # numba is installed: its import fails when it is built
        with pytest.raises(ImportError, match="pip install numba"):
            kernels["compiled"]()
    else:
        assert "pip install numba" in notes["compiled"]


def test_engine_times_the_edge_kernels_and_keeps_the_faster():
    engine = SegmentationEngine(EngineConfig(network="fastscnn", upsample="logits",
                                             outputs=("label", "color"), warmup_iters=1))
    result = engine.infer(np.full((64, 128, 3), 90, np.uint8), "rgb8")
    choice = engine.stats()["choices"]["edge_labels"]
    engine.release()
    assert result.label.shape == (64, 128)
    if HAS_NUMBA:
        assert set(choice["times_ms"]) == {"torch", "compiled"}
        assert choice["picked"] == min(choice["times_ms"], key=choice["times_ms"].get)
    else:
        assert choice["picked"] == "torch" and "numba" in choice["notes"]["compiled"]


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


@pytest.mark.parametrize("kind", KINDS)
def test_both_edge_paths_give_upsample_then_max_labels(kind):
    # 19 near-tied classes: edge blocks where just two classes can win and blocks where
    # more can, in one frame
    torch.manual_seed(5)
    logits = F.interpolate(torch.randn(1, 19, 6, 8), size=(16, 24), mode="bilinear")
    logits = logits + 0.05 * torch.randn_like(logits)
    labels = edge_labels(logits, (128, 192), kind)
    assert (labels.long() == reference(logits, (128, 192))).float().mean() >= 0.9999
    edges = EdgeLabels(logits, (128, 192))
    edges.run(logits, torch.empty((128, 192), dtype=torch.uint8))
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
