"""A/B replay: one bag through two configurations, one comparison report, one verdict.

    swiftseg-replay BAG --image-topic T [--label-topic L] --out DIR \\
        --compare A.pt B.pt [--compare-params a.yaml b.yaml] [--min-miou PCT] ...

Each configuration is a full replay (`swiftseg_ros.replay.session.replay_bag`: the node's
engine path, the bag's clock in realtime mode) into DIR/a/ and DIR/b/, one after the
other so that they never share the machine. Both are checked (parameters, weights,
class sets) before the first one writes anything. The comparison (DIR/comparison.json,
.md, .png and DIR/disagreement.png) puts their accuracy, latency and drops side by
side; the exit status is the verdict on A, the preferred configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from swiftseg_ros.cli import write_json
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.files import write_text
from swiftseg_ros.metrics import IGNORE_INDEX
from swiftseg_ros.montage import blend, colour_ids, make_montage
from swiftseg_ros.replay.footage import open_input
from swiftseg_ros.replay.plots import write_comparison_chart
from swiftseg_ros.replay.report import format_ms
from swiftseg_ros.replay.run import ReplayResult, Sample, check_topics
from swiftseg_ros.replay.session import (
    check_ground_truth,
    exit_status,
    node_parameters,
    prepare_out_dir,
    replay_bag,
    replay_options,
    require_image_topic,
    summary_lines,
    thresholds_from,
)
from swiftseg_ros.replay.verdict import EXIT_VERDICT_FAILED, verdict_line

KEYS = ("a", "b")
LATENCY_STAGES = ("decode", "preprocess", "forward", "postprocess", "total", "processing")
PERCENTILES = ("p50", "p95", "p99")
# On the greyed input; each at least 85 (RGB distance) from every colour of the shipped
# palettes and from the grey, so none reads as a class.
DISAGREE_COLOUR = (40, 255, 255)
A_RIGHT_COLOUR = (0, 255, 90)
B_RIGHT_COLOUR = (255, 90, 0)
BOTH_WRONG_COLOUR = (160, 0, 255)
PROG = "swiftseg-replay"


def configurations(args) -> list[tuple[str, object]]:
    """(label, validated parameters) of A and B, from --compare and --compare-params."""
    if args.compare and args.weights:
        raise ConfigError("--weights and --compare both name weights; give the two "
                          "checkpoints with --compare A.pt B.pt only")
    if args.compare_params and args.params:
        raise ConfigError("--params and --compare-params both name parameter files; give "
                          "the two files with --compare-params a.yaml b.yaml only")
    weights = args.compare or (args.weights, args.weights)
    files = args.compare_params or (args.params, args.params)
    if _same_file(*weights) and (not args.compare_params or _same_file(*files)):
        raise ConfigError(f"--compare{'-params' if args.compare_params else ''}: A and B are "
                          "the same configuration; give two different weights or parameter "
                          "files")
    found = []
    for key, weights_file, params_file in zip(KEYS, weights, files, strict=True):
        params = node_parameters(params_file, weights=weights_file, network=args.network,
                                 device=args.device, precision=args.precision,
                                 backend=args.backend, retune=args.retune)
        parts = [Path(params.weights).name if params.weights else f"random {params.network}"]
        if args.compare_params:
            parts.append(Path(params_file).name)
        found.append((f"{key.upper()} {', '.join(parts)}", params))
    return found


def _same_file(a, b) -> bool:
    if a is None or b is None:
        return a == b
    try:
        return Path(a).resolve() == Path(b).resolve() or Path(a).samefile(b)
    except OSError:
        return False


def main_compare(args, bag_path: Path) -> int:
    """The A/B form of swiftseg-replay's main."""
    configs = configurations(args)
    thresholds = [thresholds_from(args, params) for _, params in configs]
    image_topic = require_image_topic(args, bag_path)
    label_topic = None if args.no_accuracy else args.label_topic
    with open_input(bag_path, args.fps) as bag:
        check_topics(bag, image_topic, label_topic)
        if label_topic is not None:
            check_ground_truth(bag, bag_path, label_topic, [p for _, p in configs],
                               args.classes)
    out = Path(args.out)
    prepare_out_dir(out, args.force)
    runs = []
    for key, (label, params), limits in zip(KEYS, configs, thresholds, strict=True):
        print(f"{label}:")
        report, result = replay_bag(bag_path, out / key, replay_options(args, params, image_topic),
                                    params, out_storage=args.out_storage, thresholds=limits,
                                    checked=True, fps=args.fps, write_bag=args.write_bag,
                                    write_video=args.write_video)
        for line in summary_lines(report):
            print(f"  {line}")
        if report["interrupted"]:
            return exit_status(report, PROG)
        runs.append((label, report, result))
    comparison = build_comparison(runs, out)
    if write_comparison_chart(out / "comparison.png", comparison):
        comparison["outputs"]["comparison_png"] = str(out / "comparison.png")
    if write_disagreement_montage(out / "disagreement.png", comparison, runs):
        comparison["outputs"]["disagreement_png"] = str(out / "disagreement.png")
    write_json(out / "comparison.json", comparison)
    write_text(out / "comparison.md", render_comparison(comparison))
    write_json(args.json, comparison)
    print()
    for line in comparison_lines(comparison):
        print(line)
    if not comparison["verdict"]["passed"]:
        print(f"{PROG}: verdict FAIL for {comparison['labels']['a']}: "
              f"{'; '.join(comparison['verdicts']['a']['reasons'])}", file=sys.stderr)
        return EXIT_VERDICT_FAILED
    return 0


