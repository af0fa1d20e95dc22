"""Launch the swiftseg lifecycle node and drive it to active: configure, then activate.

    ros2 launch swiftseg_ros seg.launch.py image_topic:=/camera/image_raw
    ros2 launch swiftseg_ros seg.launch.py weights:=fastscnn_synth.pt device:=cuda

Arguments left empty keep the parameter file's value (an empty string passed on would
overwrite it). With autostart:=true (the default) this file requests the configure
transition once the node's lifecycle services are up and the activate transition when
configure has succeeded; a failed transition is reported in the launch output. The
launch file drives the transitions itself (EmitEvent(ChangeState) and an
OnStateTransition handler) because `LifecycleNode(autostart=...)` exists only in newer
Jazzy releases of launch_ros, not in Humble.
"""

import os

# `launch.launch_description`, not `launch`: this repository's launch/ folder would make
# import sorters take a bare `launch` for a local package
from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "swiftseg_ros"
EXECUTABLE = "swiftseg_node"
# Parameters a launch argument may override; empty means "keep the parameter file's".
OVERRIDABLE_PARAMETERS = ("network", "weights", "device")
TRUE_WORDS = ("true", "1", "yes", "on")


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "seg.yaml")
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=default_params,
            description="ROS 2 parameter file for the node (default: the installed "
                        "config/seg.yaml)"),
        DeclareLaunchArgument(
            "network", default_value="",
            description="network name (fastscnn, swiftnet_rn18, swiftnet_mnv2, "
                        "swiftnet_rn18_pyramid); empty keeps the parameter file's"),
        DeclareLaunchArgument(
            "weights", default_value="",
            description="checkpoint file (.pt): absolute, relative to the working "
                        "directory, or in the package's models/; empty keeps the "
                        "parameter file's"),
        DeclareLaunchArgument(
            "device", default_value="",
            description="cpu, cuda or cuda:N; empty keeps the parameter file's"),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="namespace of the node (its topics become /<namespace>/<node_name>/...)"),
        DeclareLaunchArgument(
            "node_name", default_value="swiftseg",
            description="name of the node"),
        DeclareLaunchArgument(
            "image_topic", default_value="image",
            description="camera image topic the node's input `image` is remapped to "
                        "(camera_info is read next to it)"),
        DeclareLaunchArgument(
            "autostart", default_value="true",
            description="true: configure and activate the node; false: leave it "
                        "unconfigured for `ros2 lifecycle set`"),
        OpaqueFunction(function=_launch_setup),
    ])


def _launch_setup(context):
    """The node and its lifecycle driving, built from the resolved launch arguments."""
    def argument(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    # Plain str values: launch_ros writes a str parameter as its YAML dump (a quoted
    # scalar where needed), so `weights:=2024` stays a string (normalize_parameters.py).
    overrides = {name: argument(name) for name in OVERRIDABLE_PARAMETERS if argument(name)}
    parameters = [argument("params_file")]
    if overrides:
        parameters.append(overrides)
    image_topic = argument("image_topic") or "image"
    node = LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=argument("node_name"),
        # launch_ros requires `namespace` for LifecycleNode (Humble and Jazzy); '' is the root
        namespace=argument("namespace"),
        parameters=parameters,
        # ROS 2 remaps whole names, so the compressed transport's topic needs its own rule
        remappings=[("image", image_topic), ("image/compressed", image_topic + "/compressed")],
        output="screen",
    )

    def change_state(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    name = argument("node_name")
    namespace = argument("namespace").strip("/")
    full_name = f"/{namespace}/{name}" if namespace else f"/{name}"
    actions = [
        # A failed configure goes configuring -> unconfigured; the node has logged why.
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="configuring", goal_state="unconfigured",
            entities=[LogInfo(msg=(
                f"{full_name}: configure FAILED (the node's error line above says what to "
                f"fix); after fixing it: ros2 lifecycle set {full_name} configure"))])),
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="activating", goal_state="inactive",
            entities=[LogInfo(msg=(
                f"{full_name}: activate FAILED (see the node's error line above); retry "
                f"with: ros2 lifecycle set {full_name} activate"))])),
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="activating", goal_state="active",
            entities=[LogInfo(msg=f"{full_name}: active, segmenting {image_topic}")])),
    ]
    autostart = argument("autostart").lower() in TRUE_WORDS
    if autostart:
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
            entities=[change_state(Transition.TRANSITION_ACTIVATE)],
            # only the launch's own configure is followed by activate; a later manual
            # cleanup + configure leaves the node inactive as asked
            handle_once=True)))
    actions.append(node)
    if autostart:
        # launch_ros waits for the node's change_state service before sending this
        actions.append(change_state(Transition.TRANSITION_CONFIGURE))
    return actions
