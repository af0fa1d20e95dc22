"""`make gpu-check`: the CUDA tests and the GPU benchmark matrix in one command, for a
fresh NVIDIA machine whose Python has torch with CUDA but no package registry.

It writes `gpu_check.json`, `gpu_check.md` and (on CUDA) `cuda_tests.log` into the
folder it is given and prints the table last. The JSON is rewritten after every step, so a run stopped by a time limit
still leaves what it measured. Each step runs in its own process with a timeout (a hung
or crashed step costs its own budget, not the whole check), and steps that no longer
fit the overall budget are skipped and listed as such. Without CUDA it says so in one
line, runs the same code path on the CPU at a tiny size (so the suite can run it and
it cannot rot), and exits 0.

The targets it checks (docs/benchmarks.md): H200, fp16, uint8 frame in host memory to
labels in host memory, batch 1: SwiftNet-RN18 at 2048x1024 >= 600 FPS, Fast-SCNN >= 1500
FPS (label only), engine within 1.05x of a graphed bare forward, pipelined throughput
>= 1.5x serial.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ("swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid", "fastscnn")
TARGET_FPS = {"swiftnet_rn18": 600.0, "fastscnn": 1500.0}
TARGET_SIZE = "2048x1024"
MAX_ENGINE_OVER_BARE = 1.05
MIN_PIPELINED_SPEEDUP = 1.5
BURST = 8
# several cameras through one engine (issue 32): frames per second of one engine at batch
# 4 against batch 1, Fast-SCNN fp16 1024x512
BATCH_STEP = "batch-fastscnn"
MIN_BATCH4_SPEEDUP = 1.6
STAGE_COLUMNS = ("host_copy", "upload", "preprocess", "forward", "postprocess", "download")


def gpu_steps(iters: int) -> list[tuple[str, list[str], int]]:
    """(name, bench arguments, timeout s) of the GPU matrix, most important first."""
    # torch alone: an onnxruntime with GPU providers would otherwise export and time an
    # ONNX graph per plan inside these steps; it has its own step (ort_steps)
    common = ["--device", "cuda", "--backend", "torch", "--iters", str(iters), "--warmup",
              "10"]
    steps = [(f"main-{net}", ["--networks", net, "--sizes", "2048x1024,1024x512",
                              "--precision", "fp16,fp32", "--outputs", "label",
                              "--upsample", "labels", "--pipelined", str(BURST), *common], 150)
             for net in ("swiftnet_rn18", "fastscnn", "swiftnet_mnv2", "swiftnet_rn18_pyramid")]
    pair = ",".join(("swiftnet_rn18", "fastscnn"))
    fp16_label = ["--sizes", TARGET_SIZE, "--precision", "fp16", "--outputs", "label",
                  "--no-naive", *common]
    steps += [
        ("node-defaults", ["--networks", ",".join(NETWORKS), "--sizes", TARGET_SIZE,
                           "--precision", "fp16", "--outputs", "label,color",
                           "--upsample", "logits", "--pipelined", str(BURST), "--no-naive",
                           *common], 150),
        ("no-cuda-graphs", ["--networks", pair, "--no-cuda-graphs", *fp16_label], 90),
        ("no-channels-last", ["--networks", ",".join(NETWORKS), "--no-channels-last",
                              *fp16_label], 120),
        ("fp32-tf32", ["--networks", pair, "--sizes", TARGET_SIZE, "--precision", "fp32",
                       "--tf32", "--outputs", "label", "--no-naive", *common], 90),
        (BATCH_STEP, ["--networks", "fastscnn", "--sizes", "1024x512", "--precision", "fp16",
                      "--batch", "1,2,4", *common], 120),
    ]
    return steps


def ort_steps(env: dict, iters: int) -> tuple[list[tuple[str, list[str], int]], str]:
    """The ONNX Runtime GPU step where this onnxruntime and the bench support one, and
    a note saying what was (not) run and why."""
    gpu_providers = [p for p in (env.get("onnxruntime_providers") or [])
                     if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    if not gpu_providers:
        return [], (f"onnxruntime {env.get('onnxruntime')} has no CUDA/TensorRT provider "
                    f"here ({env.get('onnxruntime_providers')}); not run")
    # the ONNX Runtime backend runs fp32 graphs (engine/backends/onnxruntime.py, why_unusable)
    return [("onnxruntime", ["--networks", "swiftnet_rn18,fastscnn", "--sizes", TARGET_SIZE,
                             "--precision", "fp32", "--outputs", "label", "--no-naive",
                             "--backend", "onnxruntime", "--device", "cuda", "--iters",
                             str(iters), "--warmup", "10"], 120)], \
        f"onnxruntime providers {gpu_providers}"


def cpu_steps() -> list[tuple[str, list[str], int]]:
    """The same path on the CPU at a tiny size: what the suite runs without a GPU (torch,
    as the GPU steps; no by-hand OpenVINO reference, which has no CUDA counterpart)."""
    return [("cpu-smoke", ["--networks", "fastscnn", "--sizes", "64x32", "--iters", "2",
                           "--warmup", "1", "--precision", "fp32", "--outputs", "label",
                           "--pipelined", "2", "--threads", "1", "--backend", "torch",
                           "--no-openvino"], 120)]


def environment() -> dict:
    """Versions and the device: Python, torch, CUDA, cuDNN, driver, GPU, onnxruntime."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "cudnn": None, "gpu": None, "capability": None, "driver": None,
            "onnxruntime": None, "onnxruntime_providers": None}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["gpu_memory_mib"] = torch.cuda.get_device_properties(0).total_memory // 2**20
        info["driver"] = _driver_version()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    return info


