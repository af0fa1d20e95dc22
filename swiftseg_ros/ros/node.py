"""The swiftseg ROS 2 lifecycle node: a thin rclpy shell over the segmentation pipeline.

    ros2 run swiftseg_ros swiftseg_node --ros-args -r image:=/camera/image_raw
    ros2 lifecycle set /swiftseg configure && ros2 lifecycle set /swiftseg activate

The only module of the package that imports rclpy. Parameters, message conversion, the
latest-frame worker, diagnostics content and the engine live in ROS-free modules
(`params`, `conversions`, `frames`, `diagnostics`, `pipeline`); this file creates the
ROS entities and moves data between them and the pipeline.

rclpy behaviour this file relies on, read in the ros2/rclpy sources
(rclpy/rclpy/lifecycle/node.py, managed_entity.py, publisher.py; identical in Humble and
Jazzy unless noted):
- `LifecycleNodeMixin.on_activate` / `on_deactivate` are what enable and disable the
  lifecycle publishers (through `SimpleManagedEntity`); an override must return
  `super().on_activate(state)` (`on_deactivate` likewise) or nothing is ever published.
- An exception raised in a transition callback is caught by `__execute_callback`, turned
  into ERROR and not logged (`# TODO(ivanpauno): log sth here`), so every transition here
  catches, logs one line and returns FAILURE itself.
- A disabled `LifecyclePublisher.publish` drops the message silently, so ~/label_info,
  which must go out right after configure, uses a plain (transient-local) publisher.
- Subscriptions and timers are not managed entities: they are created in activate and
  destroyed in deactivate.
- Parameters are declared in the constructor, so `ros2 param list/describe` and
  rqt_reconfigure see them before configure (a lifecycle node is a Node: declaring
  needs no transition). Each is
  declared with `ParameterDescriptor(dynamic_typing=True)` (rcl_interfaces, Galactic and
  later): a value of the wrong type from the parameter file or command line is then
  stored, not raised as InvalidParameterTypeException in the constructor (node.py
  `_apply_descriptor` checks the type only for statically typed parameters), and
  `describe` reports the type of the value held. The type is this node's check instead:
  one line at startup, configure fails with it until `ros2 param set` fixes the value, and
  a set of the wrong type is refused with the same line. An exact integer for a double
  is stored as that double.
- A value outside a descriptor's range is refused by rclpy at declare
  (InvalidParameterValueException); the parameter is then declared with its default
  (`ignore_override=True`) and configure fails with a line naming it until it is set.
- The set-parameters callback is added after declaring, so declaring does not run it.
- Publishing from the worker thread is allowed: `Publisher.publish` holds the publisher
  handle for the call and rcl_publish "is thread safe so long as access to both the
  publisher and the ros_message is synchronized" (ros2/rcl, rcl/include/rcl/publisher.h);
  each message is built and published by one thread only. rcl documents
  `rcl_publisher_get_subscription_count`, which the output check calls from the executor
  thread meanwhile, as thread-safe.

Where Humble and Jazzy differ, and what this file does about it:
- Ctrl-C: Humble's `rclpy.spin` raises KeyboardInterrupt; Jazzy's signal handler shuts
  the context down and spin raises `rclpy.executors.ExternalShutdownException` (the
  class exists in both); `main()` ends cleanly on either.
- Logging: `get_logger().warning(..., throttle_duration_sec=...)` exists in both
  (rclpy/impl/rcutils_logger.py); `warn()`, deprecated in both, is gone from newer rclpy,
  and the throttle's `throttle_time_source_type` changed type after Jazzy, so it is not
  passed.
- The launch file, not `LifecycleNode(autostart=...)` (newer Jazzy launch_ros only),
  drives configure and activate.
- A change_state request for a transition not valid in the current state: rclpy 7.1.x
  (Jazzy) raises RCLError out of the executor (lifecycle/node.py `__change_state` calls
  `trigger_transition_by_id` unchecked), so the node wraps the service's `callback`
  (rclpy's Service calls `srv.callback(request, response)`) and checks the request
  against `_state_machine.available_transitions` first.
- vision_msgs is optional: PyPI's ros-jazzy wheels do not have it; without it there is
  no ~/label_info and one warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

try:  # a real ROS install has it; PyPI's ros-jazzy wheels do not
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:
    LabelInfo = VisionClass = None

from swiftseg_ros.engine import SegmentationEngine
from swiftseg_ros.errors import ConfigError, SwiftsegError
from swiftseg_ros.memory import resident_mb, return_freed_memory
from swiftseg_ros.ros.cameras import camera_topics
from swiftseg_ros.ros.diagnostics import FrameLogGate, to_diagnostic_array
from swiftseg_ros.ros.frames import FrameCounters
from swiftseg_ros.ros.multicamera import MultiCameraPipeline, sum_counters
from swiftseg_ros.ros.params import (
    BY_NAME,
    DEFAULT_NODE_NAME,
    PARAMETERS,
    ParamDef,
    SegParams,
    apply_parameter_changes,
    check_parameter_value,
    engine_config_from_params,
    validate_parameters,
)
from swiftseg_ros.ros.pipeline import (
    SegmentationPipeline,
    camera_info_fields,
    camera_info_topic,
    wanted_outputs,
)
from swiftseg_ros.ros.shutdown import StopRequest, end_process, run_until_stopped
from swiftseg_ros.ros.transport_hint import lost_frames_hint

OUTPUT_NAMES = ("label", "color", "confidence", "overlay")
# How often subscriber counts are read to switch unwatched outputs off: often enough that
# a new viewer gets images within a second, rarely enough to cost nothing per frame.
OUTPUT_CHECK_PERIOD_S = 1.0
# Rejected or failed frames are logged at most this often, each new kind of reason at
# once (they are all counted).
FRAME_LOG_PERIOD_S = 5.0
# How long deactivate waits for the frame in progress before giving up on it.
STOP_TIMEOUT_S = 30.0
# A camera's format before its first frame: what configure prepares for `input_size`.
FIRST_GUESS_FORMAT = {"raw": "rgb8", "compressed": "bgr8"}
# How long main() waits for ROS work before looking at the stop request again.
SPIN_PERIOD_S = 0.1
# How long a signal's close waits for the frame in progress: the process must be gone
# within launch's 5 s SIGINT-to-SIGTERM escalation and a service manager's patience.
SIGNAL_STOP_TIMEOUT_S = 1.5

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

OUTPUT_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def descriptor_for(definition: ParamDef) -> ParameterDescriptor:
    """The rclpy descriptor of one parameter definition.

    No parameter is declared read_only: rclpy would then refuse it even while the node is
    unconfigured, where fixing a bad value and configuring again must work. The lifecycle
    rule (static parameters change only while unconfigured) is the set-parameters
    callback's, with a reason the caller sees. Typing is dynamic (see the module
    docstring); the expected type is in the constraints text.
    """
    when = ("may change while the node runs" if definition.dynamic
            else "changes only while the node is unconfigured")
    descriptor = ParameterDescriptor(
        description=definition.description,
        additional_constraints=(f"type {definition.type_name}; allowed: "
                                f"{definition.allowed()}; {when}"),
        dynamic_typing=True,
    )
    if definition.minimum is not None and definition.maximum is not None:
        if definition.type is int:
            descriptor.integer_range = [IntegerRange(
                from_value=int(definition.minimum), to_value=int(definition.maximum), step=1)]
        elif definition.type is float:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(definition.minimum), to_value=float(definition.maximum),
                step=0.0)]
    return descriptor


class _RosLogHandler(logging.Handler):
    """Forwards the package's Python log records (engine, pipeline) to the node's logger,
    so they reach the console and /rosout like the node's own lines."""

    def __init__(self, logger):
        super().__init__(level=logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        # one call site per severity: rclpy's logger refuses a call site whose severity
        # changes between calls (rcutils_logger.py, "Logger severity cannot be changed")
        if record.levelno >= logging.ERROR:
            self._logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(message)
        else:
            self._logger.info(message)


class SegmentationNode(Node):
    """Lifecycle node: configure builds the engine, activate subscribes and starts the
    worker, deactivate stops both, cleanup and shutdown release the engine."""

    def __init__(self, node_name: str = DEFAULT_NODE_NAME, **kwargs):
        # attribute names stay clear of rclpy's own (Node keeps _timers, _publishers,
        # _subscriptions, _parameters, _descriptors; LifecycleNode _callbacks,
        # _managed_entities, _state_machine): a subclass that reuses one breaks the node
        self._settings: SegParams | None = None  # set exactly while configured
        self._engine: SegmentationEngine | None = None
        self._pipeline: SegmentationPipeline | None = None
        self._output_pubs: dict = {}
        self._camera_info_pub = None
        self._diagnostics_pub = None
        self._label_info_pub = None
        self._image_sub = None
        self._camera_info_sub = None
        self._run_timers: list = []
        self._camera_info: CameraInfo | None = None
        # with the cameras parameter: per camera, its output publishers, its camera_info
        # publisher, its subscriptions and its latest camera_info
        self._camera_pubs: dict[str, dict] = {}
        self._camera_info_pubs: dict = {}
        self._camera_subs: list = []
        self._camera_infos: dict[str, CameraInfo] = {}
        self._computed: tuple[str, ...] = ()
        # parameter name -> why its startup value was refused; configure fails while any
        self._refused_at_startup: dict[str, str] = {}
        # set when a signal's close gave up on a busy worker: it must publish nothing more
        self._abandoned = False
        self._frame_log = FrameLogGate(FRAME_LOG_PERIOD_S)
        # what /diagnostics says to change in the middleware when many frames are lost
        # before the node; logged once per activation as well (a console is read first)
        self._lost_frames_hint = lost_frames_hint(os.environ)
        self._hint_logged = False
        # main() points this at its StopRequest's: a preparation on the executor thread
        # (configure with input_size, camera_info) is then cut short by a signal
        self.interruptible = contextlib.nullcontext
        super().__init__(node_name, **kwargs)
        self._log_handler = _RosLogHandler(self.get_logger())
        logging.getLogger("swiftseg_ros").addHandler(self._log_handler)
        logging.getLogger("swiftseg_ros").setLevel(logging.INFO)
        self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._contain_invalid_transitions()
        if LabelInfo is None:
            distro = os.environ.get("ROS_DISTRO") or "<distro>"
            self.get_logger().warning(
                "vision_msgs is not installed: no ~/label_info (class id -> name); install "
                f"ros-{distro}-vision-msgs to get it")

    # --------------------------------------------------------------- transitions

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            if self._refused_at_startup:
                raise ConfigError(next(iter(self._refused_at_startup.values())))
            params = validate_parameters(
                {p.name: self.get_parameter(p.name).value for p in PARAMETERS})
            # building the engine and preparing it take seconds: a signal cuts them short
            with self.interruptible():
                self._engine = SegmentationEngine(engine_config_from_params(params))
                self._pipeline = self._make_pipeline(params)
                if params.input_size is not None:
                    self._pipeline.prepare(params.input_size.width, params.input_size.height,
                                           FIRST_GUESS_FORMAT[params.transport])
            if params.input_size is None:
                self.get_logger().info(
                    "input_size is empty: the engine is prepared from the camera's camera_info "
                    "if it comes first, else on the first image (the first frame waits: "
                    "seconds on a CPU, docs/ros.md); set input_size to the camera's WxH to "
                    "prepare here")
            self._create_publishers(params.cameras)
            self._publish_label_info()
        except Exception as exc:
            self._release()
            return self._failed("configure", exc)
        self._settings = params
        self._computed = self._engine.outputs
        if params.device == "auto" and not self._engine.on_cuda:
            self.get_logger().warning("device auto: no CUDA GPU visible to PyTorch, running "
                                      "on the CPU (slow); set device to cpu to silence this")
        self.get_logger().info(
            f"configured: {self._engine.network} on {self._engine.device} "
            f"({params.precision}), {self._engine.num_classes} classes, outputs "
            f"{', '.join(params.outputs)}"
            + (f", cameras {', '.join(params.cameras)}" if params.cameras else ""))
        return SUCCESS

    def _make_pipeline(self, params):
        """One camera's pipeline, or with `cameras` the cameras' over the same engine."""
        if params.cameras:
            return MultiCameraPipeline(
                self._engine, Image, params.cameras,
                compressed=params.transport == "compressed",
                publish=self._publish_camera_frame,
                now_s=self._now_s,
                on_rejected=self._log_camera_rejected,
                on_failed=self._log_camera_failed,
                node_name=self.get_name(),
                hardware_id=str(self._engine.device),
                batch_wait_s=params.batch_wait_ms / 1000.0,
                lost_frames_hint=self._lost_frames_hint,
            )
        return SegmentationPipeline(
            self._engine, Image,
            compressed=params.transport == "compressed",
            publish=self._publish_frame,
            now_s=self._now_s,
            on_rejected=self._log_rejected,
            on_failed=self._log_failed,
            diagnostics_name=f"{self.get_name()}: segmentation",
            hardware_id=str(self._engine.device),
            lost_frames_hint=self._lost_frames_hint,
        )

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._pipeline.start()
            if not self._settings.cameras:  # the cameras' reporters are told in start()
                self._pipeline.reporter.subscribed(self._now_s())
            self._subscribe()
            self._hint_logged = False
            self._run_timers = [
                self.create_timer(self._settings.diagnostics_period, self._publish_diagnostics),
                self.create_timer(OUTPUT_CHECK_PERIOD_S, self._update_outputs),
            ]
            topics = ([sub.topic_name for sub in self._camera_subs[::2]] if self._camera_subs
                      else [self._image_sub.topic_name])
            self.get_logger().info(
                f"active: segmenting {', '.join(topics)} "
                f"({self._settings.reliability}, depth {self._settings.depth})")
        except Exception as exc:
            self._stop_processing()
            return self._failed("activate", exc)
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._stop_processing()
        except Exception as exc:
            return self._failed("deactivate", exc)
        self.get_logger().info("inactive: not taking images")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        try:
            self._release()
        except Exception as exc:
            return self._failed("cleanup", exc)
        resident = resident_mb()
        self.get_logger().info("cleaned up: engine released" + (
            f", {resident:.0f} MB resident" if resident is not None else ""))
        return SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        # shutdown may come from active, where no deactivate ran before it
        try:
            self.close()
        except Exception as exc:
            return self._failed("shutdown", exc)
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        # SUCCESS goes back to unconfigured: the node can be configured again
        try:
            self.close()
        except Exception as exc:
            return self._failed("error processing", exc)
        return SUCCESS

    def frame_counters(self) -> FrameCounters:
        """The frames received, processed, dropped, rejected, failed since configure (all
        zero while unconfigured); what /diagnostics reports, for tools such as the soak."""
        if self._pipeline is None:
            return FrameCounters()
        counters = self._pipeline.counters()
        # with cameras: every camera's added up (the per-camera ones are in /diagnostics)
        return sum_counters(counters.values()) if isinstance(counters, dict) else counters

    def close(self) -> None:
        """Stop processing and release the engine (shutdown, error)."""
        self._stop_processing()
        self._release()

    def close_on_signal(self, timeout: float = SIGNAL_STOP_TIMEOUT_S) -> bool:
        """Ctrl-C or SIGTERM in main: stop processing, waiting at most `timeout` for the
        frame in progress. A worker still busy then (preparing a new input size takes
        seconds) is abandoned: it publishes nothing more, the engine it uses is not
        released under it, and main ends the process without waiting for it. True if the
        worker stopped."""
        self._unsubscribe()
        if self._pipeline is not None and not self._pipeline.stop(timeout=timeout):
            self._abandoned = True
            self.get_logger().warning(
                f"the frame in progress did not finish within {timeout:g} s of the stop "
                "request (preparing a new input size?): exiting without it")
            return False
        self._release()
        return True

    def _contain_invalid_transitions(self) -> None:
        """Answer a change_state request for a transition that is not valid in the current
        state with success=false and one warning line. rclpy 7.1.x (Jazzy) raises RCLError
        "Transition is not registered" out of `executor.spin_once` instead, which ends the
        process (ros2/rclpy#1209, fixed upstream by #1319, not in Jazzy's release); two
        launch files driving the same node name send such requests."""
        service = getattr(self, "_service_change_state", None)
        if service is None:  # enable_communication_interface=False: no service
            return
        handle = service.callback

        def on_change_state(request, response):
            wanted = request.transition
            state = self._state_machine.current_state[1]
            valid = [(t[0], t[1]) for t in self._state_machine.available_transitions]
            if any((label == wanted.label) if wanted.label else (tid == wanted.id)
                   for tid, label in valid):
                try:
                    return handle(request, response)
                except _rclpy.RCLError as exc:  # a race with another transition
                    reason = str(exc).splitlines()[0]
            else:
                reason = "not valid in this state"
            what = repr(wanted.label) if wanted.label else f"id {wanted.id}"
            self.get_logger().warning(
                f"change_state refused: transition {what} while {state}: {reason} (valid: "
                f"{', '.join(f'{label} (id {tid})' for tid, label in valid)})")
            response.success = False
            return response

        service.callback = on_change_state

    def destroy_node(self):
        logging.getLogger("swiftseg_ros").removeHandler(self._log_handler)
        return super().destroy_node()

    def _failed(self, transition: str, exc: Exception) -> TransitionCallbackReturn:
        # one line that says what to fix; a SwiftsegError message is written for that
        what = str(exc) if isinstance(exc, SwiftsegError) else f"{type(exc).__name__}: {exc}"
        self.get_logger().error(f"{transition} failed: {what}")
        return FAILURE

    # ------------------------------------------------------------------- set up

    def _declare_parameters(self) -> None:
        """Declare every parameter with its descriptor; a startup value (parameter file,
        command line) that is not allowed is one error line, and configure fails with it
        until the parameter is set right."""
        fqn = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        for definition in PARAMETERS:
            name = definition.name
            try:
                value = self.declare_parameter(name, definition.default,
                                               descriptor_for(definition)).value
            except InvalidParameterValueException as exc:  # out of the descriptor's range
                self.declare_parameter(name, definition.default, descriptor_for(definition),
                                       ignore_override=True)
                self._refuse_at_startup(name, f"parameter {name!r}: {exc}; allowed "
                                              f"{definition.allowed()}", fqn)
                continue
            try:
                stored = check_parameter_value(name, value)
            except ConfigError as exc:
                self._refuse_at_startup(name, str(exc), fqn)
                continue
            if type(stored) is not type(value):  # an exact integer for a double
                self.set_parameters([Parameter(name, value=stored)])

    def _refuse_at_startup(self, name: str, reason: str, fqn: str) -> None:
        self._refused_at_startup[name] = reason
        self.get_logger().error(f"{reason}; configure fails until it is set: ros2 param set "
                                f"{fqn} {name} <value>")

    def _create_publishers(self, cameras: tuple[str, ...] = ()) -> None:
        # all four outputs exist while configured, so the dynamic publish_* switches need
        # no publisher changes while active; an output switched off is never computed
        for camera in cameras:
            topics = camera_topics(camera)
            self._camera_pubs[camera] = {
                name: self.create_lifecycle_publisher(Image, topic, OUTPUT_QOS)
                for name, topic in topics.outputs.items()}
            self._camera_info_pubs[camera] = self.create_lifecycle_publisher(
                CameraInfo, topics.camera_info_out, OUTPUT_QOS)
        if not cameras:
            self._output_pubs = {
                name: self.create_lifecycle_publisher(Image, f"~/{name}", OUTPUT_QOS)
                for name in OUTPUT_NAMES
            }
            self._camera_info_pub = self.create_lifecycle_publisher(
                CameraInfo, "~/camera_info", OUTPUT_QOS)
        self._diagnostics_pub = self.create_lifecycle_publisher(
            DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        if LabelInfo is not None:
            self._label_info_pub = self.create_publisher(LabelInfo, "~/label_info",
                                                         LATCHED_QOS)

    def _publish_label_info(self) -> None:
        """Class id -> name, once per configure; transient-local keeps it for late
        subscribers (the semantic_segmentation_layer for Nav2 reads it with ~/label)."""
        if self._label_info_pub is None:
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        class_map = [VisionClass(class_id=index, class_name=name)
                     for index, name in enumerate(self._engine.class_names)]
        self._label_info_pub.publish(LabelInfo(header=header, class_map=class_map,
                                               threshold=0.0))

    def _subscribe(self) -> None:
        params = self._settings
        reliability = (ReliabilityPolicy.RELIABLE if params.reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(depth=params.depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=reliability)
        compressed = params.transport == "compressed"
        if params.cameras:
            self._subscribe_cameras(params.cameras, compressed, qos)
            return
        self._image_sub = self.create_subscription(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image",
            self._pipeline.offer, qos)
        # the image_transport convention: camera_info next to the image, after remapping
        self._camera_info_sub = self.create_subscription(
            CameraInfo, camera_info_topic(self._image_sub.topic_name, compressed),
            self._on_camera_info, qos)

    def _subscribe_cameras(self, cameras, compressed: bool, qos) -> None:
        """Each camera's image and camera_info, relative names under the camera's name."""
        for camera in cameras:
            topics = camera_topics(camera, compressed)
            self._camera_subs.append(self.create_subscription(
                CompressedImage if compressed else Image, topics.image,
                functools.partial(self._pipeline.offer, camera), qos))
            self._camera_subs.append(self.create_subscription(
                CameraInfo, topics.camera_info,
                functools.partial(self._on_camera_info_of, camera), qos))

    def _stop_processing(self) -> None:
        """Destroy the subscriptions and timers, then let the frame in progress finish."""
        self._unsubscribe()
        if self._pipeline is not None and not self._pipeline.stop(timeout=STOP_TIMEOUT_S):
            raise SwiftsegError(
                f"the frame in progress did not finish within {STOP_TIMEOUT_S:g} s; the "
                "worker will stop after it")

    def _unsubscribe(self) -> None:
        """Destroy the subscriptions and timers: no new frames, no more reports."""
        for timer in self._run_timers:
            self.destroy_timer(timer)
        self._run_timers = []
        for subscription in (self._image_sub, self._camera_info_sub, *self._camera_subs):
            if subscription is not None:
                self.destroy_subscription(subscription)
        self._image_sub = self._camera_info_sub = None
        self._camera_subs = []

    def _release(self) -> None:
        """Destroy the publishers and release the engine and its device memory."""
        camera_pubs = [pub for pubs in self._camera_pubs.values() for pub in pubs.values()]
        for publisher in (*self._output_pubs.values(), self._camera_info_pub,
                          self._diagnostics_pub, *camera_pubs,
                          *self._camera_info_pubs.values()):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        if self._label_info_pub is not None:
            self.destroy_publisher(self._label_info_pub)
        self._output_pubs = {}
        self._camera_pubs = {}
        self._camera_info_pubs = {}
        self._camera_info_pub = self._diagnostics_pub = self._label_info_pub = None
        self._pipeline = None
        self._camera_info = None
        self._camera_infos = {}
        if self._engine is not None:
            self._engine.release()
            self._engine = None
            return_freed_memory()  # the freed buffers back to the system, not to malloc
        self._settings = None

    # ------------------------------------------------------------------ running

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_camera_info(self, msg: CameraInfo) -> None:
        first, self._camera_info = self._camera_info is None, msg
        if first and self._settings.input_size is None and msg.width and msg.height:
            # the camera's size before its first image: prepare now rather than stall the
            # first frame (a frame that came first has prepared the engine already)
            with self.interruptible():
                prepared = self._pipeline.prepare_unless_prepared(
                    msg.width, msg.height, FIRST_GUESS_FORMAT[self._settings.transport])
            if prepared:
                self.get_logger().info(
                    f"prepared for {msg.width}x{msg.height} from camera_info, before the first "
                    "image")

    def _publish_frame(self, segmented, messages: dict) -> None:
        """Worker thread: publish one frame's outputs and, if the camera has one, its
        camera_info with the same header (scaled when the masks are network-sized)."""
        if self._abandoned:
            return
        switched_on = self._settings.outputs
        for name, message in messages.items():
            if name in switched_on:
                self._output_pubs[name].publish(message)
        info = self._camera_info
        if info is not None:
            width, height = segmented.output_size()
            self._camera_info_pub.publish(
                CameraInfo(**camera_info_fields(info, segmented.header, width, height)))

    def _on_camera_info_of(self, camera: str, msg: CameraInfo) -> None:
        first = camera not in self._camera_infos
        self._camera_infos[camera] = msg
        if first and self._settings.input_size is None and msg.width and msg.height:
            # each camera's size before its first image (a size prepared already is kept)
            with self.interruptible():
                prepared = self._pipeline.prepare_camera(
                    camera, msg.width, msg.height, FIRST_GUESS_FORMAT[self._settings.transport])
            if prepared:
                self.get_logger().info(f"camera {camera}: prepared for {msg.width}x"
                                       f"{msg.height} from camera_info, before its first image")

    def _publish_camera_frame(self, camera: str, segmented, messages: dict) -> None:
        """Worker thread: one camera's frame on that camera's topics, its camera_info too
        (if the camera has one), all with the frame's own header."""
        if self._abandoned:
            return
        switched_on = self._settings.outputs
        publishers = self._camera_pubs[camera]
        for name, message in messages.items():
            if name in switched_on:
                publishers[name].publish(message)
        info = self._camera_infos.get(camera)
        if info is not None:
            width, height = segmented.output_size()
            self._camera_info_pubs[camera].publish(
                CameraInfo(**camera_info_fields(info, segmented.header, width, height)))

    def _update_outputs(self) -> None:
        """Timer: compute only the switched-on outputs that someone subscribes to (on
        any camera's topic: one engine computes the same outputs for every camera)."""
        counts = {name: pub.get_subscription_count() for name, pub in self._output_pubs.items()}
        for publishers in self._camera_pubs.values():
            for name, pub in publishers.items():
                counts[name] = counts.get(name, 0) + pub.get_subscription_count()
        wanted = wanted_outputs(self._settings.outputs, counts)
        if wanted != self._computed:
            self._pipeline.request_outputs(wanted)
            self._computed = wanted
            self.get_logger().info(f"computing {', '.join(wanted)} (outputs with subscribers)")

    def _publish_diagnostics(self) -> None:
        params = self._settings
        report = self._pipeline.reports if params.cameras else self._pipeline.report
        status = report(latency_budget_ms=params.latency_budget_ms,
                        min_output_hz=params.min_output_hz)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        self._diagnostics_pub.publish(
            to_diagnostic_array(status, header, DiagnosticArray, DiagnosticStatus, KeyValue))
        if not self._hint_logged:
            for item in status if isinstance(status, list) else [status]:
                if self._lost_frames_hint in item.message:
                    self.get_logger().warning(f"{item.name}: {item.message}")
                    self._hint_logged = True
                    break

    # each new kind of reason at once, repeats at most one line per camera every 5 s
    # (all are counted, diagnostics.FrameLogGate)
    def _log_rejected(self, reason: str) -> None:
        line = self._frame_log.line(f"image rejected: {reason}", reason)
        if line is not None:
            self.get_logger().warning(line)

    def _log_failed(self, exc: BaseException) -> None:
        line = self._frame_log.line(f"frame failed: {type(exc).__name__}: {exc}")
        if line is not None:
            self.get_logger().error(line)

    def _log_camera_rejected(self, camera: str, reason: str) -> None:
        line = self._frame_log.line(f"camera {camera}: image rejected: {reason}", reason,
                                    key=camera)
        if line is not None:
            self.get_logger().warning(line)

    def _log_camera_failed(self, camera: str, exc: BaseException) -> None:
        what = f"{type(exc).__name__}: {exc}"
        line = self._frame_log.line(f"camera {camera}: frame failed: {what}", what,
                                    key=camera)
        if line is not None:
            self.get_logger().error(line)

    # --------------------------------------------------------------- parameters

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """While configured: refuse static parameters with a reason, check and apply
        dynamic ones at once. While unconfigured: check each value on its own (type,
        range, choices); configure checks how they combine."""
        changes = {p.name: p.value for p in parameters if p.name in BY_NAME}
        if not changes:
            return SetParametersResult(successful=True)
        current = self._settings
        try:
            if current is None:
                for name, value in changes.items():
                    check_parameter_value(name, value)
            else:
                updated = apply_parameter_changes(current, changes, configured=True)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for name in changes:
            self._refused_at_startup.pop(name, None)
        if current is None:
            return SetParametersResult(successful=True)
        self._settings = updated
        if updated.batch_wait_ms != current.batch_wait_ms and current.cameras:
            self._pipeline.set_batch_wait(updated.batch_wait_ms / 1000.0)
        if updated.overlay_alpha != current.overlay_alpha:
            self._pipeline.request_overlay_alpha(updated.overlay_alpha)
        if updated.outputs != current.outputs:
            self._update_outputs()
        return SetParametersResult(successful=True)


def main(args=None) -> int:
    # no rclpy signal handlers: they would shut the context down under the worker
    # (shutdown.py); StopRequest's handlers end the spin loop and the close runs in order
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    with StopRequest() as stop:
        node = SegmentationNode()
        node.interruptible = stop.interruptible
        executor = SingleThreadedExecutor()
        executor.add_node(node)

        def shutdown_context() -> None:
            if rclpy.ok():
                rclpy.shutdown()

        run_until_stopped(
            spin_once=lambda: executor.spin_once(timeout_sec=SPIN_PERIOD_S),
            keep_going=rclpy.ok,
            stop=stop,
            close_steps=(node.close_on_signal, executor.shutdown, node.destroy_node,
                         shutdown_context),
            ended_by=(ExternalShutdownException,),
        )
        # closed in order: end now, before a second signal (launch's own SIGINT, 0.9 s
        # after the process group's) can kill the interpreter's teardown, and without
        # waiting for a worker abandoned in a preparation
        end_process(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
