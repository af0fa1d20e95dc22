"""One replay from opened bag to written report, shared by swiftseg-replay, its A/B form
(compare) and swiftseg-demo: the node's parameters, the output folder, the replay run,
the pictures, the terminal summary and the exit status.

It sits between the command-line front ends (cli, compare, demo) and the replay loop
(run), so that none of the front ends imports another.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from swiftseg_ros import files
from swiftseg_ros.cli import write_json
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.files import write_text
from swiftseg_ros.replay.bagio import OutputBag, open_bag
from swiftseg_ros.replay.footage import FOOTAGE_TOPIC, FootageInput, input_kind, open_input
from swiftseg_ros.replay.run import Replay, ReplayOptions, ReplayResult, check_topics
from swiftseg_ros.replay.verdict import EXIT_VERDICT_FAILED, Thresholds, judge

EXIT_DAMAGED = 3
EXIT_FAILED_FRAMES = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_NOTHING_PROCESSED = 1  # as a failed verdict: the run says nothing about the model
BAG_DIR = "bag"
VIDEO_FILE = "overlay.mp4"
# an A/B replay's outputs (swiftseg_ros.replay.compare): --force replaces them too
COMPARISON_OUTPUTS = ("a", "b", "comparison.json", "comparison.md", "comparison.png",
                      "disagreement.png")
# --pipelined: auto is the node's default (SegmentationPipeline's pipelined=None)
PIPELINED = {"auto": None, "on": True, "off": False}
REPORT_FILES = ("report.json", "report.md", "latency.png", "timeline.png", "confusion.png",
                "montage.png", VIDEO_FILE)


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


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse, before any work, an --out that is a file, cannot be written, or holds an
    earlier replay's outputs without `force`."""
    files.check_output_folder(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {files.shown(out)} already exists and is not empty; add "
                          "--force to replace an earlier replay's outputs, or choose another "
                          "folder")


