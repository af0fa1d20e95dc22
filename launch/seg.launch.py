"""Launch the swiftseg lifecycle node and drive it to active: configure, then activate.

    ros2 launch swiftseg_ros seg.launch.py image_topic:=/camera/image_raw
    ros2 launch swiftseg_ros seg.launch.py weights:=fastscnn_synth.pt device:=cuda \
        transport:=compressed input_size:=1280x720
    ros2 launch swiftseg_ros seg.launch.py cameras:=[front,down]   # one node, two cameras
    ros2 launch swiftseg_ros seg.launch.py --show-args      # every accepted argument

The arguments come from `swiftseg_ros.ros.params.launch_arguments()`, the same definitions
the node declares its parameters from and the docs tables are generated from. Arguments
that set a parameter are empty by default and then keep the parameter file's value (an
empty string passed on would overwrite it); a given value is checked and converted to the
parameter's type here, so `depth:=x` fails the launch with one line. Launch ignores
arguments it does not declare: a node parameter given as one (`threads:=2`) is passed to
the node all the same (with a line saying so), and a given argument that looks like a
misspelling of one of these (`transprot:=compressed`) is reported as a warning.

With autostart:=true (the default) this file requests the configure transition once the
node's lifecycle services are up and the activate transition when configure has
succeeded; a failed transition is reported in the launch output. The launch file drives
the transitions itself (EmitEvent(ChangeState) and an OnStateTransition handler) because
`LifecycleNode(autostart=...)` exists only in newer Jazzy releases of launch_ros, not in
Humble.
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

from swiftseg_ros.ros.params import (
    TRUE_WORDS,
    launch_arguments,
    launch_parameter_overrides,
    misspelled_launch_arguments,
    subscribed_image_topic,
    transport_in_parameter_file,
)

PACKAGE = "swiftseg_ros"
EXECUTABLE = "swiftseg_node"


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "seg.yaml")
    return LaunchDescription([
        *(DeclareLaunchArgument(
            argument.name,
            default_value=default_params if argument.name == "params_file" else argument.default,
            description=argument.description)
          for argument in launch_arguments()),
        OpaqueFunction(function=_launch_setup),
    ])


def _launch_setup(context):
    """The node and its lifecycle driving, built from the resolved launch arguments."""
    def argument(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    given = {name: str(value) for name, value in context.launch_configurations.items()}
    warnings = [LogInfo(msg=f"WARNING: {line}") for line in misspelled_launch_arguments(given)]
    # Python values of the parameter's type: launch_ros writes a str parameter as its YAML
    # dump (a quoted scalar where needed), so `weights:=2024` stays a string
    # (normalize_parameters.py), and `depth:=3` becomes an integer here. Node parameters
    # that are not arguments of this file (threads:=2) are passed through, with a line.
    overrides, passed_through = launch_parameter_overrides(given)
    notes = [LogInfo(msg=line) for line in passed_through]
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
    transport = overrides.get("transport") or transport_in_parameter_file(
        argument("params_file"), name) or "raw"
    # what the node really subscribes: the compressed transport adds /compressed
    subscribed = subscribed_image_topic(image_topic, transport)
    namespace = argument("namespace").strip("/")
    full_name = f"/{namespace}/{name}" if namespace else f"/{name}"
    actions = [
        *warnings,
        *notes,
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
            entities=[LogInfo(msg=f"{full_name}: active, segmenting "
                                  f"{argument('cameras') or subscribed}")])),
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
