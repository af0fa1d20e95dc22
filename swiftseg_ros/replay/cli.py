"""swiftseg-replay: replay a rosbag2 camera bag through the node's segmentation path.

    swiftseg-replay BAG --image-topic TOPIC [--label-topic TOPIC] [--params FILE]
                    [--weights CKPT] [--network NAME] [--device DEV] [--precision P]
                    [--mode all|realtime] [--pipelined auto|on|off] --out DIR [--force]
                    [--out-storage mcap|sqlite3]
                    [--json FILE] [--classes NAME|FILE | --no-accuracy]
                    [--latency-budget-ms MS] [--min-miou PCT] [--max-drops PCT] [--quiet]
    swiftseg-replay BAG ... --compare A.pt B.pt [--compare-params a.yaml b.yaml]

Writes DIR/bag/ (the node's output topics), DIR/report.json, DIR/report.md and the
pictures (latency.png, timeline.png, confusion.png, montage.png). With --compare or
--compare-params, two configurations one after the other into DIR/a/ and DIR/b/, and
the comparison in DIR/comparison.{json,md,png} and DIR/disagreement.png. See
docs/replay.md.

Exit status: 0 done (with --compare: the first configuration passes its verdict);
1 the (first) configuration fails its verdict (with --compare, or when --min-miou or
--latency-budget-ms is given); 2 bad input (nothing replayed: missing bag, unknown
topic, wrong message type, unreadable bag, bad parameter, a checkpoint of another class
set than the ground truth's, existing --out without --force); 3 the bag is damaged, the
partial results up to the damage are written; 4 frames failed in the engine (a bug or a
device fault; counted in the report); 130 interrupted (Ctrl-C), the partial report is
written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from swiftseg_ros.cli import ArgumentParser, add_common_flags, write_json
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.replay.bagio import OUTPUT_STORAGES, BagError, OutputBag, open_bag
from swiftseg_ros.replay.run import MODES, Replay, ReplayOptions, ReplayResult, check_topics
from swiftseg_ros.replay.verdict import EXIT_VERDICT_FAILED, Thresholds, judge

EXIT_DAMAGED = 3
EXIT_FAILED_FRAMES = 4
EXIT_INTERRUPTED = 130
BAG_DIR = "bag"
# an A/B replay's outputs (swiftseg_ros.replay.compare): --force replaces them too
COMPARISON_OUTPUTS = ("a", "b", "comparison.json", "comparison.md", "comparison.png",
                      "disagreement.png")
# --pipelined: auto is the node's default (SegmentationPipeline's pipelined=None)
PIPELINED = {"auto": None, "on": True, "off": False}
REPORT_FILES = ("report.json", "report.md", "latency.png", "timeline.png", "confusion.png",
                "montage.png")


def build_parser(prog: str = "swiftseg-replay") -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description="Replay a rosbag2 camera bag (folder, .mcap or .db3) through the "
                    "segmentation node's code path: output bag, accuracy against ground "
                    "truth, latency and drops. No ROS installation needed.")
    parser.add_argument("bag", help="rosbag2 folder, .mcap file or .db3 file")
    parser.add_argument("--image-topic", help="camera topic (sensor_msgs/Image or "
                        "CompressedImage, detected from the bag)")
    parser.add_argument("--label-topic", help="ground-truth topic: sensor_msgs/Image mono8 "
                        "class ids with the same header stamps as the images")
    parser.add_argument("--params", help="node parameter file (a ROS 2 parameter file such "
                        "as config/seg.yaml); default: the parameters' defaults")
    add_common_flags(parser, device=False, precision=False, backend=True)
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the parameter "
                        "file's device, auto)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                        help="inference precision (default: the parameter file's, fp32)")
    parser.add_argument("--mode", choices=MODES, default="all",
                        help="all: every frame as fast as possible (default); realtime: the "
                        "bag's timing and the node's latest-frame policy (drops, image ages)")
    parser.add_argument("--pipelined", choices=PIPELINED, default="auto",
                        help="frames through the engine's pipelined path, as the node's "
                        "worker runs them (default auto: on CUDA only, as the node)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--force", action="store_true",
                        help="replace the outputs of an earlier replay in --out")
    parser.add_argument("--out-storage", choices=OUTPUT_STORAGES, default="mcap",
                        help="storage of the output bag (default mcap: Foxglove opens it "
                        "directly; use sqlite3 for ROS 2 Humble without the MCAP plugin)")
    parser.add_argument("--montage-frames", type=int, default=4,
                        help="sample frames in montage.png (default 4, 0 for none)")
    parser.add_argument("--worst-frames", type=int, default=3,
                        help="frames of lowest mIoU added to montage.png (default 3)")
    parser.add_argument("--classes", metavar="NAME|FILE",
                        help="the ground truth's class set (cityscapes, camvid or a classes "
                        "YAML); default: the bag folder's classes.yaml when it has one. A "
                        "checkpoint of another class set is refused")
    parser.add_argument("--no-accuracy", action="store_true",
                        help="do not score against --label-topic (replay a checkpoint of "
                        "another class set for its speed only)")
    add_verdict_flags(parser)
    add_compare_flags(parser)
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                        help="no progress display")
    return parser


def node_parameters(params_file: str | None, *, weights=None, network=None, device=None,
                    precision=None, backend=None, threads=None, retune=False):
    """The validated node parameters: the file's (or the defaults), then the flags.

    --weights without --network lets the checkpoint decide the network (the parameter
    file's network would otherwise have to match it).
    """
    from swiftseg_ros.ros.params import load_param_file, validate_parameters

    values = load_param_file(params_file) if params_file else {}
    if weights is not None:
        values["weights"] = weights
        values["network"] = network or ""
    elif network is not None:
        values["network"] = network
    if device is not None:
        values["device"] = device
    if precision is not None:
        values["precision"] = precision
    if backend is not None:
        values["backend"] = backend
    if threads is not None:
        values["threads"] = threads
    if retune:
        values["retune"] = True
    return validate_parameters(values)


def prepare_out_dir(out: Path, force: bool) -> None:
    """Make `out`, refusing to mix with an earlier replay unless `force`; with `force`
    only this tool's own outputs are removed, never anything else in the folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    ours = [out / BAG_DIR, *(out / name for name in (*REPORT_FILES, *COMPARISON_OUTPUTS))]
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"--out {out} already exists and is not empty; add --force to "
                              "replace an earlier replay's outputs, or choose another folder")
        for path in ours:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def engine_summary(engine) -> dict:
    stats = engine.stats()
    weights = engine.config.weights

    def size(value):
        return f"{value[0]}x{value[1]}" if value else None

    return {
        "network": engine.network,
        "weights": None if weights is None else str(weights),
        "num_classes": engine.num_classes,
        "device": str(stats.get("device")),
        "precision": stats.get("precision"),
        "outputs": list(engine.outputs),
        "upsample": stats.get("upsample"),
        "input_size": size(stats.get("input_size")),
        "inference_size": size(stats.get("inference_size")),
    }


