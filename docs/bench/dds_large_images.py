"""Large images between two processes of one host, under Fast DDS's transports (docs/ros.md).

    .venv/bin/python docs/bench/dds_large_images.py --json out.json

For each transport setup (Fast DDS's built-in transports; FASTDDS_BUILTIN_TRANSPORTS=
LARGE_DATA; this package's config/fastdds_large_images.xml in both processes, then in the
subscriber's alone), a publisher process (reliable, keep last 10, as camera drivers
publish) sends `--frames` rgb8 images of `--size` at `--rate` Hz to a subscriber process
with the node's default QoS (best effort, keep last 1), once the two have discovered each
other. Reported per setup: the frames received and the latency from stamp to arrival
(p50/p95). Fast DDS (RMW_IMPLEMENTATION=rmw_fastrtps_cpp), a ROS domain of its own, this
host only. Needs rclpy (`make setup`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILE = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(ROOT / "config" / "fastdds_large_images.xml")}
# setup -> (the publisher's extra environment, the subscriber's)
SETUPS = {
    "built-in transports": ({}, {}),
    "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA": ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
                                              {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}),
    "config/fastdds_large_images.xml": (PROFILE, PROFILE),
    "the profile on the subscriber only": ({}, PROFILE),
}
TOPIC = "/dds_large_images"


def publish(frames: int, width: int, height: int, rate_hz: float) -> None:
    import array

    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_large_images_publisher")
    publisher = node.create_publisher(Image, TOPIC, QoSProfile(
        depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE))
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.data = array.array("B", bytes(width * height * 3))
    deadline = time.monotonic() + 30.0
    while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the subscriber's side of discovery settles too
    start = time.monotonic()
    for index in range(frames):
        while time.monotonic() < start + index / rate_hz:
            time.sleep(0.0005)
        wall = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(wall), int((wall % 1) * 1e9)
        msg.header.frame_id = str(index)
        publisher.publish(msg)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()


def subscribe(seconds: float) -> None:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_large_images_subscriber")
    latencies = []

    def on_image(msg):
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append((time.time() - stamp) * 1000.0)

    node.create_subscription(Image, TOPIC, on_image, QoSProfile(
        depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(latencies))
    node.destroy_node()
    rclpy.shutdown()


def setup_environment(extra: dict) -> dict:
    cleared = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTRTPS_DEFAULT_PROFILES_FILE",
               "FASTDDS_DEFAULT_PROFILES_FILE")
    return ({key: value for key, value in os.environ.items() if key not in cleared}
            | {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"} | extra)


def run_setup(publisher_env: dict, subscriber_env: dict, args) -> dict:
    import numpy as np

    me = [sys.executable, __file__]
    seconds = args.frames / args.rate + 8.0
    subscriber = subprocess.Popen([*me, "--role", "subscriber", "--seconds", str(seconds)],
                                  env=setup_environment(subscriber_env),
                                  stdout=subprocess.PIPE, text=True)
    try:
        subprocess.run([*me, "--role", "publisher", "--frames", str(args.frames), "--size",
                        args.size, "--rate", str(args.rate)],
                       env=setup_environment(publisher_env), check=True)
        out, _ = subscriber.communicate(timeout=seconds + 30)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    latencies = json.loads(out.strip().splitlines()[-1])
    return {"publisher_environment": publisher_env, "subscriber_environment": subscriber_env,
            "published": args.frames, "received": len(latencies),
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480", help="WxH of the rgb8 images")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--role", choices=("publisher", "subscriber"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.role == "publisher":
        publish(args.frames, width, height, args.rate)
        return 0
    if args.role == "subscriber":
        subscribe(args.seconds)
        return 0
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    results = {name: run_setup(*environments, args)
               for name, environments in SETUPS.items()}
    print(f"{width}x{height} rgb8 ({width * height * 3} bytes) at {args.rate:g} Hz, "
          f"{args.frames} frames, best-effort subscriber:")
    print("| transports | received | latency p50 ms | latency p95 ms |")
    print("|---|---|---|---|")
    for name, entry in results.items():
        p50, p95 = entry["latency_p50_ms"], entry["latency_p95_ms"]
        print(f"| {name} | {entry['received']} of {entry['published']} | "
              f"{'n/a' if p50 is None else f'{p50:.1f}'} | "
              f"{'n/a' if p95 is None else f'{p95:.1f}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"size": args.size, "rate_hz": args.rate, "results": results,
             "command": " ".join(sys.argv)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
