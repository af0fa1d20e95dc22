"""`swiftseg-models`: the network zoo as a table: parameters, multiply-adds, CPU forward time.

Times are medians of batch-1 CPU forward passes of the inference form of each network
(aux heads dropped, conv->BN fused, eval, `torch.inference_mode`, channels_last),
after warm-up: `forward_logits` (the network alone, logits at its output stride) and
`model(x)` (plus bilinear resizing of the logits to the input size).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from swiftseg_ros.cli import ArgumentParser, add_common_flags, parse_size_flag, write_json
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.files import check_output_file
from swiftseg_ros.nets.complexity import count_macs, count_parameters
from swiftseg_ros.nets.fusion import fuse_conv_bn
from swiftseg_ros.nets.registry import NETWORKS, build_model, check_num_classes
from swiftseg_ros.progress import progress as progress_display

PAPER_SIZE = (2048, 1024)  # width, height of the papers' figures
WARMUP_ITERS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-models",
        description="List the networks with parameters, multiply-adds (GMACs) and CPU "
                    "forward time (batch 1, fused, channels_last, median after warm-up).")
    parser.add_argument("--size", default="512x256",
                        help="input WIDTHxHEIGHT for the multiply-adds and the timing "
                             "(default 512x256; sides must be multiples of 64 for the pyramid)")
    parser.add_argument("--num-classes", type=int, default=19,
                        help="number of classes (default 19, as the papers' Cityscapes figures)")
    parser.add_argument("--network", action="append", choices=list(NETWORKS),
                        help="only this network (repeatable; default all)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for the timing (default: PyTorch's default)")
    parser.add_argument("--iters", type=int, default=10,
                        help="timed forward passes per network (default 10)")
    parser.add_argument("--no-time", action="store_true", help="skip the timing")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    add_common_flags(parser, weights=False, network=False, device=False, precision=False)
    return parser


def median_ms(function, x: torch.Tensor, iters: int) -> float:
    """Median wall time of `function(x)` in ms, after WARMUP_ITERS untimed calls."""
    with torch.inference_mode():
        for _ in range(WARMUP_ITERS):
            function(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            function(x)
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def describe_network(name: str, num_classes: int, width: int, height: int,
                     iters: int | None) -> dict:
    info = NETWORKS[name]
    model = build_model(name, num_classes, **info.inference_options).eval()
    row = {
        "network": name,
        "description": info.description,
        "paper": info.paper,
        "params": count_parameters(model),
        "paper_params_m": info.paper_params_m,
        "gmacs_2048x1024": count_macs(model, PAPER_SIZE[1], PAPER_SIZE[0]) / 1e9,
        "paper_gmacs_2048x1024": info.paper_gmacs,
        "gmacs_at_size": count_macs(model, height, width) / 1e9,
    }
    if iters:
        model = fuse_conv_bn(model).to(memory_format=torch.channels_last)
        x = torch.randn(1, 3, height, width).contiguous(memory_format=torch.channels_last)
        row["forward_logits_ms"] = median_ms(model.forward_logits, x, iters)
        row["forward_ms"] = median_ms(model, x, iters)
    return row


def format_table(rows: list[dict], width: int, height: int) -> str:
    timed = "forward_ms" in rows[0]
    header = ["network", "params M", "paper M", "GMACs 2048x1024", "paper GMACs",
              f"GMACs {width}x{height}"]
    if timed:
        header += ["logits ms", "full ms"]
    lines = [header]
    for row in rows:
        paper_gmacs = row["paper_gmacs_2048x1024"]
        line = [row["network"], f"{row['params'] / 1e6:.3f}", f"{row['paper_params_m']:.2f}",
                f"{row['gmacs_2048x1024']:.1f}",
                "-" if paper_gmacs is None else f"{paper_gmacs:.1f}",
                f"{row['gmacs_at_size']:.2f}"]
        if timed:
            line += [f"{row['forward_logits_ms']:.1f}", f"{row['forward_ms']:.1f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
                     for line in lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    width, height = parse_size_flag(args.size, "--size")
    if args.json:
        check_output_file(args.json, "--json")
    names = args.network or list(NETWORKS)
    check_num_classes(args.num_classes)
    if args.iters < 1:
        raise ConfigError(f"--iters must be at least 1, got {args.iters}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in names:
        divisor = NETWORKS[name].size_divisor
        if width % divisor or height % divisor:
            raise ConfigError(f"--size {width}x{height}: {name} needs sides that are multiples "
                              f"of {divisor}")
    torch.manual_seed(0)
    iters = None if args.no_time else args.iters
    rows = [describe_network(name, args.num_classes, width, height, iters)
            for name in progress_display(names, desc="networks", unit="network",
                                         enabled=not args.quiet)]
    print(format_table(rows, width, height))
    print()
    for row in rows:
        print(f"{row['network']}: {row['description']}; paper figures: {row['paper']}")
    if iters:
        print(f"CPU, batch 1, {torch.get_num_threads()} threads, median of {iters} after "
              f"{WARMUP_ITERS} warm-up; logits ms = forward_logits (output stride), full ms = "
              f"model(x) (logits resized to {width}x{height}); conv->BN fused, channels_last, "
              f"fp32; torch {torch.__version__}")
    write_json(args.json, {
        "size": [width, height],
        "num_classes": args.num_classes,
        "threads": torch.get_num_threads(),
        "iters": iters,
        "networks": rows,
    })
    return 0