# ------------------------------------------------------------------------ the comparison


def _pair(a, b) -> dict:
    difference = None if a is None or b is None else b - a
    return {"a": a, "b": b, "difference": difference}


def build_comparison(runs: list[tuple[str, dict, ReplayResult]], out: Path) -> dict:
    """comparison.json: A and B side by side (differences are B - A)."""
    (label_a, a, result_a), (label_b, b, result_b) = runs
    accuracy = None
    if a["accuracy"] and b["accuracy"]:
        names = list(dict.fromkeys([*a["accuracy"]["per_class"], *b["accuracy"]["per_class"]]))
        accuracy = {
            "miou": _pair(a["accuracy"]["miou"], b["accuracy"]["miou"]),
            "pixel_accuracy": _pair(a["accuracy"]["pixel_accuracy"],
                                    b["accuracy"]["pixel_accuracy"]),
            "per_class": {name: _pair(a["accuracy"]["per_class"].get(name),
                                      b["accuracy"]["per_class"].get(name)) for name in names},
        }
    latency = {}
    for stage in LATENCY_STAGES:
        la, lb = a["latency_ms"].get(stage), b["latency_ms"].get(stage)
        if la or lb:
            latency[stage] = {p: _pair((la or {}).get(p), (lb or {}).get(p)) for p in PERCENTILES}
    verdicts = {"a": a.get("verdict"), "b": b.get("verdict")}
    return {
        "version": 1,
        "bag": a["bag"],
        "mode": a["mode"],
        "labels": {"a": label_a, "b": label_b},
        "configurations": {key: {"engine": report["engine"],
                                 "checkpoint": report["environment"]["checkpoint"],
                                 "report_json": report["outputs"]["report_json"]}
                           for key, report in zip(KEYS, (a, b), strict=True)},
        "frames": {"a": a["frames"], "b": b["frames"]},
        "throughput": {key: _pair(a["throughput"][key], b["throughput"][key])
                       for key in ("processing_fps", "delivered_fps")},
        "accuracy": accuracy,
        "latency_ms": latency,
        "latency_budget_ms": verdicts["a"]["thresholds"]["latency_budget_ms"],
        "disagreement": disagreement(result_a.samples, result_b.samples),
        "verdicts": verdicts,
        "verdict": {"preferred": "a", "passed": verdicts["a"]["passed"],
                    "verdict": verdicts["a"]["verdict"]},
        "recommendation": recommend(label_a, a, label_b, b),
        "outputs": {"comparison_json": str(out / "comparison.json"),
                    "comparison_md": str(out / "comparison.md")},
    }


