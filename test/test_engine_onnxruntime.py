"""The ONNX Runtime backend behind the engine contract, its graph cache, and backend auto.

Real sessions on graphs exported from the shipped weights; the execution provider list is
replaced only to check the CUDA and TensorRT choice, which cannot run on this machine.
"""

import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from swiftseg_ros.engine import STAGES, EngineConfig, SegmentationEngine, cpu_caps, graph_cache
from swiftseg_ros.engine.backends import onnxruntime as ort_backend
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.synthetic.frames import generate_frame

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

WIDTH, HEIGHT = 256, 128
SHIPPED = ("fastscnn_synth.pt", "swiftnet_mnv2_synth.pt")


def engine(weights="fastscnn_synth.pt", **changes):
    settings = dict(weights=weights, backend="onnxruntime", upsample="logits",
                    outputs=("label", "color"), warmup_iters=1)
    settings.update(changes)
    return SegmentationEngine(EngineConfig(**settings))


@pytest.mark.parametrize("weights", SHIPPED)
def test_labels_equal_the_torch_backend_on_999_permille(weights):
    torch_engine = engine(weights, backend="torch")
    ort_engine = engine(weights)
    agreements = []
    for index in range(3):
        frame = generate_frame(7, index, WIDTH, HEIGHT)[0]
        expected = torch_engine.infer(frame, "rgb8").copy()
        result = ort_engine.infer(frame, "rgb8")
        agreements.append((result.label == expected.label).mean())
        assert len(np.unique(expected.label)) > 2  # a real scene, not one class
    assert min(agreements) >= 0.999, agreements
    assert ort_engine.stats()["backend"] == "onnxruntime"
    torch_engine.release()
    ort_engine.release()


def test_contract_holds_stage_names_reused_views_set_outputs_release():
    seg = engine()
    frame = generate_frame(3, 0, WIDTH, HEIGHT)[0]
    first = seg.infer(frame, "rgb8")
    assert set(first.timings) == set(STAGES)
    again = seg.infer(frame, "rgb8")
    assert np.shares_memory(first.label, again.label)
    seg.set_outputs(("label", "confidence"))
    result = seg.infer(frame, "rgb8")
    assert result.color is None and result.confidence.dtype == np.uint8
    stats = seg.stats()
    assert set(stats["stages"]) == set(STAGES)
    assert stats["choices"]["backend"]["picked"] == "onnxruntime"
    seg.release()
    with pytest.raises(Exception, match="released"):
        seg.infer(frame, "rgb8")


def test_auto_times_both_backends_and_keeps_the_faster():
    seg = engine(backend="auto")
    seg.infer(generate_frame(3, 0, WIDTH, HEIGHT)[0], "rgb8")
    choice = seg.stats()["choices"]["backend"]
    # and OpenVINO's, where it is installed (test_engine_openvino.py)
    installed = {"openvino"} if importlib.util.find_spec("openvino") else set()
    assert set(choice["times_ms"]) == {"torch", "onnxruntime"} | installed
    assert choice["picked"] == min(choice["times_ms"], key=choice["times_ms"].get)
    assert seg.stats()["backend"] == choice["picked"]
    # torch's own route and memory format are reported whichever backend won
    assert {"cpu_convs", "memory_format"} <= set(seg.stats()["choices"])
    seg.release()


def test_a_cached_graph_is_reused_without_exporting(monkeypatch, tmp_path):
    engine().prepare(HEIGHT, WIDTH, "rgb8")  # exported here or earlier in the session
    # the graph in a folder of its own: in the run's shared cache another xdist worker may
    # be writing a graph under its temporary name at this moment
    for graph in graph_cache.cache_folder().glob(f"fastscnn_{WIDTH}x{HEIGHT}_*.onnx"):
        shutil.copy(graph, tmp_path)
    monkeypatch.setenv("SWIFTSEG_CACHE_DIR", str(tmp_path))

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(graph_cache, "_export", no_export)
    seg = engine()
    seg.prepare(HEIGHT, WIDTH, "rgb8")
    folder = graph_cache.cache_folder()
    assert any(p.name.startswith(f"fastscnn_{WIDTH}x{HEIGHT}_") for p in folder.glob("*.onnx"))
    assert not list(folder.glob("*.tmp"))
    seg.release()


def test_unwritable_cache_folder_is_one_line_and_the_engine_stays_usable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    seg = engine(cache_dir=blocker / "onnx", inference_size=(64, 32))
    with pytest.raises(ConfigError, match="cannot write.*SWIFTSEG_CACHE_DIR") as error:
        seg.prepare(32, 64, "rgb8")
    assert "\n" not in str(error.value)
    assert seg.stats()["backend"] == "onnxruntime"  # configured, nothing half-prepared
    seg.release()


def test_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    import onnx

    def full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(graph_cache.os, "replace", full)
    # the graph is written and then moved into place, where the disk is full: what was
    # exported does not matter, so an empty graph stands for it (an export takes seconds)
    monkeypatch.setattr(graph_cache, "_export", lambda *args: onnx.ModelProto())
    seg = engine(cache_dir=tmp_path, inference_size=(64, 32))
    with pytest.raises(ConfigError, match="No space left"):
        seg.prepare(32, 64, "rgb8")
    assert os.listdir(tmp_path) == []
    seg.release()


