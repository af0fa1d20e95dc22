"""Compiled Winograd F(4x4, 3x3) convolutions (numba): equal to the direct ones, chosen
layer by layer and as a whole torch pass by measurement, named where they are not."""

import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch import nn

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.engine import choices as choices_module
from swiftseg_ros.engine.autotune import Choice
from swiftseg_ros.engine.kernels.cpu_kernels import OneDnnConv2d, onednn_available
from swiftseg_ros.synthetic.frames import generate_frame

pytestmark = [pytest.mark.skipif(
    importlib.util.find_spec("numba") is None,
    reason="numba is not installed (the compiled Winograd transforms need it)")]

if importlib.util.find_spec("numba") is not None:
    from swiftseg_ros.engine.kernels import winograd_kernel
    from swiftseg_ros.engine.kernels.winograd_kernel import (
        CompiledWinogradConv3x3,
        Workspace,
        compiled_copy,
        compiled_eligible,
        compiled_filters,
        faster_compiled,
    )


def relative_error(actual, expected):
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("batch, channels, out, height, width, bias, channels_last", [
    (1, 16, 24, 16, 32, True, True),    # whole tiles, the engine's layout
    (2, 8, 5, 17, 15, False, True),     # a batch, partial tiles both ways, no bias
    (1, 7, 9, 6, 5, True, False),       # NCHW input, every tile on the border
    (1, 3, 4, 1, 1, True, True),        # one pixel: all padding but the centre
])
def test_equals_the_direct_convolution(batch, channels, out, height, width, bias,
                                       channels_last):
    torch.manual_seed(batch + channels)
    conv = nn.Conv2d(channels, out, 3, padding=1, bias=bias).eval()
    image = torch.randn(batch, channels, height, width)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    compiled = CompiledWinogradConv3x3(conv, Workspace())
    with torch.inference_mode():
        expected, actual = conv(image), compiled(image)
    assert actual.shape == expected.shape and relative_error(actual, expected) < 3e-5
    assert actual.is_contiguous(memory_format=torch.channels_last)


def test_layers_of_different_sizes_share_one_workspace():
    torch.manual_seed(0)
    workspace = Workspace()
    small, wide = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 32, 3, padding=1)
    layers = [(conv, CompiledWinogradConv3x3(conv, workspace)) for conv in (small, wide)]
    with torch.inference_mode():
        for height, width in ((8, 8), (40, 24), (8, 8)):  # grows, then reuses
            image = torch.randn(1, 8, height, width)
            for conv, compiled in layers:
                assert relative_error(compiled(image), conv(image)) < 3e-5
        # a shared layer's first output survives its second call (the pyramid's encoder)
        first = layers[0][1](image)
        kept = first.clone()
        layers[0][1](torch.randn(1, 8, 8, 8))
        assert torch.equal(first, kept)


def test_only_fp32_wide_dense_3x3_stride_1_convolutions_are_eligible():
    assert compiled_eligible(nn.Conv2d(64, 64, 3, padding=1))
    assert compiled_eligible(OneDnnConv2d(nn.Conv2d(64, 128, 3, padding=1)))
    assert not compiled_eligible(nn.Conv2d(32, 64, 3, padding=1))
    assert not compiled_eligible(nn.Conv2d(64, 64, 3, padding=1, stride=2))
    assert not compiled_eligible(nn.Conv2d(64, 64, 3, padding=1, groups=64))
    assert not compiled_eligible(nn.Conv2d(64, 64, 3, padding=1).to(torch.bfloat16))
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        CompiledWinogradConv3x3(nn.Conv2d(64, 64, 3, padding=1).double(), Workspace())


