"""Pictures of a replay beyond the latency histogram: the confusion heat map, the timeline
(latency and per-frame mIoU against the bag's time) and the A/B comparison charts.

Drawn with matplotlib's object API on an Agg canvas (no display, no global state), from
the report dict and the frame records, so that a picture shows what report.json says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from swiftseg_ros.files import save_figure
from swiftseg_ros.replay.run import FrameRecord

A_COLOUR, B_COLOUR = "#4477aa", "#ee7733"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def write_confusion_heatmap(path: Path, confusion: dict) -> bool:
    """The confusion matrix normalized per ground-truth class (each row sums to 100 %),
    with class names on both axes and the percentage in each cell. False (nothing
    written) without counted pixels."""
    counts = np.asarray(confusion["counts"], dtype=np.float64)
    names = confusion["classes"]
    if counts.sum() == 0:
        return False
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rows > 0, 100.0 * counts / rows, np.nan)
    n = len(names)
    side = max(4.5, 0.55 * n + 2.5)
    figure = _figure(side + 1.0, side)
    axes = figure.subplots()
    image = axes.imshow(np.nan_to_num(share, nan=0.0), cmap="Blues", vmin=0, vmax=100)
    axes.set_xticks(range(n), names, rotation=45, ha="right")
    axes.set_yticks(range(n), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("ground-truth class")
    axes.set_title("confusion, % of each ground-truth class's pixels")
    if n <= 25:  # beyond that the numbers no longer fit their cells
        for i in range(n):
            for j in range(n):
                if np.isnan(share[i, j]):
                    text, colour = "-", "grey"
                else:
                    text = f"{share[i, j]:.0f}" if share[i, j] >= 1 or share[i, j] == 0 \
                        else "<1"
                    colour = "white" if share[i, j] > 60 else "black"
                axes.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=axes, shrink=0.8, label="% of ground-truth pixels")
    save_figure(figure, path)
    return True


def write_timeline(path: Path, records: list[FrameRecord], *, camera_period_ms: float | None,
                   latency_budget_ms: float, mode: str, worst: list[int] = (),
                   doubtful: list[int] = ()) -> bool:
    """Per-frame processing latency against the bag's time, with the camera period and the
    latency budget as lines and dropped frames marked; below it, per-frame mIoU with the
    worst frames marked when there was ground truth, else the per-frame mean confidence
    with the most doubtful frames marked when it was computed. False without processed
    frames."""
    processed = [r for r in records if r.outcome == "processed" and r.timings]
    if not processed:
        return False
    scored = [r for r in processed if r.miou is not None]
    if scored:
        lower = ("miou", "mIoU of the frame (%)", "frame mIoU", worst,
                 "worst frames (in the montage)")
    else:
        scored = [r for r in processed if r.confidence is not None]
        lower = ("confidence", "mean confidence of the frame (%)", "frame mean confidence",
                 doubtful, "most doubtful frames (in the montage)")
    figure = _figure(11, 6.2 if scored else 3.8)
    panels = figure.subplots(2 if scored else 1, 1, sharex=True, squeeze=False)[:, 0]
    axes = panels[0]
    times = [r.arrival for r in processed]
    latency = [r.timings["processing"] for r in processed]
    axes.plot(times, latency, marker=".", markersize=4, linewidth=0.8, color=A_COLOUR,
              label="processing time per frame")
    if camera_period_ms:
        axes.axhline(camera_period_ms, color="#228833", linestyle="--", linewidth=1.2,
                     label=f"camera period {camera_period_ms:.1f} ms")
    if latency_budget_ms > 0:
        axes.axhline(latency_budget_ms, color="#cc3311", linestyle="-", linewidth=1.2,
                     label=f"latency budget {latency_budget_ms:g} ms")
    dropped = [r.arrival for r in records if r.outcome == "dropped"]
    if dropped:
        axes.plot(dropped, [0] * len(dropped), linestyle="none", marker="^", markersize=8,
                  color="#aa3377", clip_on=False, label=f"dropped frame ({len(dropped)})")
    axes.set_ylim(bottom=0)
    axes.set_ylabel("latency (ms)")
    axes.set_title(f"{len(processed)} processed frames, {mode} mode")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if scored:
        field, ylabel, line_label, chosen, marks_label = lower
        axes = panels[1]
        axes.plot([r.arrival for r in scored], [100 * getattr(r, field) for r in scored],
                  marker=".", markersize=4, linewidth=0.8, color="#009988", label=line_label)
        marked = [r for r in scored if r.index in set(chosen)]
        if marked:
            axes.plot([r.arrival for r in marked], [100 * getattr(r, field) for r in marked],
                      linestyle="none", marker="o", markersize=8, markerfacecolor="none",
                      color="#cc3311", label=marks_label)
            # labels of neighbouring marks at staggered heights, so that they never overlap
            for order, r in enumerate(sorted(marked, key=lambda m: m.arrival)):
                axes.annotate(f"frame {r.index}", (r.arrival, 100 * getattr(r, field)),
                              fontsize=8, textcoords="offset points",
                              xytext=(4, -12 - 11 * (order % 3)))
        axes.set_ylim(0, 100)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    panels[-1].set_xlabel("bag time (s from the first image)")
    save_figure(figure, path)
    return True


BATCH_COLOURS = ("#4477aa", "#ee7733", "#228833", "#aa3377", "#66ccee", "#ccbb44")
OUTCOME_MARKS = {"dropped": ("^", "#aa3377"), "rejected": ("x", "#cc3311"),
                 "failed": ("X", "#000000")}


def write_cameras_timeline(path: Path, frames, cameras: list[str], *, mode: str) -> bool:
    """Several cameras of one replay, a panel each on one time axis: per processed frame
    its image age at publish (realtime mode) or the time of its batch (all mode), coloured
    by the size of the batch it ran in; dropped, rejected and failed frames marked at the
    bottom. `frames` are replay/multicam.py's CameraFrame records. False without processed
    frames."""
    processed = [f for f in frames if f.outcome == "processed" and f.start is not None]
    if not processed:
        return False
    realtime = mode == "realtime"

    def value_ms(frame) -> float:
        if realtime and frame.age_ms is not None:
            return frame.age_ms
        return (frame.finish - frame.start) * 1000.0

    sizes = sorted({f.batch_size for f in processed})
    colour = {size: BATCH_COLOURS[i % len(BATCH_COLOURS)] for i, size in enumerate(sizes)}
    figure = _figure(11, 1.0 + 2.1 * len(cameras))
    panels = figure.subplots(len(cameras), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    for axes, camera in zip(panels, cameras, strict=True):
        mine = [f for f in frames if f.camera == camera]
        done = [f for f in mine if f.outcome == "processed" and f.start is not None]
        for size in sizes:
            of_size = [f for f in done if f.batch_size == size]
            if not of_size:
                continue
            axes.plot([f.arrival for f in of_size], [value_ms(f) for f in of_size],
                      linestyle="none", marker=".", markersize=5, color=colour[size],
                      label=f"taken in a batch of {size} ({len(of_size)})")
        for outcome, (marker, mark_colour) in OUTCOME_MARKS.items():
            hit = [f.arrival for f in mine if f.outcome == outcome]
            if hit:
                axes.plot(hit, [0] * len(hit), linestyle="none", marker=marker, markersize=7,
                          color=mark_colour, clip_on=False, label=f"{outcome} ({len(hit)})")
        axes.set_ylabel("image age (ms)" if realtime else "batch time (ms)")
        axes.set_title(f"camera {camera}: {len(done)} of {len(mine)} frames published",
                       fontsize=10, loc="left")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    # one scale for all panels, set once every panel has its points (a limit set on one
    # of several shared axes stops the others from widening it)
    panels[0].set_ylim(0, 1.08 * max(value_ms(f) for f in processed))
    what = ("image age at publish (bag clock)" if realtime
            else "time of each frame's batch (every frame processed)")
    figure.suptitle(f"{len(cameras)} cameras through one engine, {mode} mode: {what}")
    panels[-1].set_xlabel("bag time (s from the first image)")
    save_figure(figure, path)
    return True


def write_comparison_chart(path: Path, comparison: dict) -> bool:
    """Per-class IoU of A and B side by side, and latency p50/p95/p99 of both."""
    labels = comparison["labels"]
    accuracy = comparison["accuracy"]
    latency = comparison["latency_ms"].get("processing")
    if accuracy is None and latency is None:
        return False
    panels = (accuracy is not None) + (latency is not None)
    figure = _figure(6.5 * panels, 4.4)
    axes_list = list(np.atleast_1d(figure.subplots(1, panels)))
    width = 0.4
    if accuracy is not None:
        axes = axes_list.pop(0)
        names = list(accuracy["per_class"])
        x = np.arange(len(names))
        for offset, key, colour in ((-width / 2, "a", A_COLOUR), (width / 2, "b", B_COLOUR)):
            values = [accuracy["per_class"][n][key] for n in names]
            axes.bar(x + offset, [100 * v if v is not None else 0 for v in values], width,
                     color=colour,
                     label=f"{labels[key]}: mIoU {_pct(accuracy['miou'][key])}")
        axes.set_xticks(x, names, rotation=45, ha="right")
        axes.set_ylim(0, 122)  # room above 100 % for the legend
        axes.set_yticks(range(0, 101, 20))
        axes.set_ylabel("IoU (%)")
        axes.set_title("per-class IoU")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=8, loc="upper center", ncol=2)
    if latency is not None:
        axes = axes_list.pop(0)
        keys = ("p50", "p95", "p99")
        x = np.arange(len(keys))
        for offset, key, colour in ((-width / 2, "a", A_COLOUR), (width / 2, "b", B_COLOUR)):
            values = [latency[k][key] or 0 for k in keys]
            axes.bar(x + offset, values, width, color=colour, label=labels[key])
        budget = comparison.get("latency_budget_ms") or 0
        if budget > 0:
            axes.axhline(budget, color="#cc3311", linewidth=1.2,
                         label=f"latency budget {budget:g} ms")
        axes.set_xticks(x, keys)
        tallest = max([latency[k][key] or 0 for k in keys for key in ("a", "b")] + [budget])
        axes.set_ylim(0, 1.35 * tallest)  # room for the legend
        axes.set_ylabel("processing time per frame (ms)")
        axes.set_title("latency percentiles")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=8, loc="upper left")
    save_figure(figure, path)
    return True


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
