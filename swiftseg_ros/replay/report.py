"""The replay report: report.json, report.md, latency.png and montage.png (the confusion
heat map and the timeline are drawn by `swiftseg_ros.replay.plots`).

`build_report` turns a `ReplayResult` into one JSON-ready dict (the contract of
report.json, documented in docs/replay.md); report.md is rendered from that dict only,
so the two never disagree. Figures are drawn with matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from swiftseg_ros.files import save_figure
from swiftseg_ros.montage import MontageFrame, frame_montage
from swiftseg_ros.replay.run import SPREAD_S, ReplayResult, Sample
from swiftseg_ros.replay.verdict import verdict_line

REPORT_VERSION = 1
STAGE_ORDER = ("decode", "host_copy", "upload", "preprocess", "forward", "postprocess",
               "download", "total", "messages", "processing")
PERCENTILES = (50, 90, 95, 99)


def _percentiles(values) -> dict | None:
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return None
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES),
                                             strict=True)}
    out["max"] = float(values.max())
    out["min"] = float(values.min())
    out["mean"] = float(values.mean())
    return out


def _rate(times) -> float | None:
    """Events per second over a list of event times (s): (n - 1) / span."""
    times = sorted(times)
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


TOP_CONFUSIONS = 5


def build_report(result: ReplayResult, *, bag: dict, engine: dict, outputs: dict,
                 environment: dict | None = None) -> dict:
    """The report.json content. `bag`, `engine`, `outputs` and `environment` describe the
    run's context (the verdict is added by the caller, who knows the thresholds)."""
    records = result.records
    processed = [r for r in records if r.outcome == "processed"]
    frames = {
        "read": len(records),
        "processed": result.count("processed"),
        "dropped": result.count("dropped"),
        "rejected": result.count("rejected"),
        "failed": result.count("failed"),
        "expected": result.expected_frames,
    }
    processing_s = sum(r.timings["processing"] for r in processed) / 1000.0
    report = {
        "version": REPORT_VERSION,
        "mode": result.options.mode,
        "complete": result.damage is None and not result.interrupted,
        "interrupted": result.interrupted,
        "interrupted_by": result.interrupted_by,
        "bag": {**bag, "image_type": result.image_type, "messages_read": result.messages_read,
                "damage": result.damage},
        "engine": engine,
        "frames": frames,
        "rejections": dict(result.rejection_reasons.most_common()),
        "failures": dict(result.failure_reasons.most_common()),
        "throughput": {
            "processing_fps": len(processed) / processing_s if processing_s > 0 else None,
            "wall_fps": len(processed) / result.wall_s if result.wall_s > 0 else None,
            "wall_s": result.wall_s,
            "prepare_ms": result.prepare_ms,
        },
        "latency_ms": {stage: _percentiles(r.timings[stage] for r in processed)
                       for stage in STAGE_ORDER if processed and stage in processed[0].timings},
        "timing": _timing(result),
        "accuracy": _accuracy(result),
        "classes": _class_shares(result),
        "confidence": _confidence(result),
        "outputs": outputs,
        "environment": environment,
    }
    report["throughput"]["delivered_fps"] = _delivered_fps(result)
    return report


def _delivered_fps(result: ReplayResult) -> float | None:
    """Realtime mode only: frames published per second of bag time, (n - 1) frame
    intervals over the span from the first image's arrival to the last publish (what a
    subscriber gets, unlike the processing rate). The n-th publish comes after n
    processing times and after the n-th processed frame arrived, so this exceeds neither
    the processing rate nor the camera rate. `all` mode has no camera clock: None."""
    if result.options.mode != "realtime":
        return None
    processed = [r for r in result.records if r.outcome == "processed" and r.finish is not None]
    arrivals = [r.arrival for r in result.records if r.stamp_ns is not None]
    if len(processed) < 2 or not arrivals:
        return None
    span = max(max(r.finish for r in processed), max(arrivals)) - min(arrivals)
    return (len(processed) - 1) / span if span > 0 else None


def _class_shares(result: ReplayResult) -> list[dict]:
    """The predicted classes and their share of the processed frames' pixels, largest
    first (what the network sees in footage without ground truth)."""
    pixels = result.class_pixels
    if pixels is None or not pixels.sum():
        return []
    total = float(pixels.sum())
    order = np.argsort(-pixels, kind="stable")
    return [{"name": str(result.class_names[i]) if i < len(result.class_names) else str(i),
             "share": float(pixels[i]) / total} for i in order if pixels[i]]


