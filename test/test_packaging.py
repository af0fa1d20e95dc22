"""The package installs both ways: colcon (ament_python) and pip in a plain venv."""

import ast
import configparser
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def script_dirs() -> list[Path]:
    """Where the console scripts may be: beside the interpreter (pip, a virtual environment)
    or in <prefix>/lib/swiftseg_ros for every prefix of a sourced ROS 2 workspace (colcon
    installs them there for `ros2 run`; `colcon test` sets AMENT_PREFIX_PATH)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [Path(sys.executable).parent, *(Path(p) / "lib" / "swiftseg_ros" for p in prefixes)]


def test_console_scripts_are_installed_where_pip_or_colcon_puts_them():
    # setup.cfg redirects scripts to lib/swiftseg_ros for ROS; pip must ignore that.
    dirs = script_dirs()
    for tool in ("swiftseg-models", "swiftseg-bench", "swiftseg-replay", "swiftseg-demo",
                 "swiftseg-train", "swiftseg-eval", "swiftseg_node"):
        assert any((d / tool).exists() for d in dirs) or shutil.which(tool), (tool, dirs)


def test_setup_declares_pytest_as_a_test_dependency_the_way_colcon_reads_it():
    kwargs = setup_kwargs()
    requirements = kwargs["extras_require"]["test"]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requirements}
    assert {"pytest", "hypothesis"} <= names
    # setuptools dropped tests_require: every build warned "Unknown distribution option"
    assert "tests_require" not in kwargs


def test_ros_wheels_are_pinned_and_limited_to_where_they_exist():
    requirements = setup_kwargs()["extras_require"]["ros"]
    names = {r.split("==", 1)[0] for r in requirements}
    assert {"ros-jazzy-rclpy", "ros-jazzy-sensor-msgs", "ros-jazzy-lifecycle-msgs",
            "ros-jazzy-diagnostic-msgs", "ros-jazzy-rmw-fastrtps-cpp"} == names
    for requirement in requirements:
        pinned, marker = requirement.split(";", 1)
        version = pinned.split("==", 1)[1]
        assert version.count(".") == 2, requirement
        assert 'python_version == "3.11"' in marker and 'platform_system == "Linux"' in marker


def test_node_requirements_keep_a_ros_python_on_opencv_4():
    kwargs = setup_kwargs()
    opencv = next(r for r in kwargs["install_requires"] if r.startswith("opencv"))
    assert "<5" in opencv
    node_needs = {r.split(">")[0].split("<")[0] for r in kwargs["install_requires"]}
    assert node_needs == {"torch", "numpy", "PyYAML", "opencv-python-headless", "onnxruntime",
                          "onnx", "onnxscript",  # the ONNX Runtime backend and its export
                          "openvino",  # the OpenVINO backend (Linux x86_64/aarch64 only)
                          "numba"}  # the compiled edge selection
    assert {"rosbags", "matplotlib"} <= {r.split(">")[0] for r in kwargs["extras_require"]["tools"]}
    assert set(kwargs["extras_require"]["tools"]) <= set(kwargs["extras_require"]["dev"])


def test_setup_cfg_routes_scripts_to_lib_package_for_ros2_run():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/swiftseg_ros"
    assert cfg["install"]["install_scripts"] == "$base/lib/swiftseg_ros"


def test_package_xml_declares_the_ros_run_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    run = {e.text for e in root.iter("exec_depend")}
    for dep in ("rclpy", "lifecycle_msgs", "sensor_msgs", "std_msgs", "diagnostic_msgs",
                "vision_msgs", "launch", "launch_ros", "python3-numpy",
                "python3-opencv", "python3-yaml", "python3-torch", "python3-onnxruntime",
                "python3-numba"):
        assert dep in run, dep
    tests = {e.text for e in root.iter("test_depend")}
    assert {"launch_testing", "python3-pytest", "python3-hypothesis"} <= tests
    assert root.find("export/build_type").text == "ament_python"


# ROS packages are the ones rosdep resolves from package.xml; everything else the node
# and launch file import is the standard library, this package, or a python3-* key
ROS_IMPORTERS = ("swiftseg_ros/ros/node.py", "launch/seg.launch.py")
NOT_ROS = {"swiftseg_ros", "__future__", "numpy", "cv2", "yaml", "torch", *sys.stdlib_module_names}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_package_xml_run_dependencies_are_exactly_the_ros_packages_imported():
    imported = set().union(*(imported_roots(ROOT / p) for p in ROS_IMPORTERS)) - NOT_ROS
    declared = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    ros_declared = {d for d in declared if not d.startswith("python3-")}
    assert imported - declared == set(), "imported but not in package.xml"
    assert ros_declared - imported == set(), "in package.xml but never imported"


def setup_kwargs() -> dict:
    """The keyword arguments setup.py passes to setuptools.setup."""
    import runpy
    from unittest import mock

    import setuptools

    with mock.patch.object(setuptools, "setup") as fake_setup:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return fake_setup.call_args.kwargs


def test_setup_installs_share_folders_for_ros():
    data_files = dict(setup_kwargs()["data_files"])
    assert "resource/swiftseg_ros" in data_files["share/ament_index/resource_index/packages"]
    assert "config/palettes/cityscapes.yaml" in data_files["share/swiftseg_ros/config/palettes"]
    # the node's lost-frames hint points at the installed profile (ros/transport_hint.py)
    assert "config/fastdds_large_images.xml" in data_files["share/swiftseg_ros/config"]
    assert any(k == "share/swiftseg_ros/launch" for k in data_files) or not list(
        (ROOT / "launch").glob("*.py"))
