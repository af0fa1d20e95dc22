"""swiftseg-bench --batch: N cameras through one engine against N separate engines."""

import json

import pytest
import torch

from swiftseg_ros import cli
from swiftseg_ros.bench.batch import format_batch_table, parse_batches
from swiftseg_ros.errors import ConfigError


def test_batch_rows_compare_one_engine_with_n_engines(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        status = cli.bench(["--networks", "fastscnn", "--sizes", "64x32", "--batch", "1,2",
                            "--iters", "2", "--warmup", "1", "--threads", "1", "--backend",
                            "torch", "--no-onednn", "--no-channels-last", "--no-winograd",
                            "--quiet", "--json", str(tmp_path / "rows.json")])
    finally:
        torch.set_num_threads(threads)
    stdout, err = capsys.readouterr()
    assert status == 0, err
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [row["cameras"] for row in rows] == [1, 2]
    for row in rows:
        assert row["network"] == "fastscnn" and row["size"] == "64x32"
        assert row["one_engine_ms"] > 0 and row["separate_ms"] > 0
        assert row["one_engine_fps"] == pytest.approx(1000 * row["cameras"]
                                                      / row["one_engine_ms"])
        assert row["memory_kind"] == "process resident growth"
    assert "N engines ms" in stdout


@pytest.mark.parametrize("text", ["0", "1,x", "", "1,65"])
def test_bad_batch_lists_are_refused(text):
    with pytest.raises(ConfigError, match="--batch"):
        parse_batches(text)


def test_batch_list_is_sorted_without_repeats():
    assert parse_batches("4,1,2,2") == [1, 2, 4]


def test_batch_with_two_backends_is_one_line_and_exit_2(capsys):
    assert cli.bench(["--networks", "fastscnn", "--sizes", "64x32", "--batch", "1,2",
                      "--backend", "torch,onnxruntime", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "one precision and one backend" in err


def test_table_names_the_memory_measured():
    row = {"cameras": 2, "size": "64x32", "one_engine_ms": 2.0, "one_engine_fps": 1000.0,
           "separate_ms": 3.0, "separate_fps": 666.7, "speedup": 1.5,
           "memory": {"one_engine_mb": 10.0, "separate_mb": 20.0},
           "memory_kind": "device allocated"}
    table = format_batch_table([row], "fastscnn")
    assert "1.50x" in table and "device allocated" in table


def test_gpu_check_times_batches_and_judges_batch_4_against_batch_1():
    from swiftseg_ros import gpucheck
    from swiftseg_ros.bench.cli import build_parser

    steps = {name: args for name, args, _ in gpucheck.gpu_steps(iters=100)}
    parsed = build_parser().parse_args(steps[gpucheck.BATCH_STEP])
    assert parsed.batch == "1,2,4" and parsed.sizes == "1024x512"

    def row(cameras, fps):
        return {"step": gpucheck.BATCH_STEP, "cameras": cameras, "one_engine_fps": fps}

    (check,) = gpucheck.batch_targets([row(1, 1000.0), row(4, 1700.0)])
    assert check["met"] is True and check["value"] == pytest.approx(1.7)
    (check,) = gpucheck.batch_targets([row(1, 1000.0), row(4, 1200.0)])
    assert check["met"] is False
    (check,) = gpucheck.batch_targets([])
    assert check["met"] is None