def _confidence(result: ReplayResult) -> dict | None:
    """Per-frame mean confidence (winning class probability, 0-1) and the most doubtful
    frames, when the confidence was computed."""
    scored = [r for r in result.records if r.confidence is not None]
    if not scored:
        return None
    return {"per_frame_mean": _percentiles(r.confidence for r in scored),
            "doubtful_frames": [{"index": s.index, "time_s": s.arrival,
                                 "mean_confidence": s.mean_confidence}
                                for s in result.doubtful]}


def _timing(result: ReplayResult) -> dict:
    """Rates on the bag clock and image ages at (simulated) publish time."""
    records = result.records
    arrivals = [r.arrival for r in records if r.stamp_ns is not None]
    finishes = [r.finish for r in records if r.outcome == "processed" and r.finish is not None]
    ages = [r.age_ms for r in records if r.age_ms is not None]
    return {
        "bag_duration_s": (max(arrivals) - min(arrivals)) if arrivals else 0.0,
        "input_hz": _rate(arrivals),
        "output_hz": _rate(finishes),
        "image_age_ms": _percentiles(ages),
    }


def _accuracy(result: ReplayResult) -> dict | None:
    if result.confusion is None:
        return None
    gt = result.ground_truth
    scores = result.confusion.as_dict(result.class_names)
    counts = result.confusion.matrix.cpu().numpy()
    scores["confusion"] = {"classes": list(result.class_names), "counts": counts.tolist()}
    scores["top_confusions"] = top_confusions(counts, result.class_names)
    scored = [r for r in result.records if r.miou is not None]
    scores["per_frame_miou"] = _percentiles(r.miou for r in scored)
    scores["worst_frames"] = [
        {"index": s.index, "stamp_ns": result.records[s.index].stamp_ns,
         "time_s": result.records[s.index].arrival, "miou": s.miou}
        for s in result.worst if s.index < len(result.records)]
    scores["ground_truth"] = {
        "messages": gt.messages,
        "matched": gt.matched,
        "without_image": gt.without_image,
        "image_not_processed": gt.image_not_processed,
        "rejected": gt.rejected,
        "rejection_reasons": dict(gt.reasons.most_common()),
    }
    return scores


def top_confusions(counts: np.ndarray, class_names, limit: int = TOP_CONFUSIONS) -> list[dict]:
    """The worst off-diagonal cells: ground-truth pixels of one class predicted as another,
    ranked by their share of that class's ground-truth pixels (by pixel count, a large
    class's small slip would hide a small class that is mostly missed)."""
    counts = np.asarray(counts, dtype=np.float64)
    truth_pixels = counts.sum(axis=1)
    cells = [(counts[i, j] / truth_pixels[i], counts[i, j], i, j)
             for i in range(len(counts)) for j in range(len(counts))
             if i != j and counts[i, j] > 0]
    cells.sort(reverse=True)
    return [{"truth": str(class_names[i]), "predicted": str(class_names[j]),
             "pixels": int(n), "share_of_truth": float(share)}
            for share, n, i, j in cells[:limit]]


# ------------------------------------------------------------------------ markdown


def format_ms(value) -> str:
    """Milliseconds (or frames per second) for a table cell: one decimal, n/a if absent."""
    return "n/a" if value is None else f"{value:.1f}"


def _pct(value) -> str:
    return "absent" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * value:.2f}"


