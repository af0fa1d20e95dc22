"""ament_python package that also installs with `pip install -e .` in a plain venv."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "swiftseg_ros"
HERE = Path(__file__).parent
TEST_REQUIRES = ["pytest>=6.2", "hypothesis>=6.36"]
TOOLS_REQUIRES = ["rosbags>=0.11", "matplotlib>=3.5", "tqdm>=4.60"]
ONNX_REQUIRES = ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"]
# ROS 2 Jazzy's rclpy with Fast DDS from PyPI, so that the node's rclpy tests run in a plain
# venv (`make setup` installs this extra and carries on without it where it fails). The
# wheels exist for CPython 3.11 on Linux x86_64 and aarch64 only; the marker keeps the
# extra empty elsewhere. No vision_msgs, launch or cv_bridge among them: the node works
# without vision_msgs (no ~/label_info), the launch tests skip.
ROS_WHEELS_MARKER = ('; platform_system == "Linux" and python_version == "3.11" and '
                     '(platform_machine == "x86_64" or platform_machine == "aarch64")')
ROS_REQUIRES = [requirement + ROS_WHEELS_MARKER for requirement in (
    "ros-jazzy-rclpy==7.1.6",
    "ros-jazzy-sensor-msgs==5.3.6",
    "ros-jazzy-lifecycle-msgs==2.0.3",
    "ros-jazzy-diagnostic-msgs==5.3.6",
    "ros-jazzy-rmw-fastrtps-cpp==8.4.3",
)]
# the OpenVINO backend, where OpenVINO publishes wheels (Linux x86_64 and aarch64; it is
# optional elsewhere: backend auto leaves it out with a note)
OPENVINO_REQUIRES = ["openvino>=2024.0; platform_system == 'Linux' and "
                     "(platform_machine == 'x86_64' or platform_machine == 'aarch64')"]


def share_files(folder: str, patterns=("*",)):
    """data_files entries installing folder/ (recursively) into share/<package>/folder/."""
    by_dir = {}
    for pattern in patterns:
        for path in sorted((HERE / folder).rglob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(HERE)
                by_dir.setdefault(str(Path("share") / PACKAGE / rel.parent), []).append(str(rel))
    return sorted(by_dir.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time semantic segmentation (SwiftNet, Fast-SCNN) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        *share_files("launch", ("*.py",)),
        *share_files("config", ("*.yaml", "*.json", "*.xml")),
        *share_files("models", ("*.pt", "*.md")),
    ],
    # What the node needs at run time. Under ROS 2 numpy, PyYAML and OpenCV come from
    # rosdep (package.xml) and torch from docs/ros.md's pip line; colcon installs none of
    # these. The bounds keep a ROS Python working: OpenCV 5 needs NumPy 2, which breaks
    # cv_bridge and every other extension built for the distribution's NumPy 1.x
    # (Humble: 1.21, Jazzy: 1.26). The Makefile pins torch and installs it first.
    # onnxruntime (with onnx and onnxscript, which export the graph it runs) and OpenVINO
    # are the engine's other backends.
    install_requires=[
        "torch>=2.1",
        *ONNX_REQUIRES,
        *OPENVINO_REQUIRES,
        "numpy>=1.21",
        "PyYAML>=5.4",
        "opencv-python-headless>=4.5,<5",
        # the compiled class selection along edges (engine/kernels/edge_kernel.py); without it
        # the engine keeps the torch version
        "numba>=0.59",
    ],
    # colcon picks pytest for `colcon test` when pytest is a test dependency: colcon-core
    # reads extras_require["test"] (as ros2/demos' setup.py files declare it;
    # colcon_core/task/python/test/__init__.py, has_test_dependency); without it colcon
    # runs `python -m unittest`, which finds none. tests_require is gone: setuptools
    # removed it (every build warned "Unknown distribution option: 'tests_require'").
    extras_require={
        "test": TEST_REQUIRES,
        "ros": ROS_REQUIRES,
        # the offline tools (replay, bench, train, eval, the demo): not needed by the node
        "tools": TOOLS_REQUIRES,
        "onnx": ONNX_REQUIRES,
        # pytest-xdist: `make test` runs the suite on two processes (CI has two cores)
        "dev": [*TEST_REQUIRES, *TOOLS_REQUIRES, *ONNX_REQUIRES, "pytest-xdist>=3.6",
                "ruff>=0.6"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "swiftseg_node = swiftseg_ros.ros.node:main",
            "swiftseg-models = swiftseg_ros.cli:models",
            "swiftseg-bench = swiftseg_ros.cli:bench",
            "swiftseg-replay = swiftseg_ros.cli:replay",
            "swiftseg-demo = swiftseg_ros.cli:demo",
            "swiftseg-synth = swiftseg_ros.cli:synth",
            "swiftseg-train = swiftseg_ros.cli:train",
            "swiftseg-eval = swiftseg_ros.cli:evaluate",
            "swiftseg-export = swiftseg_ros.cli:export",
            "swiftseg-import = swiftseg_ros.cli:import_weights",
            "swiftseg-soak = swiftseg_ros.cli:soak",
        ],
    },
)
