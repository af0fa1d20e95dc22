"""soak.png: resident memory over time and per-window latency percentiles, with the faults
marked (one colour per kind), from the soak's result."""

from __future__ import annotations

from pathlib import Path

from swiftseg_ros.soak.faults import FAULTS


def plot_soak(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory_ax, latency_ax) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    minutes = [sample["t_s"] / 60 for sample in result["memory"]]
    memory_ax.plot(minutes, [sample["rss_mb"] for sample in result["memory"]],
                   color="black", linewidth=1, label="resident memory (MB)")
    cuda = [(m, s["cuda_mb"]) for m, s in zip(minutes, result["memory"], strict=True)
            if s["cuda_mb"] is not None]
    if cuda:
        memory_ax.plot(*zip(*cuda, strict=True), color="tab:purple", linewidth=1,
                       label="CUDA reserved (MB)")
    memory_ax.set_ylabel("MB")
    windows = result["windows"]
    window_s = result["options"]["window_s"]
    mids = [(w["start_s"] + window_s / 2) / 60 for w in windows]
    for key, style, label in (("p50_ms", "o-", "p50, all frames"),
                              ("p99_ms", "s-", "p99, all frames"),
                              ("steady_p50_ms", "o--", "p50, steady frames"),
                              ("steady_p99_ms", "s--", "p99, steady frames")):
        points = [(m, w[key]) for m, w in zip(mids, windows, strict=True) if w[key] is not None]
        if points:
            latency_ax.plot(*zip(*points, strict=True), style, markersize=3, label=label)
    latency_ax.set_ylabel(f"send to label (ms), per {window_s:g} s window")
    latency_ax.set_xlabel("minutes")
    latency_ax.set_yscale("log")
    colours = dict(zip(FAULTS, matplotlib.colormaps["tab10"].colors, strict=True))
    seen = set()
    for fault in result["faults"]:
        start = fault["start_s"] / 60
        for ax in (memory_ax, latency_ax):
            ax.axvline(start, color=colours[fault["kind"]], alpha=0.35, linewidth=0.8,
                       label=None if fault["kind"] in seen or ax is latency_ax
                       else f"fault: {fault['kind']}")
        seen.add(fault["kind"])
    memory_ax.legend(loc="upper left", fontsize=7, ncol=3)
    latency_ax.legend(loc="upper left", fontsize=7, ncol=2)
    verdict = result["verdict"]
    frames = next(iter(result["frames"].values()))
    memory_ax.set_title(
        f"swiftseg soak: {result['target']}, {result['duration_s'] / 60:.1f} min; "
        f"{'PASS' if verdict['ok'] else 'FAIL'}; published {frames['published']}, dropped "
        f"{frames['dropped']}, rejected {frames['rejected']}, failed {frames['failed']}",
        fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