def _num(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    """report.md from the report.json content."""
    bag, frames, engine = report["bag"], report["frames"], report["engine"]
    lines = [f"# Replay of {bag['path']}", ""]
    if report.get("interrupted"):
        by = "SIGTERM" if report.get("interrupted_by") == "SIGTERM" else "Ctrl-C"
        lines += [f"**Partial results: interrupted** after {frames['read']} of "
                  f"{frames['expected']} frames ({by}).", ""]
    elif not report["complete"]:
        lines += [f"**Partial results: the bag is damaged** ({bag['damage']}); "
                  f"{bag['messages_read']} messages were read before it.", ""]
    lines += [
        f"- Image topic: `{bag['image_topic']}` ({bag['image_type']}), ground truth: "
        + (f"`{bag['label_topic']}`" if bag.get("label_topic") else "none"),
        f"- Mode: **{report['mode']}**; network {engine.get('network')} on "
        f"{engine.get('device')} ({engine.get('precision')}), weights "
        f"{engine.get('weights') or 'random (meaningless predictions)'}",
        f"- Input size {engine.get('input_size') or 'n/a'}, inference size "
        f"{engine.get('inference_size') or 'n/a'}",
        "",
        f"**{headline(report)}**",
        "",
    ]
    if report.get("verdict"):
        lines += ["## Verdict", "", f"- {verdict_line('This configuration', report['verdict'])}",
                  ""]
    lines += [
        "## Frames",
        "",
    ]
    if report["mode"] == "realtime":
        lines += ["| read | processed | dropped | rejected | failed |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {frames['read']} | {frames['processed']} | {frames['dropped']} | "
                  f"{frames['rejected']} | {frames['failed']} |", ""]
    else:
        lines += ["| read | processed | rejected | failed |", "|---:|---:|---:|---:|",
                  f"| {frames['read']} | {frames['processed']} | {frames['rejected']} | "
                  f"{frames['failed']} |", "",
                  "`all` mode processes every frame with no camera clock: there are no "
                  "drops, delivered rate or image ages to measure (use `--mode realtime`).",
                  ""]
    for title, reasons in (("Rejected", report["rejections"]), ("Failed", report["failures"])):
        if reasons:
            lines += [f"{title} frames, by reason:", ""]
            lines += [f"- {count} x {reason}" for reason, count in reasons.items()]
            lines.append("")
    throughput, timing = report["throughput"], report["timing"]
    lines += [
        "## Speed",
        "",
        f"- Throughput: {_num(throughput['processing_fps'])} frames/s of processing time "
        f"(decode + engine + output messages), {_num(throughput['wall_fps'])} frames/s of "
        f"wall time ({_num(throughput['wall_s'])} s, bag reading and writing included)",
        f"- Buffers prepared before the first frame in {_num(throughput['prepare_ms'])} ms "
        "(not counted in latency)",
        f"- Input: {_num(timing['bag_duration_s'])} s of images at "
        f"{_num(timing['input_hz'])} Hz",
    ]
    age = timing["image_age_ms"]
    if report["mode"] == "realtime":
        lines.append(f"- Delivered: {_num(throughput['delivered_fps'])} frames/s published "
                     f"(bag time, first image to last publish), output at "
                     f"{_num(timing['output_hz'])} Hz")
        if age:
            lines.append(f"- Image age (publish time on the bag clock minus header stamp): "
                         f"p50 {format_ms(age['p50'])} ms, p99 {format_ms(age['p99'])} ms, "
                         f"max {format_ms(age['max'])} ms")
    lines.append("")
    if report["latency_ms"]:
        lines += ["Latency per stage (ms, processed frames):", "",
                  "| stage | p50 | p90 | p95 | p99 | max | mean |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for stage, numbers in report["latency_ms"].items():
            cells = [format_ms(numbers[k]) for k in ("p50", "p90", "p95", "p99", "max", "mean")]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines.append("")
    accuracy = report["accuracy"]
    if accuracy:
        gt = accuracy["ground_truth"]
        lines += [
            "## Accuracy",
            "",
            f"mIoU **{_pct(accuracy['miou'])} %**, pixel accuracy "
            f"{_pct(accuracy['pixel_accuracy'])} % over {gt['matched']} frames with ground "
            "truth.",
            "",
            f"Ground truth messages: {gt['messages']}; matched {gt['matched']}, without a "
            f"matching image {gt['without_image']}, image not processed "
            f"{gt['image_not_processed']}, rejected {gt['rejected']}.",
            "",
            "| class | IoU % | accuracy % |",
            "|---|---:|---:|",
        ]
        for name, iou in accuracy["per_class"].items():
            lines.append(f"| {name} | {_pct(iou)} | "
                         f"{_pct(accuracy['per_class_accuracy'].get(name))} |")
        lines.append("")
        if gt["rejection_reasons"]:
            lines += ["Rejected ground truth, by reason:", ""]
            lines += [f"- {n} x {reason}" for reason, n in gt["rejection_reasons"].items()]
            lines.append("")
        lines += _confusion_lines(accuracy) + _worst_frame_lines(accuracy)
    lines += _class_lines(report.get("classes")) + _confidence_lines(report.get("confidence"))
    outputs = report["outputs"]
    lines += ["## Outputs", ""]
    if outputs.get("bag"):
        lines.append(f"- Bag `{outputs['bag']}` ({outputs['storage']}):")
        lines += [f"  - `{topic}`: {count} messages"
                  for topic, count in outputs.get("topics", {}).items()]
    for key, label in FIGURES:
        if outputs.get(key):
            lines.append(f"- {label}: `{outputs[key]}`")
    lines.append("")
    if report.get("environment"):
        lines += _environment_lines(report["environment"])
    return "\n".join(lines)


FIGURES = (("latency_png", "Latency histogram"),
           ("timeline_png", "Latency and frame mIoU over the bag's time"),
           ("confusion_png", "Confusion heat map"),
           ("montage_png", "Sample frames and the worst or most doubtful ones"),
           ("overlay_video", "Overlay video"))


def headline(report: dict) -> str:
    """What was measured in one line. Realtime mode: processing and delivered rates side
    by side, with the drops, so that a fast processing rate is not read as frames
    delivered to the robot. `all` mode: the processing rate only (no camera clock)."""
    throughput, frames, timing = report["throughput"], report["frames"], report["timing"]
    if report["mode"] == "realtime":
        text = (f"{_num(throughput['processing_fps'])} FPS processing, "
                f"{_num(throughput.get('delivered_fps'))} FPS delivered (camera "
                f"{_num(timing['input_hz'])} Hz), {frames['dropped']} of {frames['read']} "
                f"frames dropped")
    else:
        text = (f"{_num(throughput['processing_fps'])} FPS processing over "
                f"{frames['processed']} frames (all mode: every frame, no camera clock)")
    latency = report["latency_ms"].get("processing")
    if latency:
        text += f", p95 latency {latency['p95']:.1f} ms"
    accuracy = report["accuracy"]
    if accuracy and accuracy["miou"] is not None:
        text += f", mIoU {100 * accuracy['miou']:.1f} %"
    return text


def _confusion_lines(accuracy: dict) -> list[str]:
    confusions = accuracy.get("top_confusions")
    if not confusions:
        return []
    lines = ["Top confusions (ground-truth pixels of a class predicted as another):", "",
             "| ground truth | predicted as | pixels | % of the class |", "|---|---|---:|---:|"]
    lines += [f"| {c['truth']} | {c['predicted']} | {c['pixels']} | "
              f"{100 * c['share_of_truth']:.1f} |" for c in confusions]
    return lines + [""]


def _worst_frame_lines(accuracy: dict) -> list[str]:
    worst, spread = accuracy.get("worst_frames"), accuracy.get("per_frame_miou")
    if not worst:
        return []
    lowest = min(w["miou"] for w in worst)
    lines = [f"Per-frame mIoU: p50 {_pct(spread['p50'])} %, lowest {_pct(lowest)} %. Worst "
             "frames (shown at the end of the montage):", "",
             "| frame | header stamp (ns) | bag time (s) | mIoU % |", "|---:|---:|---:|---:|"]
    lines += [f"| {w['index']} | {w['stamp_ns']} | {w['time_s']:.2f} | {_pct(w['miou'])} |"
              for w in worst]
    return lines + [""]


def _class_lines(classes: list[dict] | None) -> list[str]:
    if not classes:
        return []
    lines = ["## Classes seen", "", "Share of the processed frames' pixels predicted as each "
             "class:", "", "| class | % of pixels |", "|---|---:|"]
    lines += [f"| {c['name']} | {100 * c['share']:.1f} |" for c in classes]
    return lines + [""]


def _confidence_lines(confidence: dict | None) -> list[str]:
    if not confidence:
        return []
    spread = confidence["per_frame_mean"]
    lines = ["## Confidence", "",
             f"Mean winning-class probability per frame: p50 {_pct(spread['p50'])} %, "
             f"lowest {_pct(spread['min'])} %."]
    if confidence["doubtful_frames"]:
        lines += ["", "Most doubtful frames (lowest mean confidence, at least a second "
                  "apart; in the montage):", "", "| frame | time (s) | mean confidence % |",
                  "|---:|---:|---:|"]
        lines += [f"| {d['index']} | {d['time_s']:.2f} | {_pct(d['mean_confidence'])} |"
                  for d in confidence["doubtful_frames"]]
    return lines + [""]


def _environment_lines(env: dict) -> list[str]:
    cpu, engine, checkpoint = env["cpu"], env["engine"], env.get("checkpoint")
    lines = [
        "## Environment", "",
        f"- swiftseg_ros {env['package']['version']} "
        f"(git {env['package']['git_revision'] or 'unknown'}), Python {env['python']}, "
        f"torch {env['torch']}, onnxruntime {env['onnxruntime'] or 'not installed'}",
        f"- CPU {cpu['model']} ({cpu['logical_cores']} logical cores; "
        f"{', '.join(cpu['flags']) or 'no listed flags'}), GPU {env['gpu'] or 'none'}, "
        f"{env['threads']} torch threads",
    ]
    if checkpoint:
        lines.append(f"- Checkpoint {checkpoint['file']} (sha256 {checkpoint['sha256']})")
    lines += ["- Parameters: see `environment.parameters` in report.json", "",
              "Engine settings:", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in engine.items()
              if key != "choices"]
    for what, choice in (engine.get("choices") or {}).items():
        picked = choice.get("picked") if isinstance(choice, dict) else choice
        lines.append(f"| choice: {what} | {_cell(picked)} |")
    return lines + [""]


def _cell(value) -> str:
    """A value for a markdown table cell: mappings as `key value` pairs, lists joined."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value) or "-"
    return "-" if value is None else str(value).replace("|", "/")


# ------------------------------------------------------------------------ figures


def _histogram(ax, values: np.ndarray, color: str) -> None:
    """Log-spaced bins when the values spread over a decade or more: one slow frame
    (a re-plan, a busy machine) must not squash every other frame into one bin."""
    bins = min(60, max(10, values.size // 4))
    low, high = float(values.min()), float(values.max())
    if low > 0 and high / low >= 10:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.hist(values, bins=np.geomspace(low, high, bins + 1), color=color)
        ax.set_xscale("log")
        # ticks at 1, 2 and 5 of each decade: one label per decade is not readable
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.hist(values, bins=bins, color=color)


def write_latency_plot(path: Path, result: ReplayResult) -> bool:
    """Histogram of per-frame processing latency, the median per stage and, in realtime
    mode, the image ages. False (nothing written) without processed frames."""
    processed = [r for r in result.records if r.outcome == "processed"]
    if not processed:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    latency = np.array([r.timings["processing"] for r in processed])
    ages = np.array([r.age_ms for r in processed if r.age_ms is not None])
    panels = 3 if result.options.mode == "realtime" and ages.size else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), layout="constrained")
    ax = axes[0]
    _histogram(ax, latency, "#4477aa")
    for p, style in ((50, "-"), (95, "--"), (99, ":")):
        value = float(np.percentile(latency, p))
        ax.axvline(value, color="k", linestyle=style, linewidth=1, label=f"p{p} {value:.1f} ms")
    ax.set_xlabel("processing time per frame (ms)")
    ax.set_ylabel("frames")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"processing time of {latency.size} frames, {result.options.mode} mode")
    ax.legend(fontsize=8)

    ax = axes[1]
    stages = [s for s in ("decode", "host_copy", "upload", "preprocess", "forward",
                          "postprocess", "download", "messages") if s in processed[0].timings]
    medians = [float(np.median([r.timings[s] for r in processed])) for s in stages]
    ax.barh(stages[::-1], medians[::-1], color="#66aa55")
    ax.set_xlabel("median time (ms)")
    ax.set_title("per stage")

    if panels == 3:
        ax = axes[2]
        _histogram(ax, ages, "#cc6677")
        ax.set_xlabel("image age at publish (ms)")
        ax.set_ylabel("frames")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"image age (header stamp to publish), {ages.size} frames")
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return True


def write_montage(path: Path, samples: list[Sample], class_names=None, palette=None,
                  worst: list[Sample] = (), doubtful: list[Sample] = ()) -> bool:
    """Sample frames spread over the run, then the worst frames by mIoU (with ground
    truth) or the most doubtful by mean confidence (without), in `swiftseg-eval`'s layout
    (`frame_montage`). A sample frame within SPREAD_S of a worst or doubtful one is left
    out (it would show the same picture). False (nothing written) without frames."""
    chosen = [*worst, *doubtful]
    shown = [s for s in samples
             if all(abs(s.arrival - c.arrival) >= SPREAD_S for c in chosen)]
    frames = [_montage_frame(s, "sample") for s in shown]
    frames += [_montage_frame(s, "worst") for s in worst]
    frames += [_montage_frame(s, "doubtful") for s in doubtful]
    if not frames:
        return False
    frame_montage(frames, path, class_names=class_names, palette=palette)
    return True


def _montage_frame(sample: Sample, kind: str) -> MontageFrame:
    return MontageFrame(sample_title(sample, kind), sample.image, sample.label,
                        sample.ground_truth, sample.confidence)


def sample_title(sample: Sample, kind: str = "sample") -> str:
    text = f"{kind} frame {sample.index} at {sample.arrival:.1f} s"
    if sample.miou is not None:
        text += f", mIoU {100 * sample.miou:.1f} %"
    return text