# mIoU differences below this (0-1) are within what a few frames more or less change
MIOU_TIE = 0.005


def recommend(label_a: str, a: dict, label_b: str, b: dict) -> dict:
    """Which configuration to fly, by a stated rule: only those that pass their verdict;
    among them the higher mIoU (more than MIOU_TIE apart), then the larger latency margin
    (budget minus p95 processing time; without a budget, the lower p95)."""
    runs = {"a": (label_a, a), "b": (label_b, b)}
    passing = [key for key, (_, report) in runs.items() if (report.get("verdict") or {}).get(
        "passed")]
    if not passing:
        return {"choice": None, "rule": RULE, "reason": "neither passes its verdict: fix the "
                "failing checks (or the requirements) before flying either"}
    if len(passing) == 1:
        key = passing[0]
        other = "b" if key == "a" else "a"
        return {"choice": key, "rule": RULE,
                "reason": f"{runs[key][0]}: the only one that passes ({runs[other][0]} fails: "
                          f"{'; '.join(runs[other][1]['verdict']['reasons'])})"}

    def miou(report):
        return (report.get("accuracy") or {}).get("miou")

    ma, mb = miou(a), miou(b)
    if ma is not None and mb is not None and abs(ma - mb) > MIOU_TIE:
        key = "a" if ma > mb else "b"
        return {"choice": key, "rule": RULE,
                "reason": f"{runs[key][0]}: both pass; higher mIoU ({100 * max(ma, mb):.1f} % "
                          f"against {100 * min(ma, mb):.1f} %)"}

    def p95(report):
        return (report["latency_ms"].get("processing") or {}).get("p95", float("inf"))

    key = "a" if p95(a) <= p95(b) else "b"
    budget = a["verdict"]["thresholds"]["latency_budget_ms"]
    margin = (f"latency margin {budget - p95(runs[key][1]):.1f} ms of the {budget:g} ms budget "
              f"against {budget - p95(runs['b' if key == 'a' else 'a'][1]):.1f} ms"
              if budget else f"lower p95 latency ({p95(runs[key][1]):.1f} ms)")
    tie = "mIoU within 0.5 points" if ma is not None and mb is not None else "no mIoU"
    return {"choice": key, "rule": RULE,
            "reason": f"{runs[key][0]}: both pass, {tie}; larger {margin}" if budget else
                      f"{runs[key][0]}: both pass, {tie}; {margin}"}


RULE = ("only a configuration that passes its verdict; then the higher mIoU; then the larger "
        "latency margin")


def _common(samples_a: list[Sample], samples_b: list[Sample]) -> list[tuple[Sample, Sample]]:
    """Sample frames both runs kept (in realtime mode each keeps the first frame it
    processed at each spot, so the two may differ)."""
    by_index = {s.index: s for s in samples_b}
    return [(s, by_index[s.index]) for s in samples_a if s.index in by_index]


def _differ(label_a: np.ndarray, label_b: np.ndarray) -> np.ndarray:
    if label_b.shape != label_a.shape:
        label_b = cv2.resize(label_b, (label_a.shape[1], label_a.shape[0]),
                             interpolation=cv2.INTER_NEAREST)
    return label_a != label_b


def disagreement(samples_a: list[Sample], samples_b: list[Sample]) -> dict:
    """Share of the pixels whose class A and B disagree on, per common sample frame."""
    frames = [{"index": a.index, "share": float(_differ(a.label, b.label).mean())}
              for a, b in _common(samples_a, samples_b)]
    mean = float(np.mean([f["share"] for f in frames])) if frames else None
    return {"frames": frames, "mean_share": mean}


