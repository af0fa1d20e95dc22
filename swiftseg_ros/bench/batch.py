"""swiftseg-bench --batch 1,2,4: N cameras through one engine against N separate engines.

What a multi-camera node buys over one node per camera, measured in one run: for each N,
one engine segments N frames of one size per iteration with one forward pass
(`SegmentationEngine.infer_batch`, as the node with its `cameras` parameter does when N
cameras' frames wait together), and N engines (one per camera, as N nodes would have)
segment one frame each, one after another, as N nodes share one device. Both runners
are timed from outside by the same host clock and device synchronization, in a random
order drawn anew each iteration (as the main bench does), so that drift hits both alike.

Memory: on CUDA the device memory each setup holds in steady state (allocated, after
its warm-up). On the CPU the growth of this process's resident memory while each setup
is built and warmed (the one engine first, then the N engines on top, after a
throwaway engine has taken the process's one-time costs); N real nodes
would each add a Python interpreter, PyTorch and rclpy on top of that (hundreds of MB
each), which one process cannot measure: docs/benchmarks.md has the node comparison.
"""

from __future__ import annotations

import functools
import gc
import time

import numpy as np
import torch

from swiftseg_ros.bench.runners import device_sync
from swiftseg_ros.engine.config import EngineConfig
from swiftseg_ros.engine.engine import SegmentationEngine
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.memory import resident_mb


def parse_batches(text: str) -> list[int]:
    """ "1,2,4" -> [1, 2, 4]; ConfigError naming --batch otherwise."""
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"--batch {text!r}: expected camera counts such as 1,2,4") from None
    if not sizes or any(not 1 <= size <= 64 for size in sizes):
        raise ConfigError(f"--batch {text!r}: camera counts from 1 to 64, such as 1,2,4")
    return sorted(set(sizes))


def _memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device) / (1024.0 * 1024.0)
    return resident_mb()


def bench_batches(config: EngineConfig, frames: list[np.ndarray], batches: list[int], *,
                  iters: int, warmup: int, progress=None) -> list[dict]:
    """One row per N in `batches`: one engine with batches of N against N engines.
    `frames` holds max(batches) frames of one size (one per camera)."""
    rows = []
    device = torch.device(config.device)
    sync = device_sync(device)
    # a throwaway engine first takes the process's one-time costs (library start-up,
    # allocator pools), which the first row's memory would otherwise count
    throwaway = SegmentationEngine(config)
    throwaway.infer_batch([(frame, "rgb8") for frame in frames[:2]])
    throwaway.release()
    del throwaway
    for count in batches:
        pairs = [(frame, "rgb8") for frame in frames[:count]]
        gc.collect()
        before = _memory_mb(device)
        shared = SegmentationEngine(config)
        for _ in range(max(1, warmup)):
            shared.infer_batch(pairs)
        after_shared = _memory_mb(device)
        separate = [SegmentationEngine(config) for _ in range(count)]
        for _ in range(max(1, warmup)):
            _infer_each(separate, pairs)
        after_separate = _memory_mb(device)

        runners = {"one_engine": functools.partial(shared.infer_batch, pairs),
                   "separate": functools.partial(_infer_each, separate, pairs)}
        times = {name: [] for name in runners}
        order = list(runners)
        shuffler = np.random.default_rng(count)
        with torch.inference_mode():
            for _ in range(iters):
                for index in shuffler.permutation(len(order)):
                    name = order[index]
                    sync()
                    started = time.perf_counter()
                    runners[name]()
                    sync()
                    times[name].append((time.perf_counter() - started) * 1000.0)
                if progress is not None:
                    progress.update(1)
        one_ms = float(np.percentile(times["one_engine"], 50))
        separate_ms = float(np.percentile(times["separate"], 50))
        height, width = frames[0].shape[:2]
        memory = (None if before is None else
                  {"one_engine_mb": after_shared - before,
                   "separate_mb": after_separate - after_shared})
        rows.append({
            "cameras": count,
            "size": f"{width}x{height}",
            "device": str(device),
            "one_engine_ms": one_ms,
            "separate_ms": separate_ms,
            "one_engine_fps": 1000.0 * count / one_ms,
            "separate_fps": 1000.0 * count / separate_ms,
            "speedup": separate_ms / one_ms,
            "memory": memory,
            "memory_kind": "device allocated" if device.type == "cuda"
            else "process resident growth",
            "backend": shared.stats()["backend"],
            "iters": iters,
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
        })
        for engine in (shared, *separate):
            engine.release()
        del shared, separate, runners
    return rows


def _infer_each(engines: list[SegmentationEngine], pairs) -> None:
    """N nodes sharing one device: each engine its own camera's frame, one after another."""
    for engine, (frame, pixel_format) in zip(engines, pairs, strict=True):
        engine.infer(frame, pixel_format)


def format_batch_table(rows: list[dict], network: str) -> str:
    header = ("network", "size", "cameras", "one engine ms", "fps", "N engines ms", "fps",
              "speedup", "one engine MB", "N engines MB")
    lines = []
    for row in rows:
        memory = row["memory"] or {}
        mb = {key: f"{memory[key]:.0f}" if key in memory else "-"
              for key in ("one_engine_mb", "separate_mb")}
        lines.append((network, row["size"], str(row["cameras"]), f"{row['one_engine_ms']:.1f}",
                      f"{row['one_engine_fps']:.1f}", f"{row['separate_ms']:.1f}",
                      f"{row['separate_fps']:.1f}", f"{row['speedup']:.2f}x",
                      mb["one_engine_mb"], mb["separate_mb"]))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    kind = rows[0]["memory_kind"] if rows else ""
    text.append(f"ms are medians per iteration (N frames, one per camera); fps = frames per "
                f"second of all cameras together; speedup = N engines ms / one engine ms; "
                f"MB = {kind}")
    return "\n".join(text)
