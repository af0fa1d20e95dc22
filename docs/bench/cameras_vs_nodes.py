"""One node with `cameras` against one node per camera, under real rclpy (docs/benchmarks.md).

    .venv/bin/python docs/bench/cameras_vs_nodes.py --seconds 30 --json out.json

Three synthetic cameras (640x480 rgb8 at 10 Hz each, stamped with the wall clock at
publish) are published by this process; the node processes run with the node defaults
(shipped Fast-SCNN weights, device auto, backend auto, precision fp32, threads 0) and are
driven to active through their lifecycle services. Setup "one node": one `swiftseg` node
with `cameras:=[cam0,cam1,cam2]`; setup "three nodes": three single-camera nodes, each
with its `image` remapped to its camera. For each setup, after every camera's first label
came, for `--seconds`: the labels received per camera, the latency from the image stamp
to the label's arrival here (p50/p95), and the resident memory of the node processes
(VmRSS, sampled every second, median; the three nodes' added up). Needs rclpy (`make
setup` installs PyPI's ros-jazzy wheels); a ROS domain of its own on this host only.

Fast DDS runs with this package's config/fastdds_large_images.xml (this process and the
nodes), so that the 921 KB images reach the nodes (docs/ros.md, "Large best-effort
images"); `--fastdds-profile ''` measures with Fast DDS's built-in transports, under
which most frames are lost before either setup.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CAMERAS = ("cam0", "cam1", "cam2")
NAMESPACE = "/camera_bench"
WIDTH, HEIGHT, RATE_HZ = 640, 480, 10.0
DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_images.xml"


def resident_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def start_nodes(setup: str, parameters: list[str]) -> tuple[list[subprocess.Popen],
                                                           dict[str, str]]:
    """The node processes of a setup, and each camera's label topic."""
    base = [sys.executable, "-m", "swiftseg_ros.ros.node", "--ros-args", "-r",
            f"__ns:={NAMESPACE}", "--log-level", "warn",
            *(item for parameter in parameters for item in ("-p", parameter))]
    if setup == "one node":
        camera_list = ",".join(CAMERAS)
        processes = [subprocess.Popen([*base, "-p", f"cameras:=[{camera_list}]"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        return processes, {c: f"{NAMESPACE}/swiftseg/{c}/label" for c in CAMERAS}
    processes = [subprocess.Popen([*base, "-r", f"__node:=swiftseg_{camera}", "-r",
                                   f"image:={camera}/image"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for camera in CAMERAS]
    return processes, {c: f"{NAMESPACE}/swiftseg_{c}/label" for c in CAMERAS}


def node_names(setup: str) -> list[str]:
    if setup == "one node":
        return [f"{NAMESPACE}/swiftseg"]
    return [f"{NAMESPACE}/swiftseg_{camera}" for camera in CAMERAS]


def camera_frames(image_cls) -> dict[str, object]:
    """One message per camera (a synthetic street scene each), restamped at publish."""
    from swiftseg_ros.synthetic.frames import generate_frame

    messages = {}
    for seed, camera in enumerate(CAMERAS):
        rgb, _ = generate_frame(seed, 0, WIDTH, HEIGHT, sequence=True)
        msg = image_cls()
        msg.header.frame_id = f"{camera}_optical"
        msg.height, msg.width, msg.encoding, msg.step = HEIGHT, WIDTH, "rgb8", WIDTH * 3
        msg.data = array.array("B", np.ascontiguousarray(rgb).tobytes())
        messages[camera] = msg
    return messages


def run_setup(setup: str, seconds: float, startup_s: float, parameters: list[str]) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    processes, label_topics = start_nodes(setup, parameters)
    peer = rclpy.create_node("camera_bench_driver", namespace=NAMESPACE)
    executor = SingleThreadedExecutor()
    executor.add_node(peer)
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE)
    publishers = {c: peer.create_publisher(Image, f"{NAMESPACE}/{c}/image", qos)
                  for c in CAMERAS}
    frames = camera_frames(Image)
    received = {c: [] for c in CAMERAS}  # (arrival s, latency ms)

    def on_label(camera, msg):
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        received[camera].append((now, (now - stamp) * 1000.0))

    for camera, topic in label_topics.items():
        peer.create_subscription(Image, topic, lambda m, c=camera: on_label(c, m), qos)
    statuses = {}  # the last /diagnostics status of each name

    def on_diagnostics(msg):
        for status in msg.status:
            statuses[status.name] = {kv.key: kv.value for kv in status.values}

    peer.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, qos)

    def spin_for(seconds_left: float, until=None) -> None:
        deadline = time.monotonic() + seconds_left
        while time.monotonic() < deadline and not (until and until()):
            publish_due()
            executor.spin_once(timeout_sec=0.005)

    next_due = {c: time.monotonic() + i / (RATE_HZ * len(CAMERAS))
                for i, c in enumerate(CAMERAS)}

    def publish_due() -> None:
        now = time.monotonic()
        for camera, due in next_due.items():
            if now >= due:
                msg = frames[camera]
                wall = time.time()
                msg.header.stamp.sec = int(wall)
                msg.header.stamp.nanosec = int((wall % 1) * 1e9)
                publishers[camera].publish(msg)
                next_due[camera] = max(due + 1.0 / RATE_HZ, now - 1.0 / RATE_HZ)

    try:
        for name in node_names(setup):
            client = peer.create_client(ChangeState, f"{name}/change_state")
            if not client.wait_for_service(timeout_sec=startup_s):
                raise RuntimeError(f"{name}: no lifecycle service after {startup_s:g} s")
            for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                future = client.call_async(ChangeState.Request(
                    transition=Transition(id=transition)))
                spin_for(startup_s, until=future.done)
                if not future.done() or not future.result().success:
                    raise RuntimeError(f"{name}: transition {transition} failed")
        spin_for(startup_s, until=lambda: all(received.values()))
        if not all(received.values()):
            raise RuntimeError(f"{setup}: not every camera's labels came within "
                               f"{startup_s:g} s")
        spin_for(5.0)  # plans for the steady state settle
        for camera in CAMERAS:
            received[camera].clear()
        memory = []
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            spin_for(1.0)
            sizes = [resident_mb(p.pid) for p in processes]
            if all(size is not None for size in sizes):
                memory.append(sum(sizes))
        elapsed = time.monotonic() - began
    finally:
        peer.destroy_node()
        executor.shutdown()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    cameras = {}
    for camera, samples in received.items():
        latencies = [latency for _, latency in samples]
        # the node's own counts since activate: per camera (one node) or its only camera
        counts = statuses.get(f"swiftseg: camera {camera}") or statuses.get(
            f"swiftseg_{camera}: segmentation") or {}
        cameras[camera] = {
            "node_counts": {key: counts.get(f"frames {key}") for key in (
                "received", "processed", "dropped", "rejected", "failed")}
            | {"lost_before_node": counts.get("frames lost before the node (estimated)")},
            "labels": len(samples),
            "labels_per_s": len(samples) / elapsed,
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
        }
    prefixes = ("swiftseg:",) if setup == "one node" else tuple(
        f"swiftseg_{camera}:" for camera in CAMERAS)
    return {"setup": setup, "processes": len(processes), "seconds": elapsed,
            "resident_mb": float(np.median(memory)) if memory else None,
            "cameras": cameras,
            # every status the node(s) last published: stage and batch times, choices
            "node_statuses": {name: values for name, values in statuses.items()
                              if name.startswith(prefixes)}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="measured seconds per setup (default 30)")
    parser.add_argument("--startup", type=float, default=180.0,
                        help="seconds allowed for the nodes to come up (default 180)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter for every node (default: none, the node "
                        "defaults), e.g. reliability:=reliable")
    parser.add_argument("--fastdds-profile", default=str(DEFAULT_PROFILE), metavar="XML",
                        help="Fast DDS profile for this process and the nodes (default: "
                        "config/fastdds_large_images.xml; '' for the built-in transports)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"  # the profile is Fast DDS's
    if args.fastdds_profile:
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(Path(args.fastdds_profile).resolve())
    else:
        os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy

    rclpy.init(args=[])  # not this script's argv: `--param a:=b` would read as a remap
    try:
        results = [run_setup(setup, args.seconds, args.startup, args.param)
                   for setup in ("one node", "three nodes")]
    finally:
        rclpy.shutdown()
    one, three = results
    summary = {
        "memory_ratio": (one["resident_mb"] / three["resident_mb"]
                         if one["resident_mb"] and three["resident_mb"] else None),
        "latency_p95_ratio": {c: (one["cameras"][c]["latency_p95_ms"]
                                  / three["cameras"][c]["latency_p95_ms"])
                              for c in CAMERAS if one["cameras"][c]["latency_p95_ms"]
                              and three["cameras"][c]["latency_p95_ms"]},
        "labels_ratio": {c: one["cameras"][c]["labels_per_s"]
                         / max(three["cameras"][c]["labels_per_s"], 1e-9) for c in CAMERAS},
    }
    print("| setup | processes | resident MB | camera | labels/s | latency p50 ms | "
          "latency p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        for camera, entry in result["cameras"].items():
            print(f"| {result['setup']} | {result['processes']} | "
                  f"{result['resident_mb']:.0f} | {camera} | {entry['labels_per_s']:.2f} | "
                  f"{entry['latency_p50_ms']:.1f} | {entry['latency_p95_ms']:.1f} |")
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summary": summary,
                                               "fastdds_profile": args.fastdds_profile,
                                               "command": " ".join(sys.argv)}, indent=2)
                                   + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
