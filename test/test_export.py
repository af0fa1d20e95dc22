"""swiftseg-export: ONNX files of the four networks, checked with ONNX Runtime against PyTorch.

Each network is exported once (a different option each, to keep the suite fast) from a
checkpoint with random weights, at 128x64 (128x128 for the two-level pyramid), and
verified on synthetic street scenes.
"""

import contextlib
import io
import json
import re
import sys

import numpy as np
import pytest
import torch

from swiftseg_ros.checkpoint import make_meta, save_checkpoint
from swiftseg_ros.classes import load_class_set
from swiftseg_ros.cli import _run
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.nets import build_model
from swiftseg_ros.synthetic.frames import generate_frame
from swiftseg_ros.trainer.export import (
    ExportError,
    export_onnx,
    main,
    read_onnx_metadata,
    require_agreement,
    verify_onnx,
)

SIZE = (128, 64)  # width, height
onnx = ort = None  # set by the `onnx_stack` fixture


@pytest.fixture(autouse=True, scope="module")
def onnx_stack():
    """onnx, onnxruntime and onnxscript, or a skip of each test of this module.

    Not a module-level importorskip: launch_testing's pytest plugin imports every test
    module while collecting (launch_testing/pytest/hooks.py, pytest_pycollect_makemodule),
    so a skip raised at import ends the whole `colcon test` session as "1 skipped".
    """
    global onnx, ort
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")


def make_checkpoint(path, network, seed=0, classes="cityscapes"):
    torch.manual_seed(seed)
    class_set = load_class_set(classes)
    model = build_model(network, class_set.num_classes)
    meta = make_meta(network, class_set.num_classes, class_names=class_set.class_names,
                     palette=class_set.palette, provenance={"dataset": "test"})
    return save_checkpoint(path, model, meta)


def ort_run(path, array):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: array})[0]


@pytest.fixture(scope="module")
def rn18(tmp_path_factory):
    """swiftnet_rn18 exported through the CLI with default options and --json."""
    tmp = tmp_path_factory.mktemp("rn18")
    weights = make_checkpoint(tmp / "rn18.pt", "swiftnet_rn18")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--weights", str(weights), "--onnx", str(tmp / "rn18.onnx"), "--size",
                     "128x64", "--frames", "2", "--json", str(tmp / "export.json")]) == 0
    info = json.loads((tmp / "export.json").read_text())
    return weights, tmp / "rn18.onnx", {**info, "printed": printed.getvalue()}


