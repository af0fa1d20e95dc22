"""swiftseg-bench: end-to-end timing of the engine against "bare" and "naive" baselines.

The SwiftNet paper's method (its Figure 5): batch 1, from the image in host memory to
the predictions back in host memory, after warm-up. The runners share each
iteration, in a random order drawn anew each iteration, so that machine drift (other
processes, clocks, heat) and each runner's after-effects (cold caches) hit all alike
and their ratios stay meaningful on a busy machine:

- engine: `SegmentationEngine.infer` on a host uint8 frame, per stage, once per
  precision and backend asked for (`--backend torch,onnxruntime` side by side; auto
  times every installed backend at prepare and keeps the fastest; ONNX Runtime runs
  fp32 only and OpenVINO fp32 or bf16, so neither has a row at another precision;
  precision auto times fp32 and the device's native low precision);
- bare: the engine's own chosen forward (the fused torch model with the chosen conv
  route and memory format, or the ONNX Runtime session alone) + `max(1)` on the
  engine's already pre-processed input on the device, eager; on CUDA also `bare_graph`,
  the same replayed from a CUDA graph: the floor the engine's overhead is measured
  against (graphed for a graphed engine);
- pipelined (`--pipelined BURST`): bursts of `infer_pipelined`, ms per frame;
- naive: the paper's Figure 5 loop as a user writes it: per frame
  `torch.from_numpy(frame).to(device)`, float conversion and normalization, the
  plain (unfused, fp32, contiguous) eager `model(x)` with its full-size logits,
  `logits.max(1)`, `.byte().cpu()`;
- openvino (CPU, where the package is installed; `--no-openvino` skips it): the
  by-hand OpenVINO reference (openvino_reference.py), the network with normalization,
  upsampling and argmax converted with `openvino.convert_model` and compiled with the
  f32 hint, and another runner with the bf16 hint where the CPU has native bf16.

Every runner is timed from outside by the same host clock and device synchronization
(bench/runners.py). Device memory is measured per engine in steady state, before the
timed run (`peak_mem_mb`, `reserved_mem_mb`).

The defaults are the node's: outputs label and color, bilinear logits upsampling,
backend auto, precision auto. Each row records the CPU (model, flags, native bf16), the
torch, onnxruntime and openvino versions, the threads, the choices the engine made and
whether they were measured or taken from the choices cache (`--retune` measures).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from swiftseg_ros.bench.openvino_reference import (
    OpenVinoReference,
    convert_labels_graph,
    openvino_precisions,
)
from swiftseg_ros.bench.runners import (
    BareRunner,
    device_sync,
    engine_runner,
    memory_baseline,
    pipelined_runner,
    steady_memory,
    timed,
)
from swiftseg_ros.cli import (
    ArgumentParser,
    add_common_flags,
    check_count,
    check_device,
    check_network,
    parse_size_flag,
    write_json,
)
from swiftseg_ros.engine import cpu_caps
from swiftseg_ros.engine.config import BACKENDS, OUTPUTS, PRECISIONS, EngineConfig
from swiftseg_ros.engine.engine import SegmentationEngine
from swiftseg_ros.engine.timing import PERCENTILES, STAGES
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.files import check_output_file
from swiftseg_ros.paths import resolve_weights
from swiftseg_ros.progress import progress as progress_display

DEFAULT_NETWORKS = ("swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid", "fastscnn")
RUNNERS = ("engine", "bare", "bare_graph", "pipelined", "naive")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-bench",
        description="Time the segmentation engine end to end (host frame in, host outputs "
                    "out) against the bare network and the paper's naive loop, interleaved.")
    parser.add_argument("--networks", "--network", default=",".join(DEFAULT_NETWORKS),
                        help="comma-separated network names (default: all four); with "
                             "--weights, the checkpoint's network")
    parser.add_argument("--sizes", default="1024x512",
                        help="comma-separated input sizes WIDTHxHEIGHT (default 1024x512)")
    add_common_flags(parser, network=False, precision=False)
    parser.add_argument("--precision", default="auto",
                        help="auto, fp32, fp16 (CUDA), bf16, or a comma-separated list timed "
                             "in the same interleaved run (default auto, as the node)")
    parser.add_argument("--backend", default="auto",
                        help="auto, torch, onnxruntime, openvino, or a comma-separated list "
                             "timed in the same interleaved run (default auto, as the node)")
    parser.add_argument("--retune", action="store_true",
                        help="measure the engines' choices afresh instead of taking those "
                             "cached for this setup")
    parser.add_argument("--outputs", default="label,color",
                        help=f"engine outputs, comma-separated from {','.join(OUTPUTS)} "
                             f"(default label,color, as the node)")
    parser.add_argument("--upsample", default="logits", choices=["logits", "labels"],
                        help="engine upsampling mode (default logits, as the node)")
    parser.add_argument("--iters", type=int, default=50, help="timed iterations (default 50)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed iterations per runner first (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--no-cuda-graphs", action="store_true",
                        help="run the engine eagerly on CUDA")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="time contiguous (NCHW) memory format only, not channels_last")
    parser.add_argument("--no-onednn", action="store_true",
                        help="CPU: time only PyTorch's own conv kernel choice, not oneDNN's")
    parser.add_argument("--no-winograd", action="store_true",
                        help="CPU: do not time Winograd 3x3 convolutions against direct ones")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive runner")
    parser.add_argument("--no-openvino", action="store_true",
                        help="CPU: skip the by-hand OpenVINO reference runners (fp32, and "
                             "bf16 where native)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA fp32: let cuDNN/cuBLAS round to TF32 (default: true fp32)")
    parser.add_argument("--pipelined", type=int, default=0, metavar="BURST",
                        help="also time infer_pipelined over bursts of BURST frames (>= 2; "
                             "default 0: off)")
    parser.add_argument("--batch", metavar="N,N,...",
                        help="instead: N cameras (e.g. 1,2,4) through one engine in batches "
                             "against N separate engines: frames per second and memory "
                             "(bench/batch.py)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    networks = [check_network(n, "--networks")
                for n in args.networks.replace(" ", "").split(",") if n]
    sizes = [parse_size_flag(s, "--sizes") for s in args.sizes.replace(" ", "").split(",") if s]
    check_count(args.iters, "--iters", 1, 100_000)
    check_count(args.warmup, "--warmup", 0, 100_000)
    if args.json:
        check_output_file(args.json, "--json")
    precisions = [p for p in args.precision.replace(" ", "").split(",") if p]
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ConfigError(f"--precision: {precision!r}, expected {', '.join(PRECISIONS)}")
    backends = [b for b in args.backend.replace(" ", "").split(",") if b]
    for backend in backends:
        if backend not in BACKENDS:
            raise ConfigError(f"--backend: {backend!r}, expected {', '.join(BACKENDS)}")
    if not networks or not sizes or not precisions or not backends:
        raise ConfigError("give at least one network, size, precision and backend")
    if "bf16" in precisions and args.device == "cpu":
        cpu_caps.detect().require_bf16()
    args.runs = _engine_runs(precisions, backends)
    if not args.runs:
        _check_backend(backends[0], precisions[0], args.device)  # says what it runs
    for precision, backend in args.runs:
        _check_backend(backend, precision, args.device)
    check_device(args.device)  # after the backends: their message says more
    if args.pipelined and args.pipelined < 2:
        raise ConfigError(f"--pipelined {args.pipelined}, expected 0 (off) or a burst >= 2")
    if args.iters < 1 or args.warmup < 0:
        raise ConfigError(f"--iters {args.iters} / --warmup {args.warmup}: need iters >= 1 "
                          f"and warmup >= 0")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads}, expected >= 1")
        torch.set_num_threads(args.threads)
    if args.weights:
        # every runner loads this one path; names are looked up in models/ too
        args.weights = str(resolve_weights(args.weights))
        networks = [_checkpoint_network(args.weights, networks, args.networks)]

    if args.batch is not None:
        return _main_batch(args, networks, sizes)
    rows = []
    total = len(networks) * len(sizes) * (args.iters + args.warmup)
    for network, weights, (width, height), progress in _cases(args, networks, sizes, total,
                                                              "bench"):
        progress.set_postfix_str(f"{network} {width}x{height}")
        rows.extend(_bench_one(args, network, weights, width, height, progress))
    print(format_table(rows))
    print(f"CPU: {cpu_caps.detect().flags_line()}; torch {torch.__version__}, onnxruntime "
          f"{_onnxruntime_version() or 'not installed'}, openvino "
          f"{_openvino_version() or 'not installed'}, {torch.get_num_threads()} thread(s)")
    write_json(args.json, rows)
    return 0


def _main_batch(args, networks, sizes) -> int:
    """--batch: one engine for N cameras against N engines (bench/batch.py)."""
    from swiftseg_ros.bench.batch import bench_batches, format_batch_table, parse_batches

    batches = parse_batches(args.batch)
    if len(args.runs) != 1:
        raise ConfigError("--batch times one precision and one backend: give one of each")
    precision, backend = args.runs[0]
    outputs = tuple(o for o in args.outputs.replace(" ", "").split(",") if o)
    rows, tables = [], []
    total = len(networks) * len(sizes) * len(batches) * args.iters
    for network, weights, (width, height), progress in _cases(args, networks, sizes, total,
                                                              "bench --batch"):
        config = EngineConfig(weights=weights, device=args.device, precision=precision,
                              backend=backend, outputs=outputs,
                              upsample=args.upsample, threads=args.threads,
                              cuda_graphs=not args.no_cuda_graphs,
                              channels_last=not args.no_channels_last,
                              onednn_convs=not args.no_onednn,
                              winograd=not args.no_winograd, tf32=args.tf32,
                              warmup_iters=max(1, args.warmup))
        frames = [bench_frame(width, height, seed) for seed in range(max(batches))]
        found = bench_batches(config, frames, batches, iters=args.iters,
                              warmup=args.warmup, progress=progress)
        for row in found:
            row.update(network=network, precision=precision, backend_asked=backend)
        rows.extend(found)
        tables.append(format_batch_table(found, network))
    print("\n\n".join(tables))
    print(f"CPU: {cpu_caps.detect().flags_line()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    write_json(args.json, rows)
    return 0


def _cases(args, networks, sizes, total: int, desc: str):
    """(network, weights, (width, height), progress) for every network and size: the
    --weights file, or a random-weights checkpoint of the network in a scratch folder that
    lives while the cases are run; one progress display over `total` steps."""
    with tempfile.TemporaryDirectory(prefix="swiftseg-bench-") as scratch, \
            progress_display(total=total, desc=desc, unit="it",
                             enabled=not args.quiet) as progress:
        for network in networks:
            weights = args.weights or _random_checkpoint(network, Path(scratch))
            for size in sizes:
                yield network, weights, size, progress


def _engine_runs(precisions: list[str], backends: list[str]) -> list[tuple[str, str]]:
    """The (precision, backend) engines to time. ONNX Runtime runs fp32 only and OpenVINO
    fp32 or bf16, so they have no row at another precision, where `auto` is torch's (and
    OpenVINO's at bf16), with no row of its own when torch is asked too."""
    return [(precision, backend) for precision in precisions for backend in backends
            if precision in ("fp32", "auto") or backend == "torch"
            or (backend == "openvino" and precision == "bf16")
            or (backend == "auto" and "torch" not in backends)]