class _Stack(nn.Module):
    """A shared wide conv called twice, a wide conv, and a narrow one."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Conv2d(64, 64, 3, padding=1)
        self.again = nn.Sequential(self.shared)
        self.wide = nn.Conv2d(64, 64, 3, padding=1)
        self.narrow = nn.Conv2d(64, 8, 3, padding=1)

    def forward_logits(self, x):
        return self.narrow(self.wide(self.again(self.shared(x))))


def _picking(monkeypatch, picked: str):
    """winograd_kernel's choose() with `picked` forced for the per-layer timing (which
    itself runs for real)."""
    real = winograd_kernel.choose

    def choose(what, candidates, **kw):
        choice = real(what, candidates, **kw)
        if picked in choice.times_ms:
            return Choice(what, picked, choice.times_ms, choice.notes)
        return choice

    monkeypatch.setattr(winograd_kernel, "choose", choose)


def _compiled_stack(height: int, width: int):
    """(_Stack, its faster layers' ids, the summary, its compiled copy), and the copy's
    relative error against the original on a height x width image."""
    model = _Stack().eval()
    image = torch.randn(1, 64, height, width)
    build = compiled_filters()
    with torch.inference_mode():
        faster, summary = faster_compiled(model, image, build, repeats=1)
        twin = compiled_copy(model, faster, build)
        error = relative_error(twin.forward_logits(image), model.forward_logits(image))
    return model, faster, summary, twin, error


def test_faster_layers_are_compiled_in_a_copy_that_shares_everything_else(monkeypatch):
    _picking(monkeypatch, "compiled")
    model, faster, summary, twin, error = _compiled_stack(12, 20)
    assert faster == {id(model.shared.weight), id(model.wide.weight)}
    assert summary.startswith("2 of 2 layers, 0 in bands: ")
    assert isinstance(twin.shared, CompiledWinogradConv3x3) and twin.again[0] is twin.shared
    assert type(model.shared) is nn.Conv2d  # the original is untouched
    assert twin.narrow.weight is model.narrow.weight
    assert error < 3e-5


def test_no_faster_layer_raises_with_the_times(monkeypatch):
    _picking(monkeypatch, "direct")
    with torch.inference_mode(), pytest.raises(LookupError, match=(
            r"no layer faster compiled \(0 of 2 layers, 0 in bands: .* ms, direct ")):
        faster_compiled(_Stack().eval(), torch.randn(1, 64, 8, 8), compiled_filters(), 1)


def test_a_failing_layer_is_counted_and_stays_direct(monkeypatch):
    def broken(self, x, band_rows):
        raise RuntimeError("no kernel for this")

    monkeypatch.setattr(CompiledWinogradConv3x3, "run", broken)
    with torch.inference_mode(), pytest.raises(
            LookupError, match="; 2 failed: RuntimeError: no kernel for this"):
        faster_compiled(_Stack().eval(), torch.randn(1, 64, 8, 8), compiled_filters(), 1)


@pytest.mark.parametrize("band_rows", [1, 2, 3, 9, 10, 50])
def test_bands_of_any_height_equal_the_direct_convolution(band_rows):
    """37x53 is 10 rows of 4x4 blocks, the last and the right ones partial: bands of 3
    leave a band of 1, bands of 10 or more are the whole image."""
    torch.manual_seed(band_rows)
    conv = nn.Conv2d(6, 10, 3, padding=1).eval()
    image = torch.randn(2, 6, 37, 53)
    compiled = CompiledWinogradConv3x3(conv, Workspace())
    with torch.inference_mode():
        expected = conv(image)
        assert relative_error(compiled.run(image, band_rows), expected) < 3e-5
        compiled.band_rows[(37, 53)] = band_rows  # forward() runs in the recorded bands
        assert relative_error(compiled(image), expected) < 3e-5


def test_bands_are_sized_by_their_scratch_bytes():
    compiled = CompiledWinogradConv3x3(nn.Conv2d(64, 64, 3, padding=1), Workspace())
    row_bytes = 36 * 16 * (64 + 64) * 4  # a row of 16 tiles of 64 in and 64 out channels
    assert compiled.rows_within(3 * row_bytes, 64, 64) == 3
    assert compiled.rows_within(3 * row_bytes + row_bytes - 1, 64, 64) == 3
    assert compiled.rows_within(10, 64, 64) == 1  # never less than a row
    assert compiled.rows_within(16 * row_bytes, 64, 64) is None  # the whole image
    assert compiled.rows_within(15 * row_bytes, 64, 61) == 15


def test_a_faster_band_is_recorded_per_input_size(monkeypatch):
    """At 64x64 a 1 MiB band is 3 of the 16 block rows (64 in and 64 out channels)."""
    _picking(monkeypatch, "compiled in 1 MiB bands")
    _, _, summary, twin, error = _compiled_stack(64, 64)
    assert summary.startswith("2 of 2 layers, 2 in bands: ")
    assert twin.shared.band_rows == {(64, 64): 3} and twin.wide.band_rows == {(64, 64): 3}
    assert error < 3e-5


# ---------------------------------------------------------------- in the engine

def _forcing_twins(monkeypatch):
    """Every layer compiled and a twin pass picked: the timings run for real, only the
    picks are forced, so the compiled pass runs for sure. The twin is the first by name,
    not the fastest: each plan times its candidates anew, and the two routes' twins are
    close enough at test sizes that the fastest could differ from plan to plan."""
    _picking(monkeypatch, "compiled")
    real = choices_module.choose

    def choose(what, candidates, **kw):
        choice = real(what, candidates, **kw)
        twins = [n for n in choice.times_ms if n.endswith("+winograd")]
        if what == "device_pass" and twins:
            return Choice(what, min(twins), choice.times_ms, choice.notes)
        return choice

    monkeypatch.setattr(choices_module, "choose", choose)


def _rn18(**settings):
    # retune: these tests force what the timing picks, so nothing may come from the cache
    return SegmentationEngine(EngineConfig(**{
        "network": "swiftnet_rn18", "num_classes": 5, "outputs": ("label",),
        "upsample": "logits", "warmup_iters": 1, "retune": True, **settings}))


FRAME = generate_frame(4, 0, 128, 64)[0]


def test_the_compiled_twin_is_a_timed_candidate_with_the_direct_labels(monkeypatch):
    torch.manual_seed(0)
    direct = _rn18(winograd=False)
    expected = direct.infer(FRAME, "rgb8").label.copy()
    assert direct.stats()["choices"]["conv_3x3"]["notes"] == {
        "winograd": "not asked (winograd off)"}
    direct.release()
    _forcing_twins(monkeypatch)
    torch.manual_seed(0)
    seg = _rn18()
    labels = seg.infer(FRAME, "rgb8").label
    choices = seg.stats()["choices"]
    timed = set(choices["device_pass"]["times_ms"])
    routes = ("onednn", "torch") if onednn_available() else ("torch",)
    assert {f"{route}/channels_last+winograd" for route in routes} <= timed
    assert choices["conv_3x3"]["picked"] == "winograd"
    assert set(choices["conv_3x3"]["times_ms"]) == {"direct", "winograd"}
    assert choices["device_pass"]["notes"]["torch/contiguous+winograd"] == (
        "the compiled kernel reads and writes channels_last only")
    compiled = {m for m in seg.model.modules() if isinstance(m, CompiledWinogradConv3x3)}
    assert len(compiled) == 16  # every wide 3x3 convolution of SwiftNet-RN18
    assert (labels == expected).mean() >= 0.999
    seg.release()


def test_plans_of_one_size_share_the_layer_timing_and_the_twins(monkeypatch):
    _forcing_twins(monkeypatch)
    timings = []
    real = winograd_kernel.faster_compiled

    def counted(*args, **kwargs):
        timings.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(winograd_kernel, "faster_compiled", counted)
    seg = _rn18()
    frame = generate_frame(4, 0, 64, 64)[0]
    seg.infer(frame, "rgb8")
    seg.set_outputs(("label", "color"))  # a second plan of the same size
    seg.infer(frame, "rgb8")
    plans = list(seg._plans._plans.values())
    assert len(plans) == 2 and plans[0].device_pass.model is plans[1].device_pass.model
    assert len(timings) == 1
    seg.release()


def test_slower_layers_build_no_twin_and_say_so(monkeypatch):
    _picking(monkeypatch, "direct")
    seg = _rn18(outputs=("label",))
    seg.infer(generate_frame(4, 0, 64, 64)[0], "rgb8")
    choices = seg.stats()["choices"]
    assert not any(n.endswith("+winograd") for n in choices["device_pass"]["times_ms"])
    assert choices["conv_3x3"]["picked"] == "direct"
    assert choices["device_pass"]["notes"]["torch/channels_last+winograd"].startswith(
        "slower layer by layer at 64x64: no layer faster compiled "
        "(0 of 16 layers, 0 in bands: ")
    seg.release()


def test_without_numba_the_note_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "swiftseg_ros.engine.kernels.winograd_kernel", None)
    seg = _rn18()
    seg.infer(generate_frame(4, 0, 64, 64)[0], "rgb8")
    note = seg.stats()["choices"]["conv_3x3"]["notes"]["winograd"]
    assert note.startswith("numba unavailable (") and note.endswith("): pip install numba")
    seg.release()


def test_networks_without_wide_3x3_convolutions_say_so():
    seg = SegmentationEngine(EngineConfig(network="fastscnn", num_classes=3,
                                          outputs=("label",), warmup_iters=1))
    seg.infer(np.zeros((64, 128, 3), np.uint8), "rgb8")
    choice = seg.stats()["choices"]["conv_3x3"]
    assert choice["picked"] == "direct" and set(choice["times_ms"]) == {"direct"}
    assert choice["notes"] == {"winograd": "no 3x3 convolution with 64+ channels in fastscnn"}
    seg.release()
