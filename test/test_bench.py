"""swiftseg-bench smoke test: a tiny interleaved run writes the documented JSON rows."""

import importlib.util
import json

import pytest
import torch

from swiftseg_ros import cli
from swiftseg_ros.bench import cli as bench_module
from swiftseg_ros.engine import cpu_caps

ROW_KEYS = {"network", "size", "device", "precision", "outputs", "engine_ms", "bare_ms",
            "naive_ms", "fps", "params", "gmacs", "host_copy_ms", "upload_ms",
            "preprocess_ms", "forward_ms", "postprocess_ms", "download_ms", "total_ms",
            "engine_over_bare", "speedup_over_naive", "label_agreement", "peak_mem_mb"}


def run_bench(argv):
    threads = torch.get_num_threads()
    try:
        return cli.bench(argv)
    finally:
        torch.set_num_threads(threads)


def test_bench_writes_a_json_row_per_backend_with_the_machine_and_choices(tmp_path, capsys):
    out = tmp_path / "bench.json"
    status = run_bench(["--networks", "fastscnn", "--sizes", "64x32", "--iters", "2",
                        "--warmup", "1", "--backend", "torch,onnxruntime", "--threads", "1",
                        "--precision", "fp32", "--no-openvino", "--json", str(out)])
    assert status == 0
    rows = json.loads(out.read_text())
    assert [(r["network"], r["size"], r["backend"]) for r in rows] == [
        ("fastscnn", "64x32", "torch"), ("fastscnn", "64x32", "onnxruntime")]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["device"] == "cpu" and row["outputs"] == ["label", "color"]
        assert row["upsample"] == "logits" and row["threads"] == 1
        assert row["engine_ms"] > 0 and row["bare_ms"] > 0 and row["naive_ms"] > 0
        assert row["params"] > 1e6 and row["gmacs"] > 0
        assert row["cpu"]["model"] and "native_bf16" in row["cpu"]
        assert row["torch"] and row["onnxruntime"]
        assert row["choices"]["backend"]["picked"] == row["backend"]
    assert set(rows[0]["choices"]) == {"device_pass", "backend", "cpu_convs",
                                       "memory_format", "conv_3x3", "edge_labels"}
    assert rows[0]["label_agreement"] is None and rows[1]["label_agreement"] >= 0.99
    table = capsys.readouterr().out
    assert "fastscnn" in table and "eng/bare" in table and "CPU: " in table


@pytest.mark.skipif(not cpu_caps.detect().native_bf16,
                    reason=f"no native bf16: this CPU {cpu_caps.detect().bf16_reason}")
def test_bench_times_bf16_beside_fp32_with_label_agreement(tmp_path):
    """The node's default backend (auto) at bf16 is torch's (and OpenVINO's where it is
    installed); ONNX Runtime has fp32 rows only."""
    out = tmp_path / "bench.json"
    assert run_bench(["--networks", "fastscnn", "--sizes", "64x32", "--iters", "2",
                      "--warmup", "1", "--precision", "fp32,bf16",
                      "--backend", "auto,onnxruntime", "--no-openvino",
                      "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["precision"], r["backend_asked"]) for r in rows] == [
        ("fp32", "auto"), ("fp32", "onnxruntime"), ("bf16", "auto")]
    assert rows[2]["backend"] in ("torch", "openvino") and 0 <= rows[2]["label_agreement"] <= 1


def test_each_precision_gets_the_backends_that_run_it():
    assert bench_module._engine_runs(["fp32", "bf16"], ["auto", "torch", "onnxruntime"]) == [
        ("fp32", "auto"), ("fp32", "torch"), ("fp32", "onnxruntime"), ("bf16", "torch")]
    assert bench_module._engine_runs(["fp16"], ["auto", "onnxruntime"]) == [("fp16", "auto")]
    assert bench_module._engine_runs(["bf16"], ["onnxruntime"]) == []


def test_bench_refuses_onnxruntime_alone_at_a_reduced_precision(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run_bench(["--networks", "fastscnn", "--sizes", "64x32", "--device", "cuda",
                      "--precision", "fp16", "--backend", "onnxruntime",
                      "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs fp32 only" in err
    assert not out.exists()


@pytest.mark.skipif(cpu_caps.detect().native_bf16, reason="this CPU has native bf16")
def test_bench_refuses_bf16_without_native_bf16_before_writing(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run_bench(["--networks", "fastscnn", "--sizes", "64x32", "--precision",
                      "fp32,bf16", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use precision fp32" in err
    assert not out.exists()


def test_bench_rejects_an_unknown_precision_in_one_line(capsys):
    assert cli.bench(["--precision", "int4", "--iters", "1"]) == 2
    assert "int4" in capsys.readouterr().err


def test_bench_finds_shipped_weights_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # neither fastscnn_synth.pt nor models/ here
    threads = torch.get_num_threads()
    try:
        for weights in ("fastscnn_synth.pt", "models/fastscnn_synth.pt"):
            # torch alone: finding the file is the point, not timing ONNX Runtime or the
            # by-hand OpenVINO reference against it
            status = cli.bench(["--weights", weights, "--sizes", "64x32", "--iters", "1",
                                "--warmup", "0", "--threads", "1", "--backend", "torch",
                                "--no-openvino"])
            assert status == 0, capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    assert "fastscnn" in capsys.readouterr().out


def test_bench_times_the_pipelined_runner_and_reports_it(tmp_path):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        assert cli.bench(["--networks", "fastscnn", "--sizes", "64x32", "--iters", "2",
                          "--warmup", "1", "--pipelined", "3", "--no-naive", "--threads", "1",
                          "--precision", "fp32", "--no-openvino", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    (row,) = json.loads(out.read_text())
    assert row["pipelined_ms"] > 0 and row["pipelined_speedup"] > 0
    assert row["bare_graph_ms"] is None and row["bare_runner"] == "eager"
    assert row["math_mode"] == "fp32" and row["prepare_ms"] > 0
    assert row["engine_over_bare"] == row["engine_ms"] / row["bare_ms"]


def test_bench_rejects_a_pipelined_burst_of_one(capsys):
    assert cli.bench(["--pipelined", "1", "--iters", "1"]) == 2
    assert "--pipelined" in capsys.readouterr().err


def test_runners_are_timed_from_outside_including_the_sync():
    from swiftseg_ros.bench.runners import timed

    ticks = iter([10.0, 10.004])
    calls = []
    run = timed(lambda: calls.append("step"), lambda: calls.append("sync"),
                clock=lambda: next(ticks), frames=2)
    ms, timings = run()
    assert calls == ["step", "sync"] and timings is None
    assert abs(ms - 2.0) < 1e-9  # 4 ms over a burst of 2 frames


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_bench_times_the_by_hand_openvino_reference_beside_the_engine(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run_bench(["--networks", "fastscnn", "--sizes", "64x32", "--iters", "2",
                      "--warmup", "1", "--threads", "1", "--no-naive",
                      "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["precision"] == "auto" and row["precision_picked"] in ("fp32", "bf16")
    expected = {"fp32", "bf16"} if cpu_caps.detect().native_bf16 else {"fp32"}
    assert set(row["openvino_ms"]) <= expected and "fp32" in row["openvino_ms"]
    for precision, ms in row["openvino_ms"].items():
        assert ms > 0
        assert row["engine_over_openvino"][precision] == row["engine_ms"] / ms
    assert row["openvino"] and row["choices_source"] in ("measured", "cache")
    assert "eng/ov" in capsys.readouterr().out
