"""swiftseg-bench smoke test: a tiny interleaved run writes the documented JSON rows."""

import json

import torch

from swiftseg_ros import cli

ROW_KEYS = {"network", "size", "device", "precision", "outputs", "engine_ms", "bare_ms",
            "naive_ms", "fps", "params", "gmacs", "host_copy_ms", "upload_ms",
            "preprocess_ms", "forward_ms", "postprocess_ms", "download_ms", "total_ms",
            "engine_over_bare", "speedup_over_naive", "label_agreement", "peak_mem_mb"}


def test_bench_writes_a_json_row_per_network_size_and_precision(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        status = cli.bench(["--networks", "fastscnn", "--sizes", "64x32", "--iters", "2",
                            "--warmup", "1", "--precision", "fp32,bf16", "--outputs",
                            "label,color", "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    rows = json.loads(out.read_text())
    assert [(r["network"], r["size"], r["precision"]) for r in rows] == [
        ("fastscnn", "64x32", "fp32"), ("fastscnn", "64x32", "bf16")]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["device"] == "cpu" and row["outputs"] == ["label", "color"]
        assert row["threads"] == 1
        assert row["engine_ms"] > 0 and row["bare_ms"] > 0 and row["naive_ms"] > 0
        assert row["params"] > 1e6 and row["gmacs"] > 0
    assert rows[0]["label_agreement"] is None and 0 <= rows[1]["label_agreement"] <= 1
    table = capsys.readouterr().out
    assert "fastscnn" in table and "eng/bare" in table


def test_bench_rejects_an_unknown_precision_in_one_line(capsys):
    assert cli.bench(["--precision", "int4", "--iters", "1"]) == 2
    assert "int4" in capsys.readouterr().err


def test_bench_finds_shipped_weights_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # neither fastscnn_synth.pt nor models/ here
    threads = torch.get_num_threads()
    try:
        for weights in ("fastscnn_synth.pt", "models/fastscnn_synth.pt"):
            status = cli.bench(["--weights", weights, "--sizes", "64x32", "--iters", "1",
                                "--warmup", "0", "--threads", "1"])
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
                          "--json", str(out)]) == 0
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
    from swiftseg_ros.engine.runners import timed

    ticks = iter([10.0, 10.004])
    calls = []
    run = timed(lambda: calls.append("step"), lambda: calls.append("sync"),
                clock=lambda: next(ticks), frames=2)
    ms, timings = run()
    assert calls == ["step", "sync"] and timings is None
    assert abs(ms - 2.0) < 1e-9  # 4 ms over a burst of 2 frames