def write_disagreement_montage(path: Path, comparison: dict, runs) -> bool:
    """Rows of input | A | B | where they differ, on the greyed input: with ground truth,
    coloured by which of them is right there (A_RIGHT_COLOUR, B_RIGHT_COLOUR,
    BOTH_WRONG_COLOUR, ignored pixels left grey); without, in DISAGREE_COLOUR."""
    (_, _, result_a), (_, _, result_b) = runs
    pairs = _common(result_a.samples, result_b.samples)
    if not pairs:
        return False
    labels, palette = comparison["labels"], result_a.palette
    rows, titles, drawn = [], [], set()
    for a, b in pairs:
        differ = _differ(a.label, b.label)
        label_b = _resized(b.label, a.label.shape)
        shown = _grey(a.image, *differ.shape)
        text = f"they differ on {100 * differ.mean():.1f} % of pixels"
        if a.ground_truth is not None:
            truth = _resized(a.ground_truth, a.label.shape)
            scored = truth != IGNORE_INDEX
            right_a, right_b = a.label == truth, label_b == truth
            for name, where, colour in (
                    ("only A right", differ & scored & right_a & ~right_b, A_RIGHT_COLOUR),
                    ("only B right", differ & scored & right_b & ~right_a, B_RIGHT_COLOUR),
                    ("both wrong", differ & scored & ~right_a & ~right_b, BOTH_WRONG_COLOUR)):
                shown[where] = colour
                drawn.add((name, colour))
            share_a = (differ & scored & right_a).sum() / max(1, (differ & scored).sum())
            text += f"; where they differ, A is right on {100 * share_a:.0f} %"
        else:
            shown[differ] = DISAGREE_COLOUR
            drawn.add(("A and B differ", DISAGREE_COLOUR))
        colours = [colour_ids(s, palette) for s in (a.label, label_b)]
        rows.append([a.image, blend(a.image, colours[0]), blend(a.image, colours[1]), shown])
        titles.append(f"frame {a.index}: input | {labels['a']} | {labels['b']} | {text}")
    seen = set(np.unique(np.concatenate([p.label.ravel() for pair in pairs for p in pair])))
    legend = [(name, colour) for i, (name, colour) in
              enumerate(zip(result_a.class_names, palette.tolist(), strict=False)) if i in seen]
    legend += sorted(drawn, key=lambda item: item[0])
    make_montage(rows, titles, path, legend=legend)
    return True