@pytest.fixture(scope="module")
def mnv2_opset17(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mnv2")
    weights = make_checkpoint(tmp / "mnv2.pt", "swiftnet_mnv2")
    info = export_onnx(weights, tmp / "mnv2.onnx", size=SIZE, opset=17, frames=1)
    return weights, tmp / "mnv2.onnx", info


@pytest.fixture(scope="module")
def fastscnn_uint8(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fastscnn")
    weights = make_checkpoint(tmp / "fastscnn.pt", "fastscnn")
    info = export_onnx(weights, tmp / "fastscnn.onnx", size=SIZE, include_preprocess=True,
                       frames=1)
    return weights, tmp / "fastscnn.onnx", info


@pytest.fixture(scope="module")
def pyramid_dynamic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pyramid")
    weights = make_checkpoint(tmp / "pyramid.pt", "swiftnet_rn18_pyramid")
    info = export_onnx(weights, tmp / "pyramid.onnx", size=(128, 128), dynamic=True, frames=1)
    return weights, tmp / "pyramid.onnx", info


@pytest.mark.parametrize("exported", ["rn18", "mnv2_opset17", "fastscnn_uint8",
                                      "pyramid_dynamic"])
def test_every_network_exports_and_matches_pytorch(exported, request):
    _, path, info = request.getfixturevalue(exported)
    check = info["verification"]
    assert path.is_file()
    assert check["label_agreement_min"] >= 0.999
    assert check["logits_max_abs_diff"] <= 1e-3 * check["logits_max_abs"]


def test_metadata_carries_classes_palette_and_normalization(rn18):
    _, path, _ = rn18
    metadata = read_onnx_metadata(path)
    cityscapes = load_class_set("cityscapes")
    assert metadata["network"] == "swiftnet_rn18"
    assert metadata["class_names"] == list(cityscapes.class_names)
    assert metadata["palette"] == [list(c) for c in cityscapes.palette]
    assert metadata["mean"] == pytest.approx([73.15, 82.90, 72.3])
    assert metadata["std"] == pytest.approx([47.67, 48.49, 47.73])
    assert metadata["size_divisor"] == 32 and metadata["output_stride"] == 4
    assert metadata["input"]["layout"] == "NCHW" and metadata["input"]["normalized"] is True


def test_metadata_values_are_json_strings(rn18):
    _, path, _ = rn18
    props = onnx.load(str(path)).metadata_props
    assert {p.key for p in props} >= {"class_names", "palette", "mean", "std", "network"}
    assert all(isinstance(json.loads(p.value), (str, int, float, bool, list, dict))
               for p in props)


def test_static_export_has_fixed_normalized_input_and_full_size_logits(rn18):
    _, path, info = rn18
    model = onnx.load(str(path))
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (model.graph.input[0], model.graph.output[0])]
    assert model.graph.input[0].name == "image" and model.graph.output[0].name == "logits"
    assert dims == [[1, 3, 64, 128], [1, 19, 64, 128]]
    assert info["opset"] == 18


def test_cli_prints_the_agreement_it_measured(rn18):
    _, path, info = rn18
    assert f"wrote {path}" in info["printed"]
    agreement = re.search(r"labels equal on ([0-9.]+)% of pixels", info["printed"])
    assert agreement and float(agreement.group(1)) >= 99.9
    assert "logits max abs diff" in info["printed"]


def test_verification_fails_for_a_file_of_other_weights(rn18, tmp_path):
    _, path, _ = rn18
    other = make_checkpoint(tmp_path / "other.pt", "swiftnet_rn18", seed=1)
    check = verify_onnx(path, other, sizes=[SIZE], frames=1)
    assert check.label_agreement_min < 0.9
    with pytest.raises(ExportError, match="does not reproduce PyTorch"):
        require_agreement(check, path, fp16=False)


def test_opset_17_file_declares_opset_17(mnv2_opset17):
    _, path, _ = mnv2_opset17
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_include_preprocess_takes_uint8_rgb_pixels_nhwc(fastscnn_uint8):
    _, path, info = fastscnn_uint8
    frame = generate_frame(0, 0, *SIZE)[0]
    logits = ort_run(path, frame[None])
    assert info["input"] == {"name": "image", "dtype": "uint8", "shape": [1, 64, 128, 3]}
    assert logits.shape == (1, 19, 64, 128)
    assert read_onnx_metadata(path)["input"]["layout"] == "NHWC"


def test_dynamic_pyramid_runs_at_a_size_it_was_not_traced_at(pyramid_dynamic):
    weights, path, info = pyramid_dynamic
    from swiftseg_ros.trainer.export import load_inference_model

    model, _ = load_inference_model(weights)
    image = torch.randn(1, 3, 192, 320, generator=torch.Generator().manual_seed(0))
    logits = ort_run(path, image.numpy())
    with torch.no_grad():
        expected = model(image).numpy()
    assert info["input"]["shape"] == [1, 3, "height", "width"]
    assert np.abs(logits - expected).max() <= 1e-3 * np.abs(expected).max()


def test_dynamic_export_of_a_network_with_spp_is_refused_before_tracing(rn18, tmp_path):
    weights, _, _ = rn18
    with pytest.raises(ExportError, match=r"8x16.*--size WxH"):
        export_onnx(weights, tmp_path / "d.onnx", size=SIZE, dynamic=True)
    assert not (tmp_path / "d.onnx").exists()


def test_fp16_export_stores_half_weights_behind_float32_io(tmp_path):
    weights = make_checkpoint(tmp_path / "f.pt", "fastscnn")
    info = export_onnx(weights, tmp_path / "f16.onnx", size=(64, 32), fp16=True, verify=False)
    model = onnx.load(str(tmp_path / "f16.onnx"))
    conv_weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    float_types = {onnx.TensorProto.FLOAT}
    assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)
    assert model.graph.input[0].type.tensor_type.elem_type in float_types
    assert model.graph.output[0].type.tensor_type.elem_type in float_types
    # random weights leave near-ties that fp16 rounding may flip: the logits are the check
    check = verify_onnx(tmp_path / "f16.onnx", weights, sizes=[(64, 32)], frames=1)
    assert check.logits_relative_diff <= 3e-2 and check.label_agreement_min >= 0.99
    assert info["fp16"] is True


def test_size_not_a_multiple_of_the_size_divisor_is_a_config_error(rn18, tmp_path):
    weights, _, _ = rn18
    with pytest.raises(ConfigError, match=r"multiples of 32, e\.g\. 128x96"):
        export_onnx(weights, tmp_path / "x.onnx", size=(100, 70))


def test_opset_below_17_is_a_config_error(rn18, tmp_path):
    weights, _, _ = rn18
    with pytest.raises(ConfigError, match="opset 13"):
        export_onnx(weights, tmp_path / "x.onnx", size=SIZE, opset=13)


@pytest.mark.parametrize("opset", [26, 99])
def test_opset_above_what_the_exporter_writes_is_a_config_error(tmp_path, opset):
    weights = make_checkpoint(tmp_path / "f.pt", "fastscnn")
    with pytest.raises(ConfigError, match=f"opset {opset}: .* 17 to 23"):
        export_onnx(weights, tmp_path / "x.onnx", size=SIZE, opset=opset, verify=False)


def test_missing_onnxruntime_is_one_error_line_naming_the_package(rn18, tmp_path, capsys,
                                                                  monkeypatch):
    weights, path, _ = rn18
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    status = _run("swiftseg_ros.trainer.export",
                  ["--weights", str(weights), "--onnx", str(tmp_path / "x.onnx"),
                   "--size", "64x32"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "pip install onnxruntime" in err and "--no-verify" in err

