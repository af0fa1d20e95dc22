"""`make gpu-check` on a machine without CUDA: one line, the CPU-side parts, exit 0."""

import json

import pytest
import torch

from swiftseg_ros import gpucheck
from swiftseg_ros.bench.cli import build_parser
from swiftseg_ros.engine import EngineConfig
from swiftseg_ros.engine.backends.onnxruntime import why_unusable


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, run `make gpu-check` itself")
def test_gpu_check_without_cuda_says_so_runs_the_cpu_path_and_exits_0(tmp_path, capsys):
    assert gpucheck.main(["--out", str(tmp_path), "--budget", "240"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("gpu-check: no CUDA device here")
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["cuda_available"] is False
    assert {"gpu", "driver", "cuda", "cudnn"} <= set(env)
    (step,) = report["steps"]
    assert step["rc"] == 0, step["tail"]
    (row,) = report["rows"]
    assert row["step"] == "cpu-smoke" and row["pipelined_ms"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| cpu-smoke | fastscnn | 64x32 |" in table and table in printed


def test_every_gpu_step_is_a_valid_bench_command_line():
    parser = build_parser()
    names = []
    for name, args, timeout_s in gpucheck.gpu_steps(iters=100):
        parsed = parser.parse_args(args)
        assert parsed.device == "cuda" and timeout_s <= 200
        names.append(name)
    assert names[:2] == ["main-swiftnet_rn18", "main-fastscnn"]  # the targets' rows first
    assert {"node-defaults", "no-cuda-graphs", "no-channels-last"} <= set(names)


def row(network, fps, over_bare=1.02, pipelined=1.6, bare_runner="graph"):
    return {"step": f"main-{network}", "network": network, "size": "2048x1024",
            "precision": "fp16", "fps": fps, "engine_over_bare": over_bare,
            "bare_runner": bare_runner, "pipelined_speedup": pipelined}


def test_targets_say_met_missed_and_not_measured():
    checks = {c["target"]: c["met"] for c in gpucheck.targets([
        row("swiftnet_rn18", 640.0), row("fastscnn", 1200.0, over_bare=1.2, pipelined=1.1)])}
    assert checks["swiftnet_rn18 2048x1024 fp16 label FPS >= 600"] is True
    assert checks["fastscnn 2048x1024 fp16 label FPS >= 1500"] is False
    assert checks["fastscnn engine / graphed bare <= 1.05"] is False
    assert checks["fastscnn pipelined / serial >= 1.5"] is False
    assert checks["swiftnet_rn18 pipelined / serial >= 1.5"] is True
    eager = gpucheck.targets([row("swiftnet_rn18", 700.0, bare_runner="eager")])
    assert {c["target"]: c["met"] for c in eager}[
        "swiftnet_rn18 engine / graphed bare <= 1.05"] is None


def test_onnxruntime_step_is_skipped_with_the_reason_without_a_gpu_provider():
    steps, note = gpucheck.ort_steps({"onnxruntime": "1.30.0",
                                      "onnxruntime_providers": ["CPUExecutionProvider"]}, 10)
    assert steps == [] and "no CUDA/TensorRT provider" in note


def test_onnxruntime_step_asks_for_what_the_backend_runs():
    (step,), note = gpucheck.ort_steps({"onnxruntime": "1.30.0", "onnxruntime_providers": [
        "CUDAExecutionProvider", "CPUExecutionProvider"]}, 10)
    _, args, _ = step
    precision = args[args.index("--precision") + 1]
    assert "CUDAExecutionProvider" in note
    assert why_unusable(EngineConfig(network="fastscnn", backend="onnxruntime",
                                                 precision=precision)) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, run `make gpu-check` itself")
def test_cuda_tests_step_logs_everything_and_summarises_the_run(tmp_path):
    result = gpucheck.run_cuda_tests(120.0, tmp_path)
    assert result["rc"] == 0 and "skipped" in result["summary"]
    assert "test_engine_cuda.py" in (tmp_path / "cuda_tests.log").read_text()