def _driver_version() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(command: list[str], timeout_s: float) -> dict:
    """Run a child process; its exit code, duration and output tail (never raises)."""
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env=_child_env(), cwd=ROOT, check=False)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        rc = "timeout"
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                         for part in (exc.stdout, exc.stderr) if part)
    return {"command": shlex.join(command), "rc": rc,
            "seconds": round(time.monotonic() - started, 1), "output": output}


def run_cuda_tests(timeout_s: float, folder: Path) -> dict:
    """pytest on test/test_engine_cuda.py; the whole output goes to cuda_tests.log."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
               str(ROOT / "test" / "test_engine_cuda.py")]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command.append("--timeout=120")
    result = _run(command, timeout_s)
    output = result.pop("output")
    (folder / "cuda_tests.log").write_text(output)
    result["tail"] = output[-3000:]
    result["summary"] = next((line for line in reversed(output.splitlines())
                              if " in " in line and any(word in line for word in (
                                  "passed", "failed", "error", "skipped"))), "")
    return result


def run_bench(name: str, args: list[str], timeout_s: float, folder: Path) -> dict:
    out = folder / f"bench_{name}.json"
    code = "import sys; from swiftseg_ros.cli import bench; sys.exit(bench(sys.argv[1:]))"
    result = _run([sys.executable, "-c", code, *args, "--quiet", "--json", str(out)],
                  timeout_s)
    result["tail"] = result.pop("output")[-3000:]
    result["rows"] = json.loads(out.read_text()) if out.is_file() else []
    for row in result["rows"]:
        row["step"] = name
    return result


def targets(rows: list[dict]) -> list[dict]:
    """Each target of the issue, with the measured value and whether it is met."""
    checks = []
    main = [r for r in rows if r["step"].startswith("main-") and r["size"] == TARGET_SIZE
            and r["precision"] == "fp16"]
    for network, fps in TARGET_FPS.items():
        row = next((r for r in main if r["network"] == network), None)
        checks.append(_check(f"{network} {TARGET_SIZE} fp16 label FPS >= {fps:g}",
                             None if row is None else row["fps"], lambda v, t=fps: v >= t))
    for row in main:
        checks.append(_check(f"{row['network']} engine / graphed bare <= "
                             f"{MAX_ENGINE_OVER_BARE}",
                             row["engine_over_bare"] if row.get("bare_runner") == "graph"
                             else None, lambda v: v <= MAX_ENGINE_OVER_BARE))
        checks.append(_check(f"{row['network']} pipelined / serial >= {MIN_PIPELINED_SPEEDUP}",
                             row.get("pipelined_speedup"),
                             lambda v: v >= MIN_PIPELINED_SPEEDUP))
        # not a target: how close the pipelined engine comes to the graphed network alone
        checks.append(_check(f"{row['network']} pipelined ms per frame / graphed bare "
                             f"(information)", row.get("pipelined_over_bare")
                             if row.get("bare_runner") == "graph" else None,
                             lambda v: v <= MAX_ENGINE_OVER_BARE))
    return checks


def batch_targets(rows: list[dict]) -> list[dict]:
    """The multi-camera target: one engine's frames per second at batch 4 over batch 1."""
    by_count = {row["cameras"]: row for row in rows if row["step"] == BATCH_STEP}
    value = None
    if 1 in by_count and 4 in by_count:
        value = by_count[4]["one_engine_fps"] / by_count[1]["one_engine_fps"]
    return [_check(f"fastscnn 1024x512 fp16 batch 4 / batch 1 frames per second >= "
                   f"{MIN_BATCH4_SPEEDUP}", value, lambda v: v >= MIN_BATCH4_SPEEDUP)]