def test_auto_falls_back_to_torch_when_the_graph_cannot_be_cached(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    seg = engine(backend="auto", cache_dir=blocker, inference_size=(64, 32))
    seg.prepare(32, 64, "rgb8")
    choice = seg.stats()["choices"]["backend"]
    assert choice["picked"] == "torch" and "cannot write" in choice["notes"]["onnxruntime"]
    seg.release()


def test_bf16_with_onnxruntime_is_a_config_error(monkeypatch):
    native = cpu_caps.capabilities_from("test CPU", "x86_64", {"avx512_bf16"}, onednn=True,
                                        onednn_bf16=True, torch_capability="AVX512")
    monkeypatch.setattr(cpu_caps, "detect", lambda: native)
    with pytest.raises(ConfigError, match="backend: onnxruntime runs fp32 only"):
        engine(precision="bf16")


def test_missing_onnxruntime_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match="pip install onnxruntime"):
        engine()


def test_too_old_onnxruntime_is_one_line(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.10.0")
    with pytest.raises(ConfigError, match="1.10.0 is too old"):
        engine()


@pytest.mark.parametrize("available, expected", [
    (["CPUExecutionProvider"], None),
    (["CUDAExecutionProvider", "CPUExecutionProvider"],
     ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
     ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
], ids=["cpu-wheel", "cuda", "tensorrt"])
def test_cuda_providers_are_used_where_installed(available, expected):
    assert ort_backend.providers_for(torch.device("cpu"), available) == ["CPUExecutionProvider"]
    if expected is None:
        with pytest.raises(ConfigError, match="onnxruntime-gpu"):
            ort_backend.providers_for(torch.device("cuda", 0), available)
    else:
        assert ort_backend.providers_for(torch.device("cuda", 0), available) == expected


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """swiftseg-export files of the shipped Fast-SCNN at 256x128: float input and uint8."""
    from swiftseg_ros.trainer.export import export_onnx

    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for name, uint8 in (("float", False), ("uint8", True)):
        files[name] = folder / f"fastscnn_{name}.onnx"
        export_onnx("fastscnn_synth.pt", files[name], size=(WIDTH, HEIGHT),
                    include_preprocess=uint8, verify=False)
    return files


@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_an_exported_onnx_file_runs_as_weights_with_the_torch_labels(exported, kind):
    reference = engine(backend="torch")
    seg = engine(str(exported[kind]), backend="auto")
    assert seg.network == "fastscnn" and seg.num_classes == reference.num_classes
    frame = generate_frame(5, 1, WIDTH, HEIGHT)[0]
    expected = reference.infer(frame, "rgb8").copy()
    result = seg.infer(frame, "rgb8")
    assert (result.label == expected.label).mean() >= 0.999
    np.testing.assert_array_equal(result.color, seg.palette[result.label])
    assert seg.stats()["backend"] == "onnxruntime"
    reference.release()
    seg.release()


def test_a_uint8_file_refuses_frames_of_another_size(exported):
    seg = engine(str(exported["uint8"]))
    with pytest.raises(ConfigError, match="takes uint8 frames of 256x128 only"):
        seg.infer(np.zeros((HEIGHT * 2, WIDTH, 3), np.uint8), "rgb8")
    seg.release()


def test_a_float_file_resizes_frames_of_another_size(exported):
    seg = engine(str(exported["float"]))
    result = seg.infer(np.zeros((HEIGHT * 2, WIDTH, 3), np.uint8), "rgb8")
    assert result.label.shape == (HEIGHT * 2, WIDTH)
    assert seg.inference_size == (WIDTH, HEIGHT)
    seg.release()


def test_an_onnx_file_with_backend_torch_is_a_config_error(exported):
    with pytest.raises(ConfigError, match="runs with backend onnxruntime or auto"):
        engine(str(exported["float"]), backend="torch")


def test_an_onnx_file_for_another_inference_size_is_a_config_error(exported):
    with pytest.raises(ConfigError, match="exported for 256x128 only"):
        engine(str(exported["float"]), inference_size=(512, 256))


def test_a_corrupt_onnx_file_is_one_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ConfigError, match="not a readable ONNX file"):
        engine(str(broken))


def test_an_onnx_file_without_our_metadata_is_one_line(exported, tmp_path):
    import onnx

    proto = onnx.load(str(exported["float"]))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    with pytest.raises(ConfigError, match="no swiftseg metadata"):
        engine(str(foreign))


def test_auto_on_the_cpu_starts_onnxruntime_only_when_its_candidate_is_asked(monkeypatch):
    import onnxruntime

    real, asked = ort_backend.require_onnxruntime, []

    def counted():
        asked.append(1)
        return real()

    monkeypatch.setattr(ort_backend, "require_onnxruntime", counted)
    seg = engine(backend="auto", retune=True)
    assert asked == []  # a restart whose cached winner is another's never imports it
    monkeypatch.setattr(onnxruntime, "__version__", "1.10.0")
    seg.prepare(64, 128, "rgb8")
    assert asked  # the candidates were asked for: its version checked then
    note = seg.stats()["choices"]["backend"]["notes"]["onnxruntime"]
    assert "1.10.0 is too old" in note and seg.backend != "onnxruntime"
    seg.release()