def add_verdict_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-budget-ms", type=float, metavar="MS",
                        help="verdict: p95 processing time per frame allowed (default: the "
                        "parameter file's latency_budget_ms; 0 turns the check off)")
    parser.add_argument("--min-miou", type=float, metavar="PCT",
                        help="verdict: lowest mIoU allowed, in percent (needs --label-topic)")
    parser.add_argument("--max-drops", type=float, default=0.0, metavar="PCT",
                        help="verdict, realtime mode: most frames dropped allowed, in percent "
                        "(default 0)")


def add_compare_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare", nargs=2, metavar=("A.pt", "B.pt"),
                        help="A/B: replay the bag with weights A, then with weights B, and "
                        "compare; the verdict's exit status is A's")
    parser.add_argument("--compare-params", nargs=2, metavar=("A.yaml", "B.yaml"),
                        help="A/B: the parameter files of the two configurations (network, "
                        "precision, upsampling, inference size, ...); with --compare, "
                        "each file's weights are replaced by --compare's")


def thresholds_from(args, params) -> Thresholds:
    """The verdict's limits: the flags, else the parameter file's latency budget."""
    budget = params.latency_budget_ms if args.latency_budget_ms is None \
        else args.latency_budget_ms
    if budget < 0:
        raise ConfigError(f"--latency-budget-ms {budget:g}: 0 (no check) or more")
    if args.min_miou is not None and not 0 <= args.min_miou <= 100:
        raise ConfigError(f"--min-miou {args.min_miou:g}: a percentage between 0 and 100")
    if not 0 <= args.max_drops <= 100:
        raise ConfigError(f"--max-drops {args.max_drops:g}: a percentage between 0 and 100")
    if args.min_miou is not None and (args.label_topic is None or args.no_accuracy):
        raise ConfigError("--min-miou needs ground truth: give --label-topic (and not "
                          "--no-accuracy)")
    return Thresholds(budget, None if args.min_miou is None else args.min_miou / 100.0,
                      args.max_drops)