def _check(what: str, value, test) -> dict:
    return {"target": what, "value": value, "met": None if value is None else bool(test(value))}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# gpu-check {report['started']}", "",
             f"GPU {env.get('gpu')} (sm {env.get('capability')}), driver {env.get('driver')}, "
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
             f"Python {env.get('python')}, onnxruntime {env.get('onnxruntime')} "
             f"{env.get('onnxruntime_providers')}", ""]
    tests = report.get("cuda_tests")
    if tests:
        lines += [f"CUDA tests: {tests.get('summary') or tests.get('rc')}", ""]
    if report.get("onnxruntime_note"):
        lines += [f"ONNX Runtime on the GPU: {report['onnxruntime_note']}", ""]
    lines += ["| step | network | size | prec | outputs | graph | engine ms | fps | "
              "bare graph ms | eng/bare | pipelined fps | pipelined x | "
              "copy/up/pre/fwd/post/down ms | peak / reserved MB |", "|" + "---|" * 14]
    for row in report["rows"]:
        lines.append("| " + " | ".join((
            row["step"], row["network"], row["size"], row["precision"],
            ",".join(row["outputs"]), "yes" if row.get("cuda_graph") else "no",
            _num(row["engine_ms"], 3), _num(row["fps"], 0), _num(row.get("bare_graph_ms"), 3),
            _num(row["engine_over_bare"], 3), _num(row.get("pipelined_fps"), 0),
            _num(row.get("pipelined_speedup"), 2),
            "/".join(_num(row.get(f"{s}_ms"), 3) for s in STAGE_COLUMNS),
            f"{_num(row.get('peak_mem_mb'), 0)} / {_num(row.get('reserved_mem_mb'), 0)}",
        )) + " |")
    if report.get("batch_rows"):
        lines += ["", "| step | cameras | size | one engine fps | N engines fps | speedup | "
                  "one engine / N engines MB |", "|---|---|---|---|---|---|---|"]
        for row in report["batch_rows"]:
            memory = row.get("memory") or {}
            lines.append(f"| {row['step']} | {row['cameras']} | {row['size']} | "
                         f"{_num(row['one_engine_fps'], 0)} | {_num(row['separate_fps'], 0)} | "
                         f"{_num(row['speedup'], 2)} | {_num(memory.get('one_engine_mb'), 0)} "
                         f"/ {_num(memory.get('separate_mb'), 0)} |")
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for check in report["targets"]:
        met = {True: "yes", False: "NO", None: "not measured"}[check["met"]]
        lines.append(f"| {check['target']} | {_num(check['value'], 3)} | {met} |")
    skipped = [s["name"] for s in report["steps"] if s.get("rc") == "skipped"]
    failed = [s["name"] for s in report["steps"] if s.get("rc") not in (0, "skipped")]
    if skipped or failed:
        lines += ["", f"steps skipped (budget): {', '.join(skipped) or '-'}; "
                      f"steps failed: {', '.join(failed) or '-'}"]
    return "\n".join(lines) + "\n"


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    from swiftseg_ros.cli import ArgumentParser

    parser = ArgumentParser(prog="swiftseg-gpu-check",
                            description="CUDA tests and the GPU benchmark matrix, one JSON "
                                        "and one markdown table (docs/benchmarks.md)")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json/.md")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for the whole check (default 450); steps that no "
                             "longer fit are skipped")
    parser.add_argument("--iters", type=int, default=100,
                        help="timed iterations per bench step on CUDA (default 100)")
    return parser


def missing_packages() -> list[str]:
    """The packages the check needs that this Python cannot import."""
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"gpu-check: error: {sys.executable} has no {', '.join(missing)}; run "
              "`make setup` (the check then uses .venv) or name a Python that has them: "
              "make gpu-check GPU_PYTHON=/path/to/python", file=sys.stderr)
        return 2
    import torch

    started = time.monotonic()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    on_cuda = torch.cuda.is_available()
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": shlex.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
              "environment": environment(), "steps": [], "rows": [], "targets": []}
    env = report["environment"]
    if on_cuda:
        print(f"gpu-check: {env['gpu']} (sm {env['capability']}), driver {env['driver']}, "
              f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}", flush=True)
    else:
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); running the CPU-side parts only", flush=True)
    _write(report, folder)

    def left() -> float:
        return args.budget - (time.monotonic() - started)

    if on_cuda:
        report["cuda_tests"] = run_cuda_tests(min(200.0, max(30.0, left() * 0.4)), folder)
        print(f"gpu-check: CUDA tests: {report['cuda_tests']['summary'] or report['cuda_tests']['rc']}",
              flush=True)
        _write(report, folder)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        steps = cpu_steps()
        if on_cuda:
            extra, report["onnxruntime_note"] = ort_steps(report["environment"], args.iters)
            steps = gpu_steps(args.iters) + extra
        for name, bench_args, timeout_s in steps:
            if left() < 30.0:
                report["steps"].append({"name": name, "rc": "skipped"})
                continue
            result = run_bench(name, bench_args, min(timeout_s, left()), Path(scratch))
            found = result.pop("rows")
            if name == BATCH_STEP:
                report.setdefault("batch_rows", []).extend(found)
            else:
                report["rows"].extend(found)
            report["steps"].append({"name": name, **result})
            print(f"gpu-check: {name}: rc {result['rc']}, {result['seconds']} s", flush=True)
            report["targets"] = targets(report["rows"]) + batch_targets(
                report.get("batch_rows", []))
            _write(report, folder)
    report["seconds"] = round(time.monotonic() - started, 1)
    _write(report, folder)
    print((folder / "gpu_check.md").read_text(), flush=True)
    return 0


NEEDED = ("torch", "numpy", "cv2", "yaml")


def _write(report: dict, folder: Path) -> None:
    (folder / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (folder / "gpu_check.md").write_text(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
