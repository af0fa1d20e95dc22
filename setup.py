"""ament_python package that also installs with `pip install -e .` in a plain venv."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "swiftseg_ros"
HERE = Path(__file__).parent


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
        *share_files("config", ("*.yaml", "*.json")),
        *share_files("models", ("*.pt", "*.md")),
    ],
    # torch is pinned by the Makefile (installed first, so this range adds nothing);
    # under ROS 2 these come from rosdep / the system, see package.xml. onnxruntime (with
    # onnx and onnxscript, which export the graph it runs) is the node's second backend.
    install_requires=[
        "torch>=2.1",
        "onnxruntime>=1.18",
        "onnx>=1.16",
        "onnxscript>=0.1",
        "numpy>=1.24",
        "PyYAML>=6",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
        "dev": [
            "pytest>=8",
            "hypothesis>=6.100",
            "ruff>=0.6",
        ],
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
        ],
    },
)