def _check_backend(backend: str, precision: str, device: str) -> None:
    """ConfigError now, before any output, when this backend cannot run as asked."""
    from swiftseg_ros.engine.backends import backend_module

    if backend != "auto":
        why = backend_module(backend).why_unusable(EngineConfig(
            network="fastscnn", backend=backend, precision=precision, device=device))
        if why:
            raise ConfigError(f"--backend {backend} {why}")


def _checkpoint_network(weights, networks, flag_text) -> str:
    from swiftseg_ros.checkpoint import load_checkpoint

    _, meta, _ = load_checkpoint(weights)
    explicit = flag_text != ",".join(DEFAULT_NETWORKS)
    if explicit and networks != [meta["network"]]:
        raise ConfigError(f"--weights holds {meta['network']!r} but --networks asks for "
                          f"{','.join(networks)}; drop --networks or make them match")
    return meta["network"]


def _random_checkpoint(network: str, folder: Path) -> Path:
    """A seeded random-weight checkpoint, so engine and naive runners share weights."""
    from swiftseg_ros.checkpoint import make_meta, save_checkpoint
    from swiftseg_ros.nets import NETWORKS, build_model

    if network not in NETWORKS:
        raise ConfigError(f"unknown network {network!r}; available: {', '.join(NETWORKS)}")
    torch.manual_seed(0)
    options = NETWORKS[network].inference_options
    model = build_model(network, 19, **options).eval()
    meta = make_meta(network, 19, network_options=options,
                     provenance={"note": "random weights for swiftseg-bench"})
    return save_checkpoint(folder / f"{network}.pt", model, meta)