def check_ground_truth(bag, bag_path, label_topic: str, configurations, classes) -> None:
    """Refuse, before anything is written, a configuration whose checkpoint's class set is
    not the ground truth's (`swiftseg_ros.replay.classcheck`)."""
    from swiftseg_ros.replay.classcheck import (
        check_class_set,
        configuration_classes,
        declared_classes,
        ground_truth_ids,
    )

    declared = declared_classes(bag_path, classes)
    truth_ids = ground_truth_ids(bag, label_topic)
    for params in configurations:
        names, source = configuration_classes(params)
        check_class_set(names, source, truth_ids, declared, label_topic)


def replay_bag(bag_path, out: Path, options: ReplayOptions, params, *, force: bool = False,
               out_storage: str = "mcap", classes: str | None = None,
               thresholds: Thresholds | None = None,
               checked: bool = False) -> tuple[dict, ReplayResult]:
    """Open, check, replay, write every output; returns (report dict, ReplayResult).

    `checked`: the caller has checked the topics and class sets already (an A/B run
    checks both configurations before the first one writes anything).
    """
    from swiftseg_ros.engine import SegmentationEngine
    from swiftseg_ros.replay.environment import environment_record
    from swiftseg_ros.replay.report import build_report, render_markdown
    from swiftseg_ros.ros.params import engine_config_from_params

    with open_bag(bag_path) as bag:
        if not checked:
            check_topics(bag, options.image_topic, options.label_topic)
            if options.label_topic is not None:
                check_ground_truth(bag, bag_path, options.label_topic, [params], classes)
        # the engine first: a configuration it refuses leaves no output folder behind
        engine = SegmentationEngine(engine_config_from_params(params))
        try:
            prepare_out_dir(out, force)
            with OutputBag(out / BAG_DIR, out_storage) as output:
                result = Replay(bag, engine, options, output).run()
            report = build_report(
                result,
                bag={"path": str(bag_path), "storage": bag.storage,
                     "image_topic": options.image_topic, "label_topic": options.label_topic},
                engine=engine_summary(engine),
                outputs={"bag": str(out / BAG_DIR), "storage": out_storage,
                         "topics": dict(result.output_counts)},
                environment=environment_record(engine, params, engine.config.weights))
        finally:
            engine.release()
    if thresholds is not None:
        report["verdict"] = judge(report, thresholds)
    write_figures(out, report, result)
    report["outputs"]["report_json"] = str(out / "report.json")
    report["outputs"]["report_md"] = str(out / "report.md")
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report))
    return report, result


def write_figures(out: Path, report: dict, result: ReplayResult) -> None:
    """The pictures of one replay, each listed in report["outputs"] when it was drawn."""
    from swiftseg_ros.replay.plots import write_confusion_heatmap, write_timeline
    from swiftseg_ros.replay.report import write_latency_plot, write_montage

    files = report["outputs"]
    input_hz = report["timing"]["input_hz"]
    budget = (report.get("verdict") or {}).get("thresholds", {}).get(
        "latency_budget_ms", result.options.latency_budget_ms)
    drawn = {
        "latency_png": write_latency_plot(out / "latency.png", result),
        "timeline_png": write_timeline(
            out / "timeline.png", result.records, mode=result.options.mode,
            camera_period_ms=1000.0 / input_hz if input_hz else None,
            latency_budget_ms=budget, worst=[s.index for s in result.worst]),
        "confusion_png": bool(report["accuracy"]) and write_confusion_heatmap(
            out / "confusion.png", report["accuracy"]["confusion"]),
        "montage_png": write_montage(out / "montage.png", result.samples, result.class_names,
                                     result.palette, result.worst),
    }
    for key, done in drawn.items():
        if done:
            files[key] = str(out / key.replace("_png", ".png"))


