"""Winograd F(4x4, 3x3) convolutions as torch ops (the form ONNX graphs hold): equal to the
direct ones, and a measured choice of the engine's ONNX Runtime pass."""

import pytest
import torch
from torch import nn

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.engine.autotune import Choice
from swiftseg_ros.engine.backends import onnxruntime as engine_module
from swiftseg_ros.engine.kernels.cpu_kernels import OneDnnConv2d
from swiftseg_ros.engine.kernels.winograd import (
    WinogradConv3x3,
    count_eligible,
    eligible,
    use_winograd,
)
from swiftseg_ros.synthetic.frames import generate_frame


def relative_error(actual, expected):
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("batch, channels, out, height, width, bias", [
    (1, 32, 48, 16, 32, True),   # whole tiles
    (2, 8, 5, 17, 15, False),    # a batch, partial tiles in both directions, no bias
    (1, 3, 4, 1, 1, True),       # one pixel: everything is padding but the centre
])
def test_equals_the_direct_convolution_in_both_memory_formats(batch, channels, out, height,
                                                              width, bias):
    torch.manual_seed(batch + channels)
    conv = nn.Conv2d(channels, out, 3, padding=1, bias=bias).eval()
    image = torch.randn(batch, channels, height, width)
    winograd = WinogradConv3x3(conv)
    with torch.no_grad():
        expected = conv(image)
        nchw = winograd(image)
        nhwc = winograd(image.contiguous(memory_format=torch.channels_last))
    assert nchw.shape == expected.shape and relative_error(nchw, expected) < 3e-5
    assert relative_error(nhwc, expected) < 3e-5
    # the layout comes back as it went in, so the next layer runs in its own
    assert nhwc.is_contiguous(memory_format=torch.channels_last)


def test_only_wide_dense_3x3_stride_1_convolutions_are_eligible():
    def conv(channels=256, **kw):
        return nn.Conv2d(channels, channels, kw.pop("k", 3), padding=kw.pop("padding", 1), **kw)

    assert eligible(conv()) and eligible(OneDnnConv2d(conv()))
    assert not eligible(conv(stride=2))
    assert not eligible(conv(dilation=2, padding=2))
    assert not eligible(conv(groups=256))
    assert not eligible(conv(k=1, padding=0))
    assert not eligible(conv(channels=128))
    assert eligible(conv(channels=128), min_channels=128)
    assert not eligible(conv(padding_mode="reflect"))


def test_use_winograd_replaces_in_place_and_keeps_shared_convs_shared():
    shared = nn.Conv2d(8, 8, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), nn.Sequential(shared),
                          nn.Conv2d(8, 8, 3, padding=1, stride=2))
    assert count_eligible(model, min_channels=8) == 1
    assert use_winograd(model, min_channels=8) == 1
    assert isinstance(model[0], WinogradConv3x3) and model[0] is model[2][0]
    assert type(model[3]) is nn.Conv2d


