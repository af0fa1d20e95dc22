"""swiftseg-soak: run the node's pipeline against a misbehaving synthetic camera.

    swiftseg-soak --minutes 60 --out soak60            # 30 Hz 640x480, faults every 20 s
    swiftseg-soak --minutes 5 --rate max --transport compressed --out soak-jpeg
    swiftseg-soak --minutes 1 --param network=swiftnet_mnv2 --param weights= --out s
    swiftseg-soak --judge soak60/soak.json             # a saved soak judged again

Writes DIR/soak.json and DIR/soak.png; exits 0 when the verdict holds (record.py: memory
growth, p99 drift, every frame accounted for, every fault survived), 1 when it does not
(the reasons on stderr), 2 for bad options (one line, before anything runs).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from swiftseg_ros.cli import ArgumentParser
from swiftseg_ros.engine.config import parse_size
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.ros.params import BY_NAME, launch_argument_value
from swiftseg_ros.soak.plot import plot_soak
from swiftseg_ros.soak.record import rejudge
from swiftseg_ros.soak.run import SoakOptions, run_soak

# The node's parameters the soak sets unless told otherwise: the CPU (the node's "auto"
# would warn on a machine without CUDA).
DEFAULT_PARAMS = {"device": "cpu"}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="swiftseg-soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="how long (> 0; required)")
    parser.add_argument("--out", help="folder for soak.json and soak.png (required)")
    parser.add_argument("--judge", metavar="SOAK_JSON", help="run nothing: judge a saved "
                        "soak.json again under this version's verdict and print it")
    parser.add_argument("--rate", default="30", help="camera rate in Hz (> 0), or max: the "
                        "next frame as soon as the previous one is published (default 30)")
    parser.add_argument("--size", default="640x480", help="camera size WxH (default 640x480)")
    parser.add_argument("--transport", choices=("raw", "compressed"), default=None,
                        help="the camera's transport (default raw; the node's transport "
                             "parameter)")
    parser.add_argument("--no-faults", action="store_true", help="a clean camera")
    parser.add_argument("--fault-every", type=float, default=20.0, metavar="SECONDS",
                        help="one fault this often, kinds in turn (default 20)")
    parser.add_argument("--window", type=float, default=60.0, metavar="SECONDS",
                        help="latency and memory figures per window (default 60); the "
                             "first is the warm-up the verdict leaves out")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a node parameter (repeatable), as a launch argument is "
                             "written; default device=cpu")
    parser.add_argument("--ros-free", action="store_true",
                        help="drive the pipeline without ROS even where rclpy imports")
    return parser


def parse_options(argv=None) -> tuple[SoakOptions, Path]:
    """The options, checked; ConfigError (one line naming the option) otherwise."""
    args = build_parser().parse_args(argv)
    for name in ("minutes", "out"):
        if getattr(args, name) is None:
            raise ConfigError(f"--{name}: required (or --judge SOAK_JSON alone)")
    if not args.minutes > 0:
        raise ConfigError(f"--minutes {args.minutes:g}: expected a number of minutes > 0")
    if args.rate.strip().lower() == "max":
        rate = None
    else:
        try:
            rate = float(args.rate)
        except ValueError:
            rate = float("nan")
        if not rate > 0:
            raise ConfigError(f"--rate {args.rate}: expected a rate in Hz > 0, or max")
    try:
        width, height = parse_size(args.size, "--size")
    except ConfigError as exc:
        raise ConfigError(f"--size {args.size}: {exc}") from None
    if not args.fault_every > 0:
        raise ConfigError(f"--fault-every {args.fault_every:g}: expected seconds > 0")
    if not args.window > 0:
        raise ConfigError(f"--window {args.window:g}: expected seconds > 0")
    params = dict(DEFAULT_PARAMS)
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or name.strip() not in BY_NAME:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE with a node parameter "
                              "name (docs/ros.md lists them)")
        try:
            params[name.strip()] = launch_argument_value(name.strip(), text)
        except ConfigError as exc:
            raise ConfigError(f"--param {item!r}: {exc}") from None
    if args.transport:
        params["transport"] = args.transport
    out = Path(args.out)
    _check_writable(out)
    return SoakOptions(minutes=args.minutes, rate_hz=rate, width=width, height=height,
                       params=params, faults=not args.no_faults,
                       fault_every_s=args.fault_every, window_s=args.window,
                       ros=False if args.ros_free else None), out


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".soak-write-check"):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out}: not a writable folder ({exc.strerror or exc})") \
            from None


def main(argv=None) -> int:
    saved = build_parser().parse_args(argv).judge
    if saved is not None:
        return judge_saved(Path(saved))
    options, out = parse_options(argv)
    result = run_soak(options, say=lambda line: print(line, flush=True))
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_soak(result, out / "soak.png")
    return _report(result, out / "soak.json")


def judge_saved(path: Path) -> int:
    """`--judge`: the saved soak's verdict again, reported as after a run (0 or 1)."""
    try:
        result = json.loads(path.read_text())
        result["verdict"] = rejudge(result).as_dict()
        return _report(result, path)
    except OSError as exc:
        raise ConfigError(f"--judge {path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(f"--judge {path}: not a soak.json ({type(exc).__name__}: {exc})") \
            from None


def _report(result: dict, path: Path) -> int:
    verdict = result["verdict"]
    frames = result["frames"]["soak_camera"]
    print(f"soak: {result['duration_s'] / 60:.1f} min, sent {frames['sent']}, received "
          f"{frames['received']}, published {frames['published']}, dropped "
          f"{frames['dropped']}, rejected {frames['rejected']}, failed {frames['failed']}; "
          f"memory floor rise {_fmt(verdict['memory_growth_mb'], ' MB')}, steady p99 drift "
          f"{_fmt(verdict['p99_drift'], '', 100, ' %')}; {path}")
    if verdict["ok"]:
        print("soak: PASS")
        return 0
    for reason in verdict["reasons"]:
        print(f"soak: FAIL: {reason}", file=sys.stderr)
    return 1


def _fmt(value, unit: str, scale: float = 1.0, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:+.1f}{unit}{suffix}"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from swiftseg_ros.cli import soak

    raise SystemExit(soak(argv=sys.argv[1:]))
