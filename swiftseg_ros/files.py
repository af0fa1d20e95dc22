"""Output and image files of the command-line tools, written so that a failure leaves
nothing half-written and a bad path is refused before any work.

- `check_output_file` / `check_output_folder`: an output path is tried (a temporary file
  is created and removed where the output will go) before the work starts, so a run of
  minutes never ends in "cannot write".
- `write_bytes` / `write_text` / `write_json` / `write_image`: to a temporary name in the
  same folder, then renamed (atomic on one file system): an interrupted run leaves the
  old file or none, never a truncated one.
- `read_image` / `write_image` hand OpenCV encoded buffers, never paths: its `imread` and
  `imwrite` crash the process (segmentation fault) on a path that is not UTF-8, which
  Python gives as a str with surrogate escapes (PEP 383).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from swiftseg_ros.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def shown(path) -> str:
    """A path as text that prints anywhere (undecodable bytes as \\xNN escapes)."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _try_writing_in(folder: Path, flag: str, path: Path) -> None:
    """Create and remove a temporary file in `folder` (or, when it does not exist yet, in
    its nearest existing ancestor, where the folder will be made)."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ConfigError(f"{flag} {shown(path)}: {shown(existing)} is a file, not a folder")
    try:
        handle, name = tempfile.mkstemp(dir=existing, prefix=".swiftseg-check-")
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{flag} {shown(path)}: cannot write in {shown(existing)} "
                          f"({exc.strerror or exc}); choose a writable folder") from None


def check_output_file(path, flag: str, *, force: bool = True,
                      suffixes: tuple[str, ...] | None = None) -> Path:
    """The output file `path` as a Path, or ConfigError (one line naming `flag`) when it
    cannot be written: empty, a folder, an existing file without `force`, a suffix not in
    `suffixes`, or a folder where nothing can be written."""
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{flag}: an empty path; give a file name")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {shown(path)}: is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {shown(path)}: expected a {' or '.join(suffixes)} file")
    if path.exists() and not force:
        raise ConfigError(f"{flag} {shown(path)} already exists; add --force to replace it "
                          "or choose another name")
    _try_writing_in(path.parent, flag, path)
    return path


def check_output_folder(path, flag: str) -> Path:
    """The output folder `path` as a Path (made later, by the work), or ConfigError."""
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{flag}: an empty path; give a folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {shown(path)} is a file; give a folder")
    _try_writing_in(path, flag, path)
    return path


def write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    """UTF-8 text, atomically; a path's undecodable bytes quoted in it come out escaped."""
    write_bytes(path, text.encode("utf-8", "backslashreplace"))


def write_json(path, data) -> None:
    if path:
        write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_image(path, image: np.ndarray, *, rgb: bool = True) -> None:
    """An image (RGB, or BGR with rgb=False, or grey) encoded by its path's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ConfigError(f"{shown(path)}: expected a {' or '.join(IMAGE_SUFFIXES)} file")
    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        raise OSError(f"cannot encode {shown(path)} as {suffix}")
    write_bytes(path, encoded.tobytes())


def read_image(path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """cv2.imread's result (BGR or grey; None when the bytes do not decode) for any path."""
    data = np.fromfile(os.fsencode(path), dtype=np.uint8)
    if data.size == 0:
        return None
    return cv2.imdecode(data, flags)


def save_figure(figure, path, **options) -> None:
    """A matplotlib figure as PNG in `path`, atomically (drawn into memory first)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **options)
    write_bytes(path, buffer.getvalue())