def bench_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A synthetic rgb8 street-like frame: sky and road gradients with flat boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), np.float32)
    horizon = height * 0.45
    sky = yy < horizon
    frame[sky] = [110, 150, 210]
    frame[~sky] = [90, 90, 95]
    frame += (yy / height)[..., None] * 40.0
    for _ in range(12):
        x0, y0 = rng.uniform(0, width), rng.uniform(horizon * 0.6, height)
        w, h = rng.uniform(0.03, 0.2) * width, rng.uniform(0.05, 0.3) * height
        box = (xx >= x0) & (xx < x0 + w) & (yy >= y0 - h) & (yy < y0)
        frame[box] = rng.uniform(20, 235, 3)
    frame += rng.normal(0.0, 6.0, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


class _NaiveRunner:
    """The Figure 5 loop: what a user without the engine writes."""

    def __init__(self, weights, device: torch.device, frame: np.ndarray):
        from swiftseg_ros.checkpoint import load_model

        model, meta = load_model(weights)
        self.model = model.to(device).eval()
        self.device = device
        self.frame = frame
        self.mean = torch.tensor(meta["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(meta["std"], device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        x = torch.from_numpy(self.frame).to(self.device)
        x = x.permute(2, 0, 1).unsqueeze(0).float()
        x = (x - self.mean) / self.std
        logits = self.model(x)
        _, pred = logits.max(1)
        return pred.data.byte().cpu()


def _bench_one(args, network, weights, width, height, progress) -> list[dict]:
    from swiftseg_ros.nets import count_macs, count_parameters

    device_name = args.device
    frame = bench_frame(width, height)
    outputs = tuple(o for o in args.outputs.replace(" ", "").split(",") if o)
    engines, memory = {}, {}
    for precision, backend in args.runs:
        config = EngineConfig(weights=weights, device=device_name, precision=precision,
                              backend=backend, outputs=outputs, upsample=args.upsample,
                              threads=args.threads, cuda_graphs=not args.no_cuda_graphs,
                              channels_last=not args.no_channels_last,
                              onednn_convs=not args.no_onednn,
                              winograd=not args.no_winograd, tf32=args.tf32,
                              warmup_iters=max(1, args.warmup), retune=args.retune)
        baseline = memory_baseline(torch.device(config.device))
        engine = SegmentationEngine(config)
        engine.infer(frame, "rgb8")
        memory[precision, backend] = steady_memory(engine, frame, baseline)
        engines[precision, backend] = engine
    first = next(iter(engines.values()))
    device = first.device
    inference_w, inference_h = first.inference_size

    # every runner is timed from outside, the same way (bench/runners.py)
    runners, bare = {}, {}
    for key, engine in engines.items():
        runners[("engine", key)] = engine_runner(engine, frame)
        bare[key] = [BareRunner(engine)]
        runners[("bare", key)] = bare[key][0].runner()
        if engine.uses_cuda_graph:
            bare[key].append(BareRunner(engine, graph=True))
            runners[("bare_graph", key)] = bare[key][1].runner()
        if args.pipelined:
            runners[("pipelined", key)] = pipelined_runner(engine, frame, args.pipelined)
    naive = None
    same_size = (inference_w, inference_h) == (width, height)
    if not args.no_naive and same_size:
        naive = _NaiveRunner(weights, device, frame)
        runners[("naive", None)] = timed(naive, device_sync(device))
    openvino = [] if args.no_openvino or device.type != "cpu" or not same_size \
        else openvino_precisions()
    converted = convert_labels_graph(weights, frame) if openvino else None
    for precision in openvino:
        runners[("openvino", precision)] = timed(
            OpenVinoReference(converted, frame, precision, args.threads), device_sync(device))

    order = list(runners)
    times = {key: [] for key in order}
    stage_times = {key: [] for key in engines}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for key in order:
                runners[key]()
            progress.update(1)
        shuffler = np.random.default_rng(0)
        for _ in range(args.iters):
            # a fresh random order each iteration: on average every runner follows every
            # other one equally often (the naive runner's 40 MB of full-size logits leave caches and
            # the allocator cold for whoever comes next; a fixed rotation would hand that
            # cost to one runner more than to the others)
            for index in shuffler.permutation(len(order)):
                key = order[index]
                elapsed, timings = runners[key]()
                times[key].append(elapsed)
                if timings is not None:
                    stage_times[key[1]].append(timings)
            progress.update(1)

    plain = naive.model if naive is not None else _plain_model(weights)
    params = count_parameters(plain)
    gmacs = count_macs(plain, inference_h, inference_w) / 1e9
    agreement = _label_agreement(engines, frame)
    rows = []
    naive_ms = _p50(times[("naive", None)]) if naive is not None else None
    openvino_ms = {precision: _p50(times[("openvino", precision)]) for precision in openvino}
    for (precision, asked), engine in engines.items():
        key = (precision, asked)
        engine_ms = _p50(times[("engine", key)])
        bare_ms = _p50(times[("bare", key)])
        bare_graph_ms = (_p50(times[("bare_graph", key)])
                         if ("bare_graph", key) in times else None)
        pipelined_ms = (_p50(times[("pipelined", key)])
                        if ("pipelined", key) in times else None)
        # a graphed engine is measured against a graphed network, an eager one against eager
        floor_ms = bare_graph_ms if bare_graph_ms is not None else bare_ms
        stats = engine.stats()
        row = {
            "network": network,
            "size": f"{width}x{height}",
            "inference_size": f"{inference_w}x{inference_h}",
            "device": str(device),
            "precision": precision,
            "precision_picked": stats["precision"],
            "math_mode": engine.math_mode,
            "backend": stats["backend"],
            "backend_asked": asked,
            "outputs": list(engine.config.outputs),
            "upsample": args.upsample,
            "engine_ms": engine_ms,
            "bare_ms": bare_ms,
            "bare_graph_ms": bare_graph_ms,
            "naive_ms": naive_ms,
            "engine_over_bare": engine_ms / floor_ms,
            "bare_runner": "graph" if bare_graph_ms is not None else "eager",
            "speedup_over_naive": naive_ms / engine_ms if naive_ms else None,
            # the by-hand OpenVINO reference per precision, and the engine against it
            "openvino_ms": openvino_ms,
            "engine_over_openvino": {p: engine_ms / ms for p, ms in openvino_ms.items()},
            "fps": 1000.0 / engine_ms,
            "pipelined_ms": pipelined_ms,
            "pipelined_fps": 1000.0 / pipelined_ms if pipelined_ms else None,
            "pipelined_speedup": engine_ms / pipelined_ms if pipelined_ms else None,
            "pipelined_over_bare": pipelined_ms / floor_ms if pipelined_ms else None,
        }
        for stage in STAGES:
            row[f"{stage}_ms"] = _p50([t[stage] for t in stage_times[key]])
        row.update(
            engine_percentiles=_percentiles(times[("engine", key)]),
            bare_percentiles=_percentiles(times[("bare", key)]),
            naive_percentiles=(_percentiles(times[("naive", None)]) if naive is not None
                               else None),
            params=params,
            gmacs=gmacs,
            peak_mem_mb=memory[key]["peak_mb"],
            reserved_mem_mb=memory[key]["reserved_mb"],
            label_agreement=agreement.get(key),
            cuda_graph=engine.uses_cuda_graph,
            cuda_graph_note=stats["cuda_graph_note"],
            prepare_ms=stats["plans"]["last_prepare_ms"],
            choices=stats["choices"],
            choices_source=stats["choices_source"],
            cpu=stats["cpu"],
            threads=torch.get_num_threads() if device.type == "cpu" else None,
            iters=args.iters,
            warmup=args.warmup,
            torch=torch.__version__,
            onnxruntime=_onnxruntime_version(),
            openvino=_openvino_version(),
        )
        rows.append(row)
    runners.clear()  # the closures hold the engines and their models
    for pair in bare.values():
        for runner in pair:
            runner.close()
    for engine in engines.values():
        engine.release()
    return rows


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def _openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


def _plain_model(weights):
    from swiftseg_ros.checkpoint import load_model

    return load_model(weights)[0].eval()


def _label_agreement(engines: dict, frame: np.ndarray) -> dict:
    """Fraction of pixels where each engine's labels equal those of torch at fp32 (the
    reference row itself gets none)."""
    reference_key = ("fp32", "torch")
    others = [key for key in engines if key != reference_key]
    if not others:
        return {}
    reference_engine = engines.get(reference_key)
    own = reference_engine is None
    if own:
        config = next(iter(engines.values())).config.replace(
            precision="fp32", backend="torch", outputs=("label",), warmup_iters=1)
        reference_engine = SegmentationEngine(config)
    reference = _labels(reference_engine, frame)
    if own:
        reference_engine.release()
    return {key: float((_labels(engines[key], frame) == reference).mean()) for key in others}


def _labels(engine: SegmentationEngine, frame: np.ndarray) -> np.ndarray:
    if "label" not in engine.outputs:
        engine.set_outputs(engine.outputs + ("label",))
    return engine.infer(frame, "rgb8").label.copy()


def _p50(values) -> float | None:
    """The median, ignoring NaN (stages a graph timed from outside cannot split); None
    when nothing was timed."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(np.percentile(values, 50)) if values.size else None


def _percentiles(values) -> dict:
    result = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES),
                                                 strict=True)}
    result["max"] = float(np.max(values))
    return result


def format_table(rows: list[dict]) -> str:
    """A plain-text table of the rows: p50 ms, ratios, throughput and model size."""
    header = ("network", "size", "prec", "backend", "outputs", "engine", "bare", "naive",
              "eng/bare", "naive/eng", "openvino", "eng/ov", "fps", "pre", "fwd", "post",
              "params", "GMACs", "agree", "peakMB", "pipelined")
    lines = []
    for r in rows:
        def ms(value):
            return "-" if value is None else f"{value:.1f}"

        openvino = r.get("openvino_ms") or {}
        fastest = min(openvino, key=openvino.get) if openvino else None
        lines.append((
            r["network"], r["size"],
            r["precision"] + ("" if r["precision"] != "auto" else f" ({r['precision_picked']})"),
            r["backend"] + ("" if r["backend_asked"] != "auto" else " (auto)"),
            ",".join(r["outputs"]),
            ms(r["engine_ms"]), ms(r["bare_ms"]), ms(r["naive_ms"]),
            f"{r['engine_over_bare']:.3f}",
            "-" if r["speedup_over_naive"] is None else f"{r['speedup_over_naive']:.2f}x",
            "-" if fastest is None else f"{openvino[fastest]:.1f} {fastest}",
            "-" if fastest is None else f"{r['engine_over_openvino'][fastest]:.2f}",
            f"{r['fps']:.1f}", ms(r["preprocess_ms"]), ms(r["forward_ms"]),
            ms(r["postprocess_ms"]), f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.1f}",
            "-" if r["label_agreement"] is None else f"{100 * r['label_agreement']:.2f}%",
            "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}",
            "-" if r.get("pipelined_speedup") is None else f"{r['pipelined_speedup']:.2f}x",
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.append("ms are medians (p50) per frame; engine = host frame to host outputs; bare = "
                "chosen forward + max(1) on device input (eng/bare: against the graphed bare "
                "network when the engine runs a graph); naive = paper Fig. 5 loop; openvino = by-hand "
                "OpenVINO (convert_model, the row's fastest precision; eng/ov = engine ms / "
                "its ms); agree = labels equal to torch fp32's; pipelined = serial ms / "
                "pipelined ms per frame")
    return "\n".join(text)
