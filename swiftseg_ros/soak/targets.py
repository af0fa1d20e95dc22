"""What the soak drives: the node itself under rclpy in this process (its subscription,
worker, publishers and lifecycle, over Fast DDS or whatever rmw is set), or, where rclpy is
missing, the same `SegmentationPipeline` the node wraps, without ROS.

Both take messages from the synthetic camera, report every output frame's header stamp to
`on_output` (from any thread), switch outputs, deactivate and activate, and give the
node's frame counters. Construction configures (the engine is built and prepared then);
`start()` activates.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from swiftseg_ros.errors import ConfigError, SwiftsegError
from swiftseg_ros.ros.frames import FrameCounters

OUTPUTS_WATCHED = ("label", "color", "overlay")


class SoakFailure(SwiftsegError):
    """The node did not survive something the soak did to it (a transition failed)."""


def stamp_key(stamp) -> tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


def rclpy_available() -> bool:
    return importlib.util.find_spec("rclpy") is not None


class PipelineTarget:
    """The node's pipeline without ROS: rosbags message classes, the worker thread, the
    same decode/segment/publish path; 'publishing' reports the stamp."""

    kind = "pipeline (no ROS)"

    def __init__(self, params: Mapping[str, Any], on_output: Callable[[tuple], None]):
        from rosbags.typesys import Stores, get_typestore

        from swiftseg_ros.engine import SegmentationEngine
        from swiftseg_ros.ros.params import engine_config_from_params, validate_parameters
        from swiftseg_ros.ros.pipeline import SegmentationPipeline

        types = get_typestore(Stores.ROS2_HUMBLE).types
        self.image_cls = types["sensor_msgs/msg/Image"]
        self.compressed_cls = types["sensor_msgs/msg/CompressedImage"]
        self._time = types["builtin_interfaces/msg/Time"]
        self._header_cls = types["std_msgs/msg/Header"]
        self.settings = validate_parameters(params)
        self.compressed = self.settings.transport == "compressed"
        self.engine = SegmentationEngine(engine_config_from_params(self.settings))
        self._outputs = tuple(self.settings.outputs)
        self.pipeline = SegmentationPipeline(
            self.engine, self.image_cls, compressed=self.compressed,
            publish=lambda segmented, _messages: on_output(stamp_key(segmented.header.stamp)),
            diagnostics_name="soak: segmentation", hardware_id=str(self.engine.device))

    def header(self, sec: int, nanosec: int, frame_id: str):
        return self._header_cls(stamp=self._time(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def start(self) -> None:
        self.pipeline.start()

    def send(self, msg) -> None:
        self.pipeline.offer(msg)

    def poll(self, timeout_s: float) -> None:
        if timeout_s > 0:
            time.sleep(timeout_s)

    def camera_down(self) -> None:
        """No publisher to destroy without ROS: the camera is silent until camera_up."""

    def camera_up(self) -> None:
        """See camera_down."""

    def set_outputs(self, color: bool, overlay: bool) -> None:
        wanted = ["label"] + (["color"] if color else []) + (["overlay"] if overlay else [])
        self.pipeline.request_outputs(wanted)

    def deactivate(self) -> None:
        if not self.pipeline.stop(timeout=60.0):
            raise SoakFailure("deactivate: the frame in progress did not finish in 60 s")

    def activate(self) -> None:
        self.pipeline.start()

    def counters(self) -> FrameCounters:
        return self.pipeline.counters()

    def close(self) -> None:
        self.pipeline.stop(timeout=60.0)
        self.engine.release()


class NodeTarget:
    """The lifecycle node under rclpy, in this process, with a peer node as the camera and
    the consumers of label, color and overlay (so that the node computes them). Both are
    spun by `poll()` on the caller's thread; the node's worker publishes from its own."""

    kind = "node (rclpy in-process)"

    def __init__(self, params: Mapping[str, Any], on_output: Callable[[tuple], None]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.lifecycle import TransitionCallbackReturn
        from rclpy.parameter import Parameter
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Header

        from swiftseg_ros.ros.node import SegmentationNode
        from swiftseg_ros.ros.params import validate_parameters

        # the soak's node and camera talk over this host only, unless told otherwise
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self._rclpy = rclpy
        self._parameter = Parameter
        self._success = TransitionCallbackReturn.SUCCESS
        self.image_cls, self.compressed_cls, self._header_cls = Image, CompressedImage, Header
        self.settings = validate_parameters(params)
        self.compressed = self.settings.transport == "compressed"
        namespace = f"/swiftseg_soak_{os.getpid()}"
        # no rclpy signal handlers: Ctrl-C is a KeyboardInterrupt that closes the node in
        # order (the CLI exits 130), not a context shut down under the loop
        rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = SegmentationNode(
                namespace=namespace,
                parameter_overrides=[Parameter(name, value=value)
                                     for name, value in params.items()])
            if self.node.trigger_configure() != self._success:
                raise ConfigError("the node did not configure (its error line above says why)")
        except BaseException:
            rclpy.shutdown()
            raise
        self.peer = rclpy.create_node("soak_camera", namespace=namespace)
        self._qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                               reliability=ReliabilityPolicy.RELIABLE)
        self._topic = "image/compressed" if self.compressed else "image"
        self._camera = None
        self.camera_up()
        node_path = f"{namespace}/{self.node.get_name()}"
        for name in OUTPUTS_WATCHED:
            callback = ((lambda msg: on_output(stamp_key(msg.header.stamp)))
                        if name == "label" else (lambda msg: None))
            self.peer.create_subscription(Image, f"{node_path}/{name}", callback, self._qos)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)

    def header(self, sec: int, nanosec: int, frame_id: str):
        header = self._header_cls(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        return header

    def start(self) -> None:
        self.activate()

    def send(self, msg) -> None:
        if self._camera is not None:
            self._camera.publish(msg)

    def poll(self, timeout_s: float) -> None:
        self.executor.spin_once(timeout_sec=max(timeout_s, 0.0))

    def camera_down(self) -> None:
        self.peer.destroy_publisher(self._camera)
        self._camera = None

    def camera_up(self) -> None:
        cls = self.compressed_cls if self.compressed else self.image_cls
        self._camera = self.peer.create_publisher(cls, self._topic, self._qos)

    def set_outputs(self, color: bool, overlay: bool) -> None:
        results = self.node.set_parameters([
            self._parameter("publish_color", value=color),
            self._parameter("publish_overlay", value=overlay)])
        refused = [r.reason for r in results if not r.successful]
        if refused:
            raise SoakFailure(f"set_parameters refused: {refused[0]}")

    def deactivate(self) -> None:
        if self.node.trigger_deactivate() != self._success:
            raise SoakFailure("deactivate failed (the node's error line says why)")

    def activate(self) -> None:
        if self.node.trigger_activate() != self._success:
            raise SoakFailure("activate failed (the node's error line says why)")

    def counters(self) -> FrameCounters:
        return self.node.frame_counters()

    def close(self) -> None:
        try:
            self.node.close()
            self.executor.shutdown()
            self.peer.destroy_node()
            self.node.destroy_node()
        finally:
            if self._rclpy.ok():
                self._rclpy.shutdown()


def make_target(params: Mapping[str, Any], on_output: Callable[[tuple], None], *,
                ros: bool | None = None):
    """The node under rclpy where rclpy imports (or `ros=True`), else the pipeline."""
    if ros is None:
        ros = rclpy_available()
    return (NodeTarget if ros else PipelineTarget)(params, on_output)
