"""swiftseg-demo: the README's first command (`make demo`), end to end on the CPU.

    swiftseg-demo [--out DIR] [--frames N] [--size WxH] [--weights CKPT] [--mode M]
                  [--device DEV] [--threads N] [--quiet]

1. On first run, writes a synthetic camera bag with ground truth into DIR/camera_bag
   (a `swiftseg-synth --sequence` drive: rgb8 images on /camera/image_raw, mono8 class
   ids on /camera/labels, 20 Hz with camera jitter); later runs reuse it.
2. Replays it through the shipped demo weights (models/fastscnn_synth.pt) on the CPU with
   `swiftseg-replay`'s code, in realtime mode: the bag's own timing and the node's
   latest-frame policy, as on a robot.
3. Prints mIoU, the processing and delivered rates, p99 latency, drops and the verdict
   against the node's latency budget, and where the output bag, the report and the
   pictures are (DIR/replay/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from swiftseg_ros.checkpoint import load_checkpoint
from swiftseg_ros.cli import (
    ArgumentParser,
    add_common_flags,
    check_count,
    check_device,
    parse_size_flag,
)
from swiftseg_ros.files import check_output_folder, write_text
from swiftseg_ros.paths import resolve_weights
from swiftseg_ros.replay.run import MODES, ReplayOptions
from swiftseg_ros.replay.session import (
    exit_status,
    node_parameters,
    replay_bag,
    summary_lines,
)
from swiftseg_ros.replay.synthbag import CameraBagSpec, write_camera_bag
from swiftseg_ros.replay.verdict import Thresholds

DEMO_WEIGHTS = "fastscnn_synth.pt"
DEFAULT_OUT = "demo_out"
SPEC_FILE = "camera_bag.json"
MAX_FRAMES = 100_000  # 80 minutes of the 20 Hz camera


def cached_camera_bag(folder: Path, spec: CameraBagSpec, progress: bool = True
                      ) -> tuple[Path, bool]:
    """(the bag, whether it was written now): reused while its spec file matches."""
    bag = folder / "camera_bag"
    spec_file = folder / SPEC_FILE
    wanted = asdict(spec)
    if bag.is_dir() and spec_file.is_file():
        try:
            if json.loads(spec_file.read_text()) == wanted:
                return bag, False
        except (json.JSONDecodeError, OSError):
            pass
    if bag.exists():
        shutil.rmtree(bag)
    spec_file.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_camera_bag(bag, spec, progress=progress)
    # written last: an interrupted run leaves no spec file, so the next run starts over
    write_text(spec_file, json.dumps(wanted, indent=2) + "\n")
    return bag, True


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-demo",
        description="Write a synthetic camera bag with ground truth (once), replay it "
                    "through the demo weights on the CPU, print the results.")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"demo folder (default ./{DEFAULT_OUT}): the camera bag is cached "
                        "here, the replay outputs go to OUT/replay/")
    parser.add_argument("--frames", type=int, default=120, help="frames in the bag (default 120)")
    parser.add_argument("--size", default="512x256", help="frame size WxH (default 512x256)")
    parser.add_argument("--weights", default=DEMO_WEIGHTS,
                        help=f"checkpoint (default {DEMO_WEIGHTS} from the package's models/)")
    add_common_flags(parser, weights=False, network=False, precision=False, backend="auto",
                     json_out=False)  # --device, --backend, --retune as every tool has them
    # One thread keeps up with the 20 Hz camera, and unlike two OpenMP threads on two
    # cores it does not stall whenever anything else runs on the machine.
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU inference threads (default 1; 0 for PyTorch's default)")
    parser.add_argument("--mode", choices=MODES, default="realtime",
                        help="replay mode (default realtime: drops and image ages as on a "
                        "robot)")
    parser.add_argument("--cameras", action="store_true",
                        help="three cameras through one engine instead, as the node with its "
                        "cameras parameter: front 512x256 at 20 Hz, down 320x256 at 10 Hz, "
                        "rear 256x128 at 5 Hz, for --frames / 20 seconds (--size is ignored)")
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                        help="no progress display")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_count(args.frames, "--frames", 1, MAX_FRAMES)
    check_count(args.threads, "--threads", 0, 1024)
    width, height = parse_size_flag(args.size, "--size")
    check_device(args.device)
    check_output_folder(args.out, "--out")
    weights = resolve_weights(args.weights)
    load_checkpoint(weights)  # a file that is not a checkpoint is refused before the bag
    params = node_parameters(None, weights=str(weights), device=args.device,
                             backend=args.backend, threads=args.threads,
                             retune=args.retune)
    began = time.perf_counter()
    folder = Path(args.out)
    if args.cameras:
        return cameras_demo(folder, params, args, began)
    spec = CameraBagSpec(frames=args.frames, width=width, height=height)
    bag, written = cached_camera_bag(folder, spec, progress=not args.quiet)
    print(f"{'wrote' if written else 'reusing'} synthetic camera bag {bag} ({spec.frames} "
          f"frames {width}x{height} at {spec.rate_hz:g} Hz, ground truth on {spec.label_topic})")

    options = ReplayOptions.for_node(
        params,
        image_topic=spec.image_topic,
        label_topic=spec.label_topic,
        mode=args.mode,
        progress=not args.quiet,
    )
    print(f"replaying it through {weights} on {args.device} ({args.mode} mode)")
    # the verdict against the node's default latency budget is shown, not enforced
    report, _ = replay_bag(bag, folder / "replay", options, params, force=True,
                           thresholds=Thresholds(params.latency_budget_ms))
    print()
    for line in summary_lines(report):
        print(line)
    bag_folder = Path(report["outputs"]["bag"])
    storage_files = sorted(bag_folder.glob("*.mcap"))
    print(f"play it: ros2 bag play {bag_folder}"
          + (f"; open {storage_files[0]} in Foxglove" if storage_files else ""))
    print(f"demo finished in {time.perf_counter() - began:.0f} s")
    print("your own footage (a video, an image folder or a rosbag): swiftseg-replay INPUT "
          "--out DIR [--weights CKPT] (docs/replay.md)")
    return exit_status(report, "swiftseg-demo")


def cameras_demo(folder: Path, params, args, began: float) -> int:
    """The three-camera demo: a multi-camera bag (written once per --frames), replayed
    through one engine with the node's multi-camera path; per-camera results."""
    from swiftseg_ros.replay.bagio import open_bag
    from swiftseg_ros.replay.multibag import DEMO_CAMERAS, write_multi_camera_bag
    from swiftseg_ros.replay.multicam import (
        MultiReplayOptions,
        multi_summary_lines,
        replay_cameras,
        streams_from_cameras,
    )

    seconds = args.frames / 20.0
    bag = folder / f"cameras_bag_{args.frames}"
    done = folder / f"cameras_bag_{args.frames}.done"  # written last, as SPEC_FILE
    if not done.is_file():
        if bag.exists():
            shutil.rmtree(bag)
        folder.mkdir(parents=True, exist_ok=True)
        write_multi_camera_bag(bag, DEMO_CAMERAS, seconds=seconds)
        done.write_text("")
    cameras = [camera.name for camera in DEMO_CAMERAS]
    print(f"camera bag {bag}: " + ", ".join(
        f"{c.name} {c.width}x{c.height} at {c.rate_hz:g} Hz" for c in DEMO_CAMERAS))
    with open_bag(bag) as opened:
        streams = streams_from_cameras(opened, cameras, [f"/{c}/labels" for c in cameras])
    options = MultiReplayOptions(streams, mode=args.mode, progress=not args.quiet)
    report = replay_cameras(bag, folder / "replay_cameras", options, params, force=True)
    print()
    for line in multi_summary_lines(report):
        print(line)
    print(f"demo finished in {time.perf_counter() - began:.0f} s")
    failed = sum(camera["frames"]["failed"] for camera in report["cameras"].values())
    return 4 if failed else 0