def prepare_out_dir(out: Path, force: bool) -> None:
    """Make `out`, refusing to mix with an earlier replay unless `force`; with `force`
    only this tool's own outputs are removed, never anything else in the folder."""
    check_out_dir(out, force)
    ours = [out / BAG_DIR, *(out / name for name in (*REPORT_FILES, *COMPARISON_OUTPUTS))]
    if out.is_dir() and any(out.iterdir()):
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
               thresholds: Thresholds | None = None, checked: bool = False,
               fps: float | None = None, write_bag: bool | None = None,
               write_video: bool = True) -> tuple[dict, ReplayResult]:
    """Open, check, replay, write every output; returns (report dict, ReplayResult).

    `bag_path` is a rosbag2 input, a video or an image folder (`footage.open_input`;
    `fps` is the footage's frame rate when given). `write_bag`: write the output bag (None:
    for a rosbag input, not for footage). Footage also gets the overlay video, unless
    `write_video` is false. Without
    ground truth the confidence is computed (as with the node's publish_confidence), for
    the report's confidence statistics and the montage's most doubtful frames.
    `checked`: the caller has checked the topics and class sets already (an A/B run
    checks both configurations before the first one writes anything).
    """
    from swiftseg_ros.engine import SegmentationEngine
    from swiftseg_ros.replay.environment import environment_record
    from swiftseg_ros.replay.overlay_video import OverlayVideo
    from swiftseg_ros.replay.report import build_report, render_markdown
    from swiftseg_ros.ros.params import engine_config_from_params

    if options.label_topic is None and not params.publish_confidence:
        params = dataclasses.replace(params, publish_confidence=True)
    with open_input(bag_path, fps) as bag:
        footage = isinstance(bag, FootageInput)
        if write_bag is None:
            write_bag = not footage
        if not checked:
            check_topics(bag, options.image_topic, options.label_topic)
            if options.label_topic is not None:
                check_ground_truth(bag, bag_path, options.label_topic, [params], classes)
        if options.progress:
            from swiftseg_ros.ros.params import resolve_device

            print(f"preparing {params.weights or 'random ' + params.network} on "
                  f"{resolve_device(params.device)}: building the network", flush=True)
        # the engine first: a configuration it refuses leaves no output folder behind
        engine = SegmentationEngine(engine_config_from_params(params))
        video = None
        try:
            prepare_out_dir(out, force)
            if footage and write_video:
                video = OverlayVideo(out / VIDEO_FILE, bag.fps, engine.class_names,
                                     engine.palette, params.overlay_alpha)
                options = dataclasses.replace(options, frame_sink=video)
            if write_bag:
                with OutputBag(out / BAG_DIR, out_storage) as output:
                    result = Replay(bag, engine, options, output).run()
            else:
                result = Replay(bag, engine, options, None).run()
            outputs = {"bag": str(out / BAG_DIR) if write_bag else None,
                       "storage": out_storage if write_bag else None,
                       "topics": dict(result.output_counts)}
            if video is not None:
                finished, video = video, None
                if finished.close():
                    outputs["overlay_video"] = str(out / VIDEO_FILE)
                    outputs["overlay_video_codec"] = f"{finished.codec} ({finished.codec_note})"
            report = build_report(
                result,
                bag={"path": str(bag_path), "storage": bag.storage,
                     "image_topic": options.image_topic, "label_topic": options.label_topic},
                engine=engine_summary(engine),
                outputs=outputs,
                environment=environment_record(engine, params, engine.config.weights))
        finally:
            if video is not None:
                video.close(keep=False)
            engine.release()
    if thresholds is not None:
        report["verdict"] = judge(report, thresholds)
    write_figures(out, report, result)
    report["outputs"]["report_json"] = str(out / "report.json")
    report["outputs"]["report_md"] = str(out / "report.md")
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
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
            latency_budget_ms=budget, worst=[s.index for s in result.worst],
            doubtful=[s.index for s in result.doubtful]),
        "confusion_png": bool(report["accuracy"]) and write_confusion_heatmap(
            out / "confusion.png", report["accuracy"]["confusion"]),
        "montage_png": write_montage(out / "montage.png", result.samples, result.class_names,
                                     result.palette, result.worst, result.doubtful),
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
    dropped = f"{frames['dropped']} dropped, " if report["mode"] == "realtime" else ""
    lines = [
        f"{frames['read']} frames read ({report['mode']} mode): {frames['processed']} "
        f"processed, {dropped}{frames['rejected']} rejected, {frames['failed']} failed",
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
    classes = report.get("classes") or []
    if classes and not accuracy:
        lines.append("classes seen: " + ", ".join(
            f"{c['name']} {100 * c['share']:.0f} %" for c in classes[:6]
            if c["share"] >= 0.005))
    if report.get("verdict"):
        lines.append("verdict: " + verdict_line("this configuration", report["verdict"]))
    if outputs.get("overlay_video"):
        lines.append(f"overlay video: {outputs['overlay_video']} "
                     f"({outputs['overlay_video_codec']})")
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
        signal = report.get("interrupted_by") or "SIGINT"
        partial = (f"partial bag in {report['outputs']['bag']}, "
                   if report["outputs"].get("bag") else "")
        print(f"{prog}: {'terminated' if signal == 'SIGTERM' else 'interrupted'} after "
              f"{frames['read']} of {frames['expected'] or 'all'} frames; {partial}partial "
              f"report written ({report['outputs']['report_md']})", file=sys.stderr)
        return EXIT_TERMINATED if signal == "SIGTERM" else EXIT_INTERRUPTED
    if not report["complete"]:
        bag = report["bag"]
        print(f"{prog}: error: bag damaged after {bag['messages_read']} messages "
              f"({bag['damage']}); partial results written", file=sys.stderr)
        return EXIT_DAMAGED
    frames = report["frames"]
    if not frames["processed"] and not frames["failed"]:
        reasons = report["rejections"]
        why = (f"all {frames['rejected']} rejected (first reason: {next(iter(reasons))})"
               if reasons else f"{frames['read']} read")
        print(f"{prog}: error: no frame was processed ({why})", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    failed = frames["failed"]
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


def require_image_topic(args, bag_path: Path) -> str:
    """The image topic: --image-topic, the footage's own, or the bag's only image topic."""
    if input_kind(bag_path) != "rosbag":
        if args.image_topic not in (None, FOOTAGE_TOPIC):
            raise ConfigError(f"--image-topic is for a rosbag; {files.shown(bag_path)} is "
                              "footage with one image stream")
        if args.label_topic:
            raise ConfigError(f"--label-topic: {files.shown(bag_path)} is footage, without "
                              "ground truth; replay it without --label-topic")
        return FOOTAGE_TOPIC
    if args.image_topic is None:
        with open_bag(bag_path) as bag:
            images = bag.image_topics()
        if len(images) == 1:
            return images[0]
        raise ConfigError(f"give --image-topic; image topics in {files.shown(bag_path)}: "
                          f"{', '.join(images) or 'none'}")
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
