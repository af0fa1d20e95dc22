"""The OpenVINO backend: labels of the torch backend, the precision hint as asked, the
threads, buffers bound once, its model cache, and one clear line where it cannot run."""

import sys

import numpy as np
import pytest

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.synthetic.frames import generate_frame

openvino = pytest.importorskip("openvino")
pytest.importorskip("onnxscript")

WIDTH, HEIGHT = 128, 64
WEIGHTS = "fastscnn_synth.pt"


def engine(**changes):
    settings = dict(weights=WEIGHTS, backend="openvino", upsample="logits",
                    outputs=("label", "color"), warmup_iters=1, threads=1)
    settings.update(changes)
    return SegmentationEngine(EngineConfig(**settings))


def native_bf16() -> bool:
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def fp32_engine():
    seg = engine()
    yield seg
    seg.release()


def test_labels_equal_the_torch_backend_on_999_permille(fp32_engine):
    reference = engine(backend="torch")
    for index in range(2):
        frame = generate_frame(5, index, WIDTH, HEIGHT)[0]
        expected = reference.infer(frame, "rgb8").label.copy()
        assert (fp32_engine.infer(frame, "rgb8").label == expected).mean() >= 0.999
    assert fp32_engine.stats()["backend"] == "openvino"
    reference.release()


def test_fp32_means_fp32_and_the_threads_are_the_engines(fp32_engine):
    fp32_engine.infer(generate_frame(5, 0, WIDTH, HEIGHT)[0], "rgb8")
    compiled = fp32_engine._current.device_pass.forward.compiled
    # on a CPU with native bf16 OpenVINO would run bf16 unless told
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_input_and_logits_are_bound_once_and_reused(fp32_engine):
    frame = generate_frame(5, 1, WIDTH, HEIGHT)[0]
    fp32_engine.infer(frame, "rgb8")
    forward = fp32_engine._current.device_pass.forward
    logits = fp32_engine.run_forward()
    assert logits is forward.logits
    output = forward.request.get_output_tensor().data
    assert output.ctypes.data == forward.logits.data_ptr()
    assert np.shares_memory(forward.request.get_input_tensor().data,
                            forward.network_input.numpy())


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 for OpenVINO")
def test_bf16_runs_bf16_and_agrees_with_fp32(fp32_engine):
    seg = engine(precision="bf16")
    frame = generate_frame(5, 0, WIDTH, HEIGHT)[0]
    labels = seg.infer(frame, "rgb8").label
    compiled = seg._current.device_pass.forward.compiled
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
    assert (labels == fp32_engine.infer(frame, "rgb8").label).mean() >= 0.98
    seg.release()


def test_auto_offers_openvino_beside_the_others():
    seg = engine(backend="auto", precision="auto")
    seg.prepare(HEIGHT, WIDTH, "rgb8")
    times = seg.stats()["choices"]["device_pass"]["times_ms"]
    assert "openvino" in times
    assert ("openvino@bf16" in times) == native_bf16()
    seg.release()


def test_a_truncated_compiled_model_in_the_cache_is_compiled_again(tmp_path):
    engine(cache_dir=tmp_path).prepare(HEIGHT, WIDTH, "rgb8")
    blobs = list((tmp_path / "openvino").iterdir())
    assert blobs
    for blob in blobs:
        blob.write_bytes(blob.read_bytes()[:blob.stat().st_size // 3])
    seg = engine(cache_dir=tmp_path, retune=True)
    assert seg.infer(generate_frame(5, 0, WIDTH, HEIGHT)[0], "rgb8").label is not None
    seg.release()


def test_without_the_package_it_is_one_line_and_auto_notes_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ConfigError, match=r"^backend: openvino needs the package openvino "
                                          r">= 2024\.0 \(pip install openvino\)"):
        engine()
    seg = engine(backend="auto")
    seg.prepare(HEIGHT, WIDTH, "rgb8")
    assert "pip install openvino" in seg.stats()["choices"]["backend"]["notes"]["openvino"]
    seg.release()


def test_a_device_openvino_does_not_report_is_one_line():
    absent = next(d for d in ("NPU", "GPU", "GNA") if d not in openvino.Core().available_devices)
    with pytest.raises(ConfigError, match=f"openvino_device: {absent} is not there; "
                                          f"OpenVINO reports CPU"):
        engine(openvino_device=absent)


def test_it_runs_with_device_cpu_only():
    from swiftseg_ros.engine.backends.openvino import why_unusable

    note = why_unusable(EngineConfig(network="fastscnn", backend="openvino", device="cuda"))
    assert note.startswith("runs with device cpu only")