def _resized(ids: np.ndarray, shape) -> np.ndarray:
    if ids.shape == tuple(shape):
        return ids
    return cv2.resize(ids, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _grey(image: np.ndarray, height: int, width: int) -> np.ndarray:
    grey = cv2.cvtColor(cv2.resize(image, (width, height)), cv2.COLOR_RGB2GRAY)
    return np.repeat((grey // 2 + 64)[:, :, None], 3, axis=2)


# ------------------------------------------------------------------------ text


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _signed_pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def comparison_lines(comparison: dict) -> list[str]:
    """The terminal summary: verdicts, then mIoU, p95 and drops of each, and the files."""
    labels, lines = comparison["labels"], []
    for key in KEYS:
        lines.append("verdict: " + verdict_line(labels[key], comparison["verdicts"][key]))
    lines.append(f"recommendation: {comparison['recommendation']['reason']}")
    accuracy = comparison["accuracy"]
    if accuracy:
        miou = accuracy["miou"]
        lines.append(f"mIoU A {_pct(miou['a'])} %, B {_pct(miou['b'])} % "
                     f"(B - A {_signed_pct(miou['difference'])} points)")
    p95 = (comparison["latency_ms"].get("processing") or {}).get("p95")
    if p95:
        lines.append(f"p95 processing A {format_ms(p95['a'])} ms, B {format_ms(p95['b'])} ms")
    frames = comparison["frames"]
    if comparison["mode"] == "realtime":  # all mode has no clock, so no drops
        lines.append(f"dropped A {frames['a']['dropped']} of {frames['a']['read']}, "
                     f"B {frames['b']['dropped']} of {frames['b']['read']}")
    outputs = comparison["outputs"]
    lines.append(f"comparison: {outputs['comparison_md']} and {outputs['comparison_json']}")
    pictures = [outputs[k] for k in ("comparison_png", "disagreement_png") if outputs.get(k)]
    if pictures:
        lines.append("figures: " + ", ".join(pictures))
    return lines


def render_comparison(comparison: dict) -> str:
    """comparison.md from the comparison.json content."""
    labels, configs = comparison["labels"], comparison["configurations"]
    lines = [f"# A/B replay of {comparison['bag']['path']}", "",
             f"Mode **{comparison['mode']}**; A is the preferred configuration: the exit "
             f"status is its verdict (**{comparison['verdict']['verdict']}**).", "",
             "## Verdict", ""]
    lines += [f"- {verdict_line(labels[key], comparison['verdicts'][key])}" for key in KEYS]
    recommendation = comparison["recommendation"]
    lines += ["", f"**Recommendation: {recommendation['reason']}.**", "",
              f"Rule: {recommendation['rule']}."]
    lines += ["", "## Configurations", "",
              "| | network | device | precision | upsample | inference size | checkpoint "
              "sha256 |", "|---|---|---|---|---|---|---|"]
    for key in KEYS:
        engine, checkpoint = configs[key]["engine"], configs[key]["checkpoint"]
        sha = checkpoint["sha256"][:16] + "..." if checkpoint else "random weights"
        lines.append(f"| {labels[key]} | {engine['network']} | {engine['device']} | "
                     f"{engine['precision']} | {engine['upsample']} | "
                     f"{engine['inference_size']} | {sha} |")
    frames, throughput = comparison["frames"], comparison["throughput"]
    realtime = comparison["mode"] == "realtime"
    lines += ["", "## Frames and rates", ""]
    if realtime:
        lines += ["| | read | processed | dropped | rejected | failed | processing FPS | "
                  "delivered FPS |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    else:
        lines += ["| | read | processed | rejected | failed | processing FPS |",
                  "|---|---:|---:|---:|---:|---:|"]
    for key in KEYS:
        f = frames[key]
        cells = [f["read"], f["processed"], *([f["dropped"]] if realtime else []),
                 f["rejected"], f["failed"], format_ms(throughput["processing_fps"][key]),
                 *([format_ms(throughput["delivered_fps"][key])] if realtime else [])]
        lines.append(f"| {labels[key]} | " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Delivered FPS: frames published per second of bag time, from the first "
              "image to the last publish." if realtime else "All mode: every frame, no "
              "camera clock, so no drops or delivered rate.", ""]
    accuracy = comparison["accuracy"]
    if accuracy:
        lines += ["## Accuracy (IoU %, difference B - A in points)", "",
                  "Each configuration is scored on the frames it processed (in realtime "
                  "mode, not the same frames when they drop differently).", "",
                  "| class | A | B | B - A |", "|---|---:|---:|---:|"]
        for name, pair in accuracy["per_class"].items():
            lines.append(f"| {name} | {_pct(pair['a'])} | {_pct(pair['b'])} | "
                         f"{_signed_pct(pair['difference'])} |")
        for name, key in (("**mIoU**", "miou"), ("pixel accuracy", "pixel_accuracy")):
            pair = accuracy[key]
            lines.append(f"| {name} | {_pct(pair['a'])} | {_pct(pair['b'])} | "
                         f"{_signed_pct(pair['difference'])} |")
        lines.append("")
    if comparison["latency_ms"]:
        lines += ["## Latency per stage (ms, processed frames)", "",
                  "| stage | p50 A | p50 B | p95 A | p95 B | p99 A | p99 B |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for stage, numbers in comparison["latency_ms"].items():
            cells = [format_ms(numbers[p][key]) for p in PERCENTILES for key in KEYS]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines.append("")
    spread = comparison["disagreement"]
    if spread["frames"]:
        lines += [f"A and B disagree on {_pct(spread['mean_share'])} % of the pixels of the "
                  f"{len(spread['frames'])} sample frames (disagreement.png).", ""]
    outputs = comparison["outputs"]
    lines += ["## Files", ""]
    lines += [f"- {labels[key]}: `{configs[key]['report_json']}`" for key in KEYS]
    for key, text in (("comparison_png", "Per-class IoU and latency side by side"),
                      ("disagreement_png", "Where A and B disagree")):
        if outputs.get(key):
            lines.append(f"- {text}: `{outputs[key]}`")
    lines.append("")
    return "\n".join(lines)
