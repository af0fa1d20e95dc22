"""Class sets: class names and their palette colours, read from config/palettes/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from swiftseg_ros.errors import ConfigError
from swiftseg_ros.paths import config_dir

IGNORE_INDEX = 255
# a generic-layout dataset's class set file (trainer/datasets.py, synthetic/frames.py)
GENERIC_CLASSES_FILE = "classes.yaml"


@dataclass(frozen=True)
class ClassSet:
    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def validate_palette(palette, num_classes: int | None = None, source: str = "palette") -> list:
    """Return the palette as a list of [r, g, b] ints in 0-255, or raise ConfigError."""
    try:
        rows = [[int(c) for c in row] for row in palette]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: expected a list of [r, g, b] colours ({exc})") from exc
    for i, row in enumerate(rows):
        if len(row) != 3 or not all(0 <= c <= 255 for c in row):
            raise ConfigError(f"{source}: colour {i} is {row}, expected [r, g, b] in 0-255")
    if num_classes is not None and len(rows) < num_classes:
        raise ConfigError(
            f"{source}: {len(rows)} colours for {num_classes} classes; give one per class"
        )
    return rows


def load_class_set(name_or_path: str | Path) -> ClassSet:
    """A class set by name (`cityscapes`, `camvid`, from config/palettes/) or by YAML path.

    The YAML holds `classes: [{name: ..., color: [r, g, b]}, ...]` and optionally
    `name` and `ignore_index`.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = config_dir() / "palettes" / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir() / "palettes").glob("*.yaml"))
        raise ConfigError(f"class set {str(name_or_path)!r} not found (known: {', '.join(known)})")
    try:
        data = yaml.safe_load(path.read_text())
        classes = data["classes"]
        names = tuple(str(c["name"]) for c in classes)
        palette = validate_palette([c["color"] for c in classes], len(names), str(path))
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: expected `classes: [{{name: ..., color: [r, g, b]}}, ...]` ({exc})"
        ) from exc
    return ClassSet(
        name=str(data.get("name", path.stem)),
        class_names=names,
        palette=tuple(tuple(c) for c in palette),
        ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
    )


def class_set_for_weights(classes: str, num_classes: int, source: str, *, detail: str = "",
                          advice: str = "") -> tuple[list, list]:
    """Names and palette of the class set `classes` for weights (from `source`) that predict
    `num_classes` classes; a one-line ConfigError naming both counts when they differ.

    `detail` follows the weights' count (where it was read), `advice` replaces the default
    advice (a class set of that size for --classes).
    """
    class_set = load_class_set(classes)
    if class_set.num_classes != num_classes:
        advice = advice or f"give --classes with a class set of {num_classes} classes"
        raise ConfigError(f"{source}: predicts {num_classes} classes{detail} but the class set "
                          f"{classes} has {class_set.num_classes}; {advice}")
    return list(class_set.class_names), [list(c) for c in class_set.palette]


def default_palette(num_classes: int) -> list[list[int]]:
    """Distinct colours for a class count with no palette of its own (Cityscapes first)."""
    base = [list(c) for c in load_class_set("cityscapes").palette]
    colours = base[:num_classes]
    i = 0
    while len(colours) < num_classes:
        # golden-ratio hue walk, fixed saturation/value: deterministic and well spread
        h = (i * 0.618033988749895) % 1.0
        colours.append(_hsv_to_rgb(h, 0.65, 0.9))
        i += 1
    return colours


def _hsv_to_rgb(h: float, s: float, v: float) -> list[int]:
    k = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][k]
    return [round(r * 255), round(g * 255), round(b * 255)]
