"""launch/seg.launch.py checked without ROS 2: it compiles, declares the documented
arguments, and names the executable, parameter file and topics the package installs.

The launch file imports `launch` and `launch_ros`, which exist only in a ROS 2
installation, so it is read as Python source (ast) here; test_launch_seg.py runs it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "seg.launch.py"
DOCS = ROOT / "docs" / "ros.md"
DOCUMENTED_ARGUMENTS = (
    "params_file", "network", "weights", "device", "namespace", "node_name", "image_topic",
    "autostart",
)


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(encoding="utf-8"), filename=str(LAUNCH_FILE))


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def _declared(tree: ast.Module) -> dict[str, dict[str, object]]:
    """Launch argument name -> its literal keyword arguments (non-literals left out)."""
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        keywords = {}
        for keyword in call.keywords:
            try:
                keywords[keyword.arg] = ast.literal_eval(keyword.value)
            except ValueError:
                continue
        declared[ast.literal_eval(call.args[0])] = keywords
    return declared


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


def test_launch_file_declares_exactly_the_documented_arguments(tree):
    assert sorted(_declared(tree)) == sorted(DOCUMENTED_ARGUMENTS)


def test_every_launch_argument_has_a_description(tree):
    for name, keywords in _declared(tree).items():
        assert str(keywords.get("description", "")).strip(), f"{name} has no description"


def test_overridable_parameters_default_to_empty_so_the_parameter_file_wins(tree):
    declared = _declared(tree)
    for name in _constant(tree, "OVERRIDABLE_PARAMETERS"):
        assert declared[name].get("default_value") == "", name


def test_autostart_defaults_to_true_and_node_name_to_swiftseg(tree):
    declared = _declared(tree)
    assert declared["autostart"]["default_value"] == "true"
    assert declared["node_name"]["default_value"] == "swiftseg"


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


def test_every_launch_argument_is_in_the_ros_docs(tree):
    docs = DOCS.read_text(encoding="utf-8")
    for name in _declared(tree):
        assert f"`{name}`" in docs, f"launch argument {name} is not documented in {DOCS.name}"
