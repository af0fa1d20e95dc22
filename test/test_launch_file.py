"""launch/seg.launch.py checked without ROS 2: it compiles, declares the arguments of
`params.launch_arguments()` (documented in generated tables), converts and checks their
values, reports misspelled ones, and names the executable, parameter file and topics the
package installs.

The launch file imports `launch` and `launch_ros`, which exist only in a ROS 2
installation, so it is read as Python source (ast) here; test_launch_seg.py runs it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.ros.params import (
    BY_NAME,
    LAUNCH_TABLE_BEGIN,
    LAUNCH_TABLE_END,
    launch_argument_value,
    launch_arguments,
    launch_parameter_overrides,
    marked_block,
    misspelled_launch_arguments,
    render_launch_table,
    subscribed_image_topic,
    transport_in_parameter_file,
)

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "seg.launch.py"
DOCS = ROOT / "docs" / "ros.md"
# what the issue asked for at least: the settings a ROS user changes at launch
COMMONLY_CHANGED = ("transport", "reliability", "depth", "input_size", "device", "precision",
                    "weights", "network")


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(encoding="utf-8"), filename=str(LAUNCH_FILE))


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def _constant(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{LAUNCH_FILE.name} has no module constant {name}")


def test_launch_file_compiles_as_python():
    compile(LAUNCH_FILE.read_text(encoding="utf-8"), str(LAUNCH_FILE), "exec")


def test_launch_file_defines_generate_launch_description(tree):
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in names


def test_launch_file_declares_every_argument_of_the_definitions(tree):
    (declare,) = _calls(tree, "DeclareLaunchArgument")
    loop = next(node for node in ast.walk(tree)
                if isinstance(node, ast.GeneratorExp) and node.elt is declare)
    assert ast.unparse(loop.generators[0].iter) == "launch_arguments()"


def test_commonly_changed_settings_are_launch_arguments():
    names = {argument.name for argument in launch_arguments()}
    assert set(COMMONLY_CHANGED) <= names
    assert {"params_file", "namespace", "node_name", "image_topic", "autostart"} <= names


def test_every_launch_argument_has_a_description():
    for argument in launch_arguments():
        assert argument.description.strip(), argument.name


def test_parameter_arguments_default_to_empty_so_the_parameter_file_wins():
    for argument in launch_arguments():
        if argument.parameter:
            assert argument.default == "" and argument.name in BY_NAME, argument.name


def test_autostart_defaults_to_true_and_node_name_to_swiftseg():
    defaults = {argument.name: argument.default for argument in launch_arguments()}
    assert defaults["autostart"] == "true" and defaults["node_name"] == "swiftseg"


@pytest.mark.parametrize("name,text,value", [
    ("depth", "3", 3),
    ("publish_overlay", "True", True),
    ("publish_overlay", "off", False),
    ("transport", "compressed", "compressed"),
    ("input_size", "1280x720", "1280x720"),
    ("weights", "2024", "2024"),
])
def test_launch_argument_text_becomes_the_parameters_value(name, text, value):
    converted = launch_argument_value(name, text)
    assert converted == value and type(converted) is type(value)


@pytest.mark.parametrize("name,text,words", [
    ("depth", "deep", "launch argument depth:='deep' is not allowed: expected an integer, "
                      "1 to 100"),
    ("depth", "0", "(parameter 'depth' is 0: allowed 1 to 100)"),
    ("transport", "theora", "expected a string, raw, compressed"),
    ("publish_overlay", "maybe", "expected a bool, true, false"),
])
def test_bad_launch_argument_value_is_one_line(name, text, words):
    with pytest.raises(ConfigError) as caught:
        launch_argument_value(name, text)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_misspelled_launch_argument_is_reported_with_the_right_name():
    given = {"transprot": "compressed", "image_topic": "/cam", "use_sim_time": "true"}
    assert misspelled_launch_arguments(given) == [
        "launch argument 'transprot' is not one of seg.launch.py's and is ignored: did you "
        "mean 'transport'? (ros2 launch swiftseg_ros seg.launch.py --show-args lists them)"]


def test_node_parameters_given_as_launch_arguments_are_passed_through_with_a_line():
    # a real ROS 2: `threads:=2 upsample:=labels` were ignored without a word
    given = {"threads": "2", "upsample": "labels", "transport": "compressed", "depth": "",
             "image_topic": "/cam", "use_sim_time": "true", "params_file": "/p.yaml"}
    overrides, lines = launch_parameter_overrides(given)
    assert overrides == {"threads": 2, "upsample": "labels", "transport": "compressed"}
    assert lines == [
        "launch argument threads:=2 is not one of seg.launch.py's own: passed to the node "
        "as its parameter 'threads'",
        "launch argument upsample:=labels is not one of seg.launch.py's own: passed to the "
        "node as its parameter 'upsample'"]
    assert misspelled_launch_arguments(given) == []


def test_a_passed_through_parameter_with_a_bad_value_fails_the_launch_in_one_line():
    with pytest.raises(ConfigError) as caught:
        launch_parameter_overrides({"threads": "many"})
    assert "threads:='many'" in str(caught.value) and "\n" not in str(caught.value)


def test_the_launch_file_takes_its_overrides_and_lines_from_the_definitions(tree):
    assert _calls(tree, "launch_parameter_overrides")
    assert _calls(tree, "subscribed_image_topic")


@pytest.mark.parametrize("transport,topic", [("raw", "/camera/image_raw"),
                                             ("compressed", "/camera/image_raw/compressed")])
def test_the_active_line_names_the_topic_really_subscribed(transport, topic):
    # a real ROS 2 logged "segmenting /camera/image_raw" while subscribing .../compressed
    assert subscribed_image_topic("/camera/image_raw", transport) == topic


def test_transport_is_read_from_the_parameter_file_for_this_node(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    transport: raw\n"
                    "/robot/swiftseg:\n  ros__parameters:\n    transport: compressed\n"
                    "other_node:\n  ros__parameters:\n    transport: raw\n")
    assert transport_in_parameter_file(str(path), "swiftseg") == "compressed"
    assert transport_in_parameter_file(str(tmp_path / "missing.yaml"), "swiftseg") == ""
    shipped = ROOT / "config" / "seg.yaml"
    assert transport_in_parameter_file(str(shipped), "swiftseg") == BY_NAME["transport"].default


def test_ros_docs_launch_table_is_the_rendered_one():
    assert marked_block(DOCS.read_text(encoding="utf-8"), LAUNCH_TABLE_BEGIN,
                        LAUNCH_TABLE_END) == render_launch_table()


def test_readme_launch_table_is_the_rendered_one():
    assert marked_block((ROOT / "README.md").read_text(encoding="utf-8"), LAUNCH_TABLE_BEGIN,
                        LAUNCH_TABLE_END) == render_launch_table()


def test_launch_executable_is_a_console_script_of_setup_py(tree):
    executable = _constant(tree, "EXECUTABLE")
    setup_text = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert re.search(rf'"{re.escape(executable)}\s*=\s*swiftseg_ros\.ros\.node:main"', setup_text)


def test_launch_package_is_the_package_xml_name(tree):
    package_xml = (ROOT / "package.xml").read_text(encoding="utf-8")
    assert f"<name>{_constant(tree, 'PACKAGE')}</name>" in package_xml


def test_default_parameter_file_ships_in_config(tree):
    source = LAUNCH_FILE.read_text(encoding="utf-8")
    assert '"config", "seg.yaml"' in source
    assert (ROOT / "config" / "seg.yaml").is_file()


def test_launch_uses_a_lifecycle_node_driven_by_change_state_events(tree):
    assert _calls(tree, "LifecycleNode")
    assert _calls(tree, "ChangeState")
    starts_and_goals = {
        (
            next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "start_state"),
            next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "goal_state"),
        )
        for call in _calls(tree, "OnStateTransition")
    }
    # activate after a successful configure; report a failed configure
    assert ("configuring", "inactive") in starts_and_goals
    assert ("configuring", "unconfigured") in starts_and_goals


def test_what_the_launch_file_imports_of_this_package_needs_neither_torch_nor_opencv():
    # `ros2 launch` runs on the system Python, which need not have PyTorch (build section
    # of docs/ros.md: PyTorch may be in a virtual environment only the node uses)
    code = ("import sys, swiftseg_ros.ros.params; "
            "print(sorted(m for m in ('torch', 'cv2', 'numpy', 'rosbags') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout
    assert printed.strip() == "[]"
