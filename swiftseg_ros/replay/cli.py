"""swiftseg-replay: replay a camera recording through the node's segmentation path.

    swiftseg-replay VIDEO|IMAGE_FOLDER --out DIR [--weights CKPT] [--fps HZ] [--bag] ...
    swiftseg-replay BAG [--image-topic TOPIC] [--label-topic TOPIC] [--params FILE]
                    [--weights CKPT] [--network NAME] [--device DEV] [--precision P]
                    [--mode all|realtime] [--pipelined auto|on|off] --out DIR [--force]
                    [--out-storage mcap|sqlite3]
                    [--json FILE] [--classes NAME|FILE | --no-accuracy]
                    [--latency-budget-ms MS] [--min-miou PCT] [--max-drops PCT] [--quiet]
    swiftseg-replay BAG ... --compare A.pt B.pt [--compare-params a.yaml b.yaml]

INPUT is detected from what it is: a rosbag2 folder (or its .mcap/.db3 file), a video
file or an image folder (`swiftseg_ros.replay.footage`). Writes DIR/report.json,
DIR/report.md and the pictures (latency.png, timeline.png, confusion.png with ground
truth, montage.png), DIR/bag/ (the node's output topics; for footage only with --bag) and,
for footage, DIR/overlay.mp4. With --compare or
--compare-params, two configurations one after the other into DIR/a/ and DIR/b/, and
the comparison in DIR/comparison.{json,md,png} and DIR/disagreement.png. See
docs/replay.md.

Exit status: 0 done (with --compare: the first configuration passes its verdict);
1 the (first) configuration fails its verdict (with --compare, or when --min-miou or
--latency-budget-ms is given), or no frame was processed (all rejected); 2 bad input (nothing replayed: missing bag, unknown
topic, wrong message type, unreadable bag, bad parameter, a checkpoint of another class
set than the ground truth's, existing --out without --force); 3 the bag is damaged, the
partial results up to the damage are written; 4 frames failed in the engine (a bug or a
device fault; counted in the report); 130 interrupted (Ctrl-C) or 143 terminated
(SIGTERM), the partial report is written and marked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swiftseg_ros.cli import (
    ArgumentParser,
    add_common_flags,
    check_count,
    check_device,
    check_network,
    write_json,
)
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.files import check_output_file
from swiftseg_ros.replay.bagio import OUTPUT_STORAGES
from swiftseg_ros.replay.footage import input_kind
from swiftseg_ros.replay.run import MODES
from swiftseg_ros.replay.session import (
    PIPELINED,
    check_out_dir,
    exit_status,
    node_parameters,
    replay_bag,
    replay_options,
    require_image_topic,
    summary_lines,
    thresholds_from,
)


def build_parser(prog: str = "swiftseg-replay") -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description="Replay a camera recording (a rosbag2 bag, a video file or an image "
                    "folder) through the segmentation node's code path: report, pictures, "
                    "accuracy against ground truth where the bag has it, latency and, in "
                    "realtime mode, drops; an overlay video for footage, an output bag for "
                    "a rosbag. No ROS installation needed.")
    parser.add_argument("bag", metavar="INPUT",
                        help="a rosbag2 folder (or its .mcap or .db3 file), a video file "
                        "(mp4, avi, mkv, ...: whatever OpenCV reads) or a folder of images "
                        "(replayed in name order)")
    parser.add_argument("--fps", type=float,
                        help="frame rate of an image folder (default 10) or, to override it, "
                        "of a video: the clock of realtime mode")
    parser.add_argument("--bag", dest="write_bag", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="write the node's output topics to OUT/bag/ (default: yes for a "
                        "rosbag input, no for a video or an image folder)")
    parser.add_argument("--no-video", dest="write_video", action="store_false",
                        help="a video or an image folder: no overlay video (OUT/overlay.mp4; "
                        "VP9 encoding takes longer than a small network's inference)")
    parser.add_argument("--image-topic", action="append",
                        help="camera topic (sensor_msgs/Image or CompressedImage, detected "
                        "from the bag); give it once per camera to replay several cameras "
                        "through one engine, batched as the node with its cameras parameter")
    parser.add_argument("--label-topic", action="append",
                        help="ground-truth topic: sensor_msgs/Image mono8 class ids with the "
                        "same header stamps as the images (several cameras: one per camera, "
                        "in the order of their image topics or --cameras)")
    parser.add_argument("--cameras", help="several cameras by the node's camera names, "
                        "comma separated (front,down): each camera's images on /C/image (or "
                        "/C/image/compressed), as the node subscribes them")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    bag_path = Path(args.bag)
    kind = input_kind(bag_path)
    if args.fps is not None and kind == "rosbag":
        raise ConfigError("--fps is for a video or an image folder; a rosbag has its own clock")
    check_count(args.montage_frames, "--montage-frames", 0, 64)
    check_count(args.worst_frames, "--worst-frames", 0, 64)
    if args.device is not None:
        check_device(args.device, allow_auto=True)
    check_network(args.network)
    if args.json:
        check_output_file(args.json, "--json")
    check_out_dir(Path(args.out), args.force)
    if args.classes and args.no_accuracy:
        raise ConfigError("--classes checks the ground truth that --no-accuracy leaves out; "
                          "give one of them")
    if args.cameras is not None or len(args.image_topic or ()) > 1:
        return main_cameras(args, bag_path, kind)
    args.image_topic = (args.image_topic or [None])[0]
    if len(args.label_topic or ()) > 1:
        raise ConfigError("--label-topic given several times for one --image-topic")
    args.label_topic = (args.label_topic or [None])[0]
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
                           fps=args.fps, write_bag=args.write_bag,
                           write_video=args.write_video, thresholds=thresholds)
    write_json(args.json, report)
    for line in summary_lines(report):
        print(line)
    gate = args.min_miou is not None or args.latency_budget_ms is not None
    return exit_status(report, "swiftseg-replay", gate=gate)


def main_cameras(args, bag_path: Path, kind: str) -> int:
    """Several cameras (--image-topic repeated, or --cameras) through the node's
    multi-camera path; per-camera report and output bag."""
    from swiftseg_ros.replay.bagio import open_bag
    from swiftseg_ros.replay.multicam import (
        MultiReplayOptions,
        multi_summary_lines,
        replay_cameras,
        streams_from_cameras,
        streams_from_topics,
    )

    if kind != "rosbag":
        raise ConfigError(f"several cameras are read from a rosbag; {bag_path} is a {kind}")
    if args.cameras is not None and args.image_topic:
        raise ConfigError("--cameras derives the image topics: give it or --image-topic, "
                          "not both")
    for flag in ("compare", "compare_params", "min_miou", "classes"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')} is for one camera; several cameras "
                              "(--cameras or repeated --image-topic) take no such option")
    if args.pipelined == "on":
        raise ConfigError("--pipelined on: several cameras run in batches, not pipelined")
    labels = [] if args.no_accuracy else list(args.label_topic or ())
    params = node_parameters(args.params, weights=args.weights, network=args.network,
                             device=args.device, precision=args.precision,
                             backend=args.backend, retune=args.retune)
    if args.cameras is not None:
        names = [name.strip() for name in args.cameras.split(",") if name.strip()]
        with open_bag(bag_path) as bag:
            streams = streams_from_cameras(bag, names, labels)
    else:
        streams = streams_from_topics(args.image_topic, labels)
    options = MultiReplayOptions(streams, mode=args.mode, progress=not args.quiet)
    report = replay_cameras(bag_path, Path(args.out), options, params, force=args.force,
                            out_storage=args.out_storage)
    write_json(args.json, report)
    for line in multi_summary_lines(report):
        print(line)
    return exit_status_cameras(report)


def exit_status_cameras(report: dict) -> int:
    """As one camera's: 130 interrupted, 3 damaged bag, 4 frames failed, else 0."""
    import sys

    from swiftseg_ros.replay.session import EXIT_DAMAGED, EXIT_FAILED_FRAMES, EXIT_INTERRUPTED

    if report["interrupted"]:
        print("swiftseg-replay: interrupted; partial report written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not report["complete"]:
        print(f"swiftseg-replay: error: bag damaged ({report['bag']['damage']}); partial "
              "results written", file=sys.stderr)
        return EXIT_DAMAGED
    failed = sum(camera["frames"]["failed"] for camera in report["cameras"].values())
    if failed:
        print(f"swiftseg-replay: error: {failed} frames failed in the engine",
              file=sys.stderr)
        return EXIT_FAILED_FRAMES
    return 0