def summary_lines(report: dict) -> list[str]:
    """A few lines for the terminal: counts, accuracy, speed, where the outputs are."""
    from swiftseg_ros.replay.report import FIGURES, headline
    from swiftseg_ros.replay.verdict import verdict_line

    frames, timing, outputs = report["frames"], report["timing"], report["outputs"]
    latency = report["latency_ms"].get("processing") or {}
    lines = [
        f"{frames['read']} frames read ({report['mode']} mode): {frames['processed']} "
        f"processed, {frames['dropped']} dropped, {frames['rejected']} rejected, "
        f"{frames['failed']} failed",
    ]
    accuracy = report["accuracy"]
    if accuracy:
        miou, truth = accuracy["miou"], accuracy["ground_truth"]
        accuracy_text = "n/a" if accuracy["pixel_accuracy"] is None else \
            f"{100 * accuracy['pixel_accuracy']:.1f} %"
        lines.append(
            f"mIoU {'n/a' if miou is None else f'{100 * miou:.1f} %'}, pixel accuracy "
            f"{accuracy_text} over {truth['matched']} frames with ground truth")
        if truth["rejected"]:
            reason = next(iter(truth["rejection_reasons"]), "")
            lines.append(f"{truth['rejected']} of {truth['messages']} ground-truth messages "
                         f"rejected (first reason: {reason})")
    speed = headline(report)
    if latency:
        speed += f"; latency p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms"
    if timing["image_age_ms"] and report["mode"] == "realtime":
        speed += f", image age p99 {timing['image_age_ms']['p99']:.1f} ms"
    lines.append(speed)
    if report.get("verdict"):
        lines.append("verdict: " + verdict_line("this configuration", report["verdict"]))
    if outputs.get("bag"):
        topics = ", ".join(outputs.get("topics", {}))
        lines.append(f"output bag: {outputs['bag']} ({outputs['storage']}: {topics})")
    lines.append(f"report: {outputs['report_md']} and {outputs['report_json']}")
    figures = [outputs[key] for key, _ in FIGURES if outputs.get(key)]
    if figures:
        lines.append("figures: " + ", ".join(figures))
    return lines


def exit_status(report: dict, prog: str, gate: bool = False) -> int:
    """One line on stderr and the status for an interrupted run, a damaged bag, failed
    frames or (when `gate`) a failed verdict; else 0."""
    if report.get("interrupted"):
        frames = report["frames"]
        print(f"{prog}: interrupted after {frames['read']} of {frames['expected']} frames; "
              f"partial bag in {report['outputs']['bag']}, report written "
              f"({report['outputs']['report_md']})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not report["complete"]:
        bag = report["bag"]
        print(f"{prog}: error: bag damaged after {bag['messages_read']} messages "
              f"({bag['damage']}); partial results written", file=sys.stderr)
        return EXIT_DAMAGED
    failed = report["frames"]["failed"]
    if failed:
        reason = next(iter(report["failures"]), "")
        print(f"{prog}: error: {failed} frames failed in the engine (first reason: {reason})",
              file=sys.stderr)
        return EXIT_FAILED_FRAMES
    verdict = report.get("verdict")
    if gate and verdict and not verdict["passed"]:
        print(f"{prog}: verdict FAIL: {'; '.join(verdict['reasons'])}", file=sys.stderr)
        return EXIT_VERDICT_FAILED
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    bag_path = Path(args.bag)
    if not bag_path.exists():
        raise BagError(f"bag {bag_path} not found (give a rosbag2 folder, a .mcap or a .db3 "
                       "file)")
    for flag in ("montage_frames", "worst_frames"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: 0 or more")
    if args.classes and args.no_accuracy:
        raise ConfigError("--classes checks the ground truth that --no-accuracy leaves out; "
                          "give one of them")
    if args.compare or args.compare_params:
        from swiftseg_ros.replay.compare import main_compare

        return main_compare(args, bag_path)
    params = node_parameters(args.params, weights=args.weights, network=args.network,
                             device=args.device, precision=args.precision,
                             backend=args.backend, retune=args.retune)
    thresholds = thresholds_from(args, params)
    image_topic = require_image_topic(args, bag_path)
    options = replay_options(args, params, image_topic)
    report, _ = replay_bag(bag_path, Path(args.out), options, params, force=args.force,
                           out_storage=args.out_storage, classes=args.classes,
                           thresholds=thresholds)
    write_json(args.json, report)
    for line in summary_lines(report):
        print(line)
    gate = args.min_miou is not None or args.latency_budget_ms is not None
    return exit_status(report, "swiftseg-replay", gate=gate)


def require_image_topic(args, bag_path: Path) -> str:
    if args.image_topic is None:
        with open_bag(bag_path) as bag:
            images = ", ".join(bag.image_topics()) or "none"
        raise ConfigError(f"give --image-topic; image topics in {bag_path}: {images}")
    return args.image_topic


def replay_options(args, params, image_topic: str) -> ReplayOptions:
    return ReplayOptions.for_node(
        params,
        image_topic=image_topic,
        label_topic=None if args.no_accuracy else args.label_topic,
        mode=args.mode,
        pipelined=PIPELINED[args.pipelined],
        montage_frames=args.montage_frames,
        worst_frames=args.worst_frames,
        progress=not args.quiet,
    )
