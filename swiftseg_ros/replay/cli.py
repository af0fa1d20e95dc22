"""swiftseg-replay: replay a rosbag2 camera bag through the node's segmentation path.

    swiftseg-replay BAG --image-topic TOPIC [--label-topic TOPIC] [--params FILE]
                    [--weights CKPT] [--network NAME] [--device DEV] [--precision P]
                    [--mode all|realtime] --out DIR [--force] [--out-storage mcap|sqlite3]
                    [--json FILE]

Writes DIR/bag/ (the node's output topics), DIR/report.json, DIR/report.md,
DIR/latency.png and DIR/montage.png. See docs/replay.md.

Exit status: 0 done; 2 bad input (nothing replayed: missing bag, unknown topic, wrong
message type, unreadable bag, bad parameter, existing --out without --force); 3 the bag
is damaged, the partial results up to the damage are written; 4 frames failed in the
engine (a bug or a device fault; counted in the report).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from swiftseg_ros.cli import ArgumentParser, add_common_flags, fail, write_json
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.replay.bagio import OUTPUT_STORAGES, BagError, OutputBag, open_bag
from swiftseg_ros.replay.run import MODES, Replay, ReplayOptions, ReplayResult, check_topics

EXIT_DAMAGED = 3
EXIT_FAILED_FRAMES = 4
BAG_DIR = "bag"
REPORT_FILES = ("report.json", "report.md", "latency.png", "montage.png")


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
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--force", action="store_true",
                        help="replace the outputs of an earlier replay in --out")
    parser.add_argument("--out-storage", choices=OUTPUT_STORAGES, default="mcap",
                        help="storage of the output bag (default mcap: Foxglove opens it "
                        "directly; use sqlite3 for ROS 2 Humble without the MCAP plugin)")
    parser.add_argument("--montage-frames", type=int, default=4,
                        help="sample frames in montage.png (default 4, 0 for none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def node_parameters(params_file: str | None, *, weights=None, network=None, device=None,
                    precision=None, backend=None, threads=None):
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
    return validate_parameters(values)


def prepare_out_dir(out: Path, force: bool) -> None:
    """Make `out`, refusing to mix with an earlier replay unless `force`; with `force`
    only this tool's own outputs are removed, never anything else in the folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    ours = [out / BAG_DIR, *(out / name for name in REPORT_FILES)]
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


def replay_bag(bag_path, out: Path, options: ReplayOptions, params, *, force: bool = False,
               out_storage: str = "mcap") -> tuple[dict, ReplayResult]:
    """Open, check, replay, write every output; returns (report dict, ReplayResult)."""
    from swiftseg_ros.engine import SegmentationEngine
    from swiftseg_ros.replay.report import (
        build_report,
        render_markdown,
        write_latency_plot,
        write_montage,
    )
    from swiftseg_ros.ros.params import engine_config_from_params

    with open_bag(bag_path) as bag:
        check_topics(bag, options.image_topic, options.label_topic)
        # the engine first: a configuration it refuses leaves no output folder behind
        engine = SegmentationEngine(engine_config_from_params(params))
        try:
            prepare_out_dir(out, force)
            with OutputBag(out / BAG_DIR, out_storage) as output:
                result = Replay(bag, engine, options, output).run()
            files = {"bag": str(out / BAG_DIR), "storage": out_storage,
                     "topics": dict(result.output_counts)}
            if write_latency_plot(out / "latency.png", result):
                files["latency_png"] = str(out / "latency.png")
            if write_montage(out / "montage.png", result.samples, result.class_names,
                             result.palette):
                files["montage_png"] = str(out / "montage.png")
            files["report_json"] = str(out / "report.json")
            files["report_md"] = str(out / "report.md")
            report = build_report(
                result,
                bag={"path": str(bag_path), "storage": bag.storage,
                     "image_topic": options.image_topic, "label_topic": options.label_topic},
                engine=engine_summary(engine),
                outputs=files)
        finally:
            engine.release()
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report))
    return report, result


def summary_lines(report: dict) -> list[str]:
    """A few lines for the terminal: counts, accuracy, speed, where the outputs are."""
    frames, timing, outputs = report["frames"], report["timing"], report["outputs"]
    latency = report["latency_ms"].get("processing") or {}
    fps = report["throughput"]["processing_fps"]
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
    speed = f"{fps:.1f} FPS" if fps else "n/a FPS"
    if latency:
        speed += f", latency p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms"
    if timing["image_age_ms"] and report["mode"] == "realtime":
        speed += f", image age p99 {timing['image_age_ms']['p99']:.1f} ms"
    lines.append(speed)
    if outputs.get("bag"):
        topics = ", ".join(outputs.get("topics", {}))
        lines.append(f"output bag: {outputs['bag']} ({outputs['storage']}: {topics})")
    lines.append(f"report: {outputs['report_md']} and {outputs['report_json']}")
    figures = [outputs[k] for k in ("latency_png", "montage_png") if outputs.get(k)]
    if figures:
        lines.append("figures: " + ", ".join(figures))
    return lines


def exit_status(report: dict, prog: str) -> int:
    """One line on stderr and the status for a damaged bag or failed frames; else 0."""
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
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    bag_path = Path(args.bag)
    if not bag_path.exists():
        raise BagError(f"bag {bag_path} not found (give a rosbag2 folder, a .mcap or a .db3 "
                       "file)")
    if args.montage_frames < 0:
        raise ConfigError(f"--montage-frames {args.montage_frames}: 0 or more")
    params = node_parameters(args.params, weights=args.weights, network=args.network,
                             device=args.device, precision=args.precision,
                             backend=args.backend)
    if args.image_topic is None:
        with open_bag(bag_path) as bag:
            images = ", ".join(bag.image_topics()) or "none"
        return fail(f"give --image-topic; image topics in {bag_path}: {images}")
    options = ReplayOptions.for_node(
        params,
        image_topic=args.image_topic,
        label_topic=args.label_topic,
        mode=args.mode,
        montage_frames=args.montage_frames,
        progress=not args.no_progress,
    )
    report, _ = replay_bag(bag_path, Path(args.out), options, params, force=args.force,
                           out_storage=args.out_storage)
    write_json(args.json, report)
    for line in summary_lines(report):
        print(line)
    return exit_status(report, "swiftseg-replay")
