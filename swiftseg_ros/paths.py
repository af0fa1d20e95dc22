"""Where the package's shared files (config/, models/) are, and weights path resolution.

Under ROS 2 the share folder is found with ament_index (colcon installs config/ and
models/ into share/swiftseg_ros); in a development or `pip install -e` checkout it is
the repository root next to this package.
"""

from __future__ import annotations

from pathlib import Path

from swiftseg_ros.errors import CheckpointError

PACKAGE_NAME = "swiftseg_ros"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The folder holding config/ and models/: ament share folder, else the source checkout."""
    if (_SOURCE_ROOT / "config").is_dir():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE_NAME))
    except Exception as exc:  # ament_index missing or the package not installed
        raise FileNotFoundError(
            f"cannot find the {PACKAGE_NAME} share folder (config/, models/): not a source "
            f"checkout at {_SOURCE_ROOT} and ament_index has no installed package ({exc})"
        ) from exc


def config_dir() -> Path:
    return share_dir() / "config"


def models_dir() -> Path:
    return share_dir() / "models"


def resolve_weights(path: str | Path) -> Path:
    """Find a weights file: absolute; else relative to the working directory; else in models/
    (where a leading "models/" names the package's models/ folder itself).

    Raises CheckpointError naming every place that was tried.
    """
    text = str(path).strip()
    if not text:
        raise CheckpointError("weights path is empty: give a checkpoint file (.pt)")
    candidate = Path(text).expanduser()
    tried = [candidate if candidate.is_absolute() else Path.cwd() / candidate]
    if candidate.is_absolute():
        if candidate.is_file():
            return candidate
    else:
        if tried[0].is_file():
            return tried[0]
        try:
            # "models/x.pt", as the docs write it from the checkout, works from anywhere
            inside = Path(*candidate.parts[1:]) if candidate.parts[0] == "models" else candidate
            in_models = models_dir() / inside
            tried.append(in_models)
            if in_models.is_file():
                return in_models
        except FileNotFoundError:
            pass
    if tried[0].is_dir():
        raise CheckpointError(f"weights {text!r} is a folder ({tried[0]}); give a checkpoint "
                              f"file (.pt)")
    raise CheckpointError(
        f"weights file {text!r} not found (looked at: {', '.join(str(p) for p in tried)})"
    )