@pytest.fixture
def onnxruntime_engine(tmp_path):
    """A 5-class SwiftNet-RN18 engine on ONNX Runtime, its graphs cached in tmp_path."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    engines = []

    def build(**settings):
        engine = SegmentationEngine(EngineConfig(**{
            "network": "swiftnet_rn18", "num_classes": 5, "backend": "onnxruntime",
            "outputs": ("label",), "upsample": "logits", "warmup_iters": 1,
            "cache_dir": str(tmp_path), **settings}))
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.release()


def _forcing_winograd(monkeypatch):
    """The engine's choose(), with "winograd" picked whenever it is timed: the timing
    itself is real, only the pick is forced, so the Winograd pass runs for sure."""
    real = engine_module.choose
    timed = []

    def choose(what, candidates, **kw):
        choice = real(what, candidates, **kw)
        timed.append(what)
        if what == "conv_3x3" and "winograd" in choice.times_ms:
            return Choice(what, "winograd", choice.times_ms, choice.notes)
        return choice

    monkeypatch.setattr(engine_module, "choose", choose)
    return timed


FRAME = generate_frame(4, 0, 64, 64)[0]


def test_the_winograd_graph_gives_the_direct_labels(monkeypatch, tmp_path,
                                                    onnxruntime_engine):
    frame = generate_frame(4, 0, 128, 64)[0]
    torch.manual_seed(0)
    direct = onnxruntime_engine(winograd=False)
    expected = direct.infer(frame, "rgb8").label.copy()
    assert direct.stats()["choices"]["conv_3x3"]["notes"] == {
        "winograd": "not asked (winograd off)"}
    _forcing_winograd(monkeypatch)
    torch.manual_seed(0)
    seg = onnxruntime_engine()
    labels = seg.infer(frame, "rgb8").label
    choice = seg.stats()["choices"]["conv_3x3"]
    assert choice["picked"] == "winograd" and set(choice["times_ms"]) == {"direct", "winograd"}
    assert (labels == expected).mean() >= 0.999
    # the rewritten graph is cached under its own name
    assert len(list(tmp_path.glob("swiftnet_rn18_winograd256_128x64_*.onnx"))) == 1
    assert len(list(tmp_path.glob("swiftnet_rn18_128x64_*.onnx"))) == 1


def test_slower_layers_skip_building_the_whole_winograd_graph(monkeypatch, tmp_path,
                                                               onnxruntime_engine):
    real = engine_module.choose
    timed = []

    def choose(what, candidates, **kw):
        choice = real(what, candidates, **kw)
        timed.append(what)
        if what == "conv_3x3":  # the layer-by-layer timing: direct wins, whatever it saw
            return Choice(what, "direct", choice.times_ms, choice.notes)
        return choice

    monkeypatch.setattr(engine_module, "choose", choose)
    seg = onnxruntime_engine()
    seg.infer(FRAME, "rgb8")
    note = seg.stats()["choices"]["conv_3x3"]["notes"]["winograd"]
    assert note.startswith("slower layer by layer at 64x64: its 6 layers ")
    assert timed.count("conv_3x3") == 1  # the whole passes were not built and timed
    assert not list(tmp_path.glob("*winograd*.onnx"))


def test_plans_share_one_choice_and_one_set_of_filters(monkeypatch, onnxruntime_engine):
    timed = _forcing_winograd(monkeypatch)
    seg = onnxruntime_engine()
    seg.infer(FRAME, "rgb8")
    seg.set_outputs(("label", "color"))  # a second plan of the same size
    seg.infer(FRAME, "rgb8")
    assert len(seg._plans) == 2
    assert timed.count("conv_3x3") == 2  # layer by layer, then the passes: once
    assert len(seg._backends["onnxruntime"].winograd_filters._built) == 6  # RN18's six wide 3x3 convolutions


def _choice_after_one_frame(engine):
    assert engine.infer(FRAME, "rgb8").label.shape == (64, 64)
    return engine.stats()["choices"]["conv_3x3"]


def test_a_failing_winograd_layer_is_named_and_the_direct_pass_kept(monkeypatch,
                                                                   onnxruntime_engine):
    def broken(self, x):
        raise RuntimeError("no kernel for this")

    monkeypatch.setattr(WinogradConv3x3, "forward", broken)
    choice = _choice_after_one_frame(onnxruntime_engine())
    assert choice["picked"] == "direct"
    assert choice["notes"]["winograd"] == "failed: RuntimeError: no kernel for this"


def test_a_twin_that_cannot_be_built_is_named_and_the_direct_pass_kept(monkeypatch,
                                                                      onnxruntime_engine):
    # e.g. an ONNX cache folder that cannot be written: the direct pass keeps working
    _forcing_winograd(monkeypatch)

    def unbuildable(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(engine_module, "use_winograd", unbuildable)
    choice = _choice_after_one_frame(onnxruntime_engine())
    assert choice["picked"] == "direct" and choice["times_ms"] == {}
    note = choice["notes"]["winograd"]
    assert note.startswith("failed: ConfigError: ONNX cache folder ")
    assert "No space left on device" in note


def test_a_torch_pass_has_no_winograd_graph_twin(monkeypatch):
    # its Winograd twins are compiled candidates of the pass itself (winograd_kernel.py)
    timed = _forcing_winograd(monkeypatch)
    seg = SegmentationEngine(EngineConfig(network="swiftnet_rn18", num_classes=5,
                                          outputs=("label",), warmup_iters=1))
    seg.infer(FRAME, "rgb8")
    assert "conv_3x3" not in timed
    assert not any(isinstance(m, WinogradConv3x3) for m in seg.model.modules())
    seg.release()


def test_winograd_setting_must_be_a_bool():
    from swiftseg_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="winograd: 'yes', expected true or false"):
        EngineConfig(network="fastscnn", winograd="yes")
