"""The node's parameters as data: definitions, the one validator, the parameter-file
loader, and the generated config/seg.yaml and parameter table.

`PARAMETERS` is the single source: the node declares from it, replay and the validator
check against it, launch/seg.launch.py declares its arguments from `launch_arguments()`,
and `render_param_file()` / `render_parameter_table()` / `render_launch_table()` produce
config/seg.yaml and the tables in docs/parameters.md, docs/ros.md and README.md (a test
checks that the checked-in files match; `python -m swiftseg_ros.ros.params --write`
regenerates them).

Sizes are strings "WxH" (width first, like camera resolutions: "1024x512"), empty for
"not set": a string parameter declares cleanly in rclpy, reads the same in a YAML file
and on the command line (`ros2 param set /swiftseg input_size 640x480`), while an empty
integer array cannot be declared without an explicit type.

Parameter files follow rclpy's rules (rclpy/src/rclpy/node.cpp, identical in Humble and
Jazzy): the entries under `/**` apply first, then those under the node's fully qualified
name (`/swiftseg`, or `swiftseg`, or `/robot1/swiftseg`, or nested `robot1: swiftseg:`),
which win; other entries (other nodes, `/**/swiftseg`, which rclpy ignores) are skipped.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from swiftseg_ros.cli import ArgumentParser
from swiftseg_ros.errors import ConfigError

DEFAULT_NODE_NAME = "swiftseg"
# the names of swiftseg_ros.nets.registry.NETWORKS (a test keeps them equal); listed here
# so that reading parameters does not import torch
NETWORK_NAMES = ("fastscnn", "swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class Size(NamedTuple):
    """An image size, width first ("640x480" is Size(640, 480))."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class ParamDef:
    """One parameter: its ROS type, default, description and what is allowed.

    `kind` adds a check to the type: "size" ("WxH", or empty where `allow_empty`) or
    "device".
    `dynamic` parameters may change while the node is configured; the others only
    while it is unconfigured.
    """

    name: str
    type: type
    default: Any
    description: str
    dynamic: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    kind: str = ""
    allow_empty: bool = True
    allowed_text: str = ""  # what is allowed, where the type and checks cannot say it

    @property
    def type_name(self) -> str:
        """The type as ROS 2 names it (`ros2 param describe`)."""
        return {bool: "bool", int: "integer", float: "double", str: "string"}[self.type]

    def allowed(self) -> str:
        """What values are allowed, in words (for errors and the docs)."""
        if self.allowed_text:
            return self.allowed_text
        if self.choices:
            names = [c for c in self.choices if c]
            text = ", ".join(names)
            return text + (" or empty" if "" in self.choices else "")
        if self.kind == "size":
            return "WxH such as 640x480" + (", or empty" if self.allow_empty else "")
        if self.kind == "device":
            return "auto, cpu, cuda, cuda:N"
        if self.type is bool:
            return "true, false"
        if self.minimum is not None and self.maximum is not None:
            return f"{_number(self.minimum, self.type)} to {_number(self.maximum, self.type)}"
        if self.minimum is not None:
            return f">= {_number(self.minimum, self.type)}"
        return "any"


def _number(value: float, kind: type) -> str:
    return str(int(value)) if kind is int else repr(float(value))


PARAMETERS: tuple[ParamDef, ...] = (
    ParamDef(
        "network", str, "",
        "Network architecture. Empty takes the checkpoint's; with weights, it must match "
        "the checkpoint's network; without weights, it runs random weights.",
        choices=("", *NETWORK_NAMES)),
    ParamDef(
        "weights", str, "fastscnn_synth.pt",
        "Checkpoint file (.pt): an absolute path, relative to the working directory, or "
        "a file in the package's models/ folder. The default is the demo Fast-SCNN trained "
        "on synthetic road scenes (models/README.md): train or import weights for real "
        "cameras. An .onnx file written by swiftseg-export also works (backend auto or "
        "onnxruntime). Empty with a network runs random weights (for testing only; the "
        "node warns loudly).",
        allowed_text="a checkpoint file, or empty"),
    ParamDef(
        "device", str, "auto",
        "Inference device. auto: the first CUDA GPU if there is one, else the CPU (with a "
        "warning). cuda or cuda:N fails configure when there is no such GPU.",
        kind="device"),
    ParamDef(
        "precision", str, "auto",
        "Inference precision. auto: fp32 and the precision the device runs natively "
        "(fp16 on CUDA, bf16 on CPUs with AVX512-BF16, AMX or AVX-NE-CONVERT, aarch64 BF16) "
        "are both timed and the faster kept (logged and in /diagnostics); fp32 is exact "
        "everywhere; fp16 (CUDA) and bf16 (native only) force that precision.",
        choices=("fp32", "fp16", "bf16", "auto")),
    ParamDef(
        "backend", str, "auto",
        "What runs the network: torch, onnxruntime (fp32), openvino (fp32 or bf16; CPU, "
        "see openvino_device) or auto: every installed one is timed during warm-up and "
        "the fastest kept (logged and in /diagnostics). The ONNX graph the last two run is "
        "exported at configure and cached in ~/.cache/swiftseg_ros/onnx or "
        "$SWIFTSEG_CACHE_DIR, with the measured choices, so a restart takes seconds.",
        choices=("auto", "torch", "onnxruntime", "openvino")),
    ParamDef(
        "openvino_device", str, "CPU",
        "OpenVINO device of backend openvino (and of auto's OpenVINO candidate): CPU, or "
        "GPU / NPU where OpenVINO reports them (untested here).",
        allowed_text="an OpenVINO device name (CPU, GPU, NPU)"),
    ParamDef(
        "retune", bool, False,
        "Measure the choices (backend, precision, kernels) afresh at configure instead of "
        "taking those cached for this exact setup; the new answer is cached."),
    ParamDef(
        "cuda_graphs", bool, True,
        "Replay each frame's device work as one captured CUDA graph (less CPU overhead; "
        "ignored on the CPU)."),
    ParamDef(
        "tf32", bool, False,
        "CUDA with precision fp32: let convolutions and matrix products round their inputs "
        "to TF32 (10-bit mantissa) on Ampere and newer GPUs: faster, but no longer fp32 "
        "arithmetic (labels may differ from the CPU's). Ignored otherwise."),
    ParamDef(
        "inference_size", str, "",
        "Network input size WxH, sides multiples of the network's size divisor (32, or "
        "64 for swiftnet_rn18_pyramid). Empty: the input image size rounded up to them.",
        kind="size"),
    ParamDef(
        "input_size", str, "",
        "Expected camera image size WxH: configure allocates and warms up for it, so the "
        "first frame is as fast as the rest. Empty: allocate on the first frame.",
        kind="size"),
    ParamDef(
        "threads", int, 0,
        "CPU threads for inference (torch.set_num_threads); 0 keeps PyTorch's default.",
        minimum=0, maximum=1024),
    ParamDef(
        "upsample", str, "logits",
        "logits: bilinear upsampling of the class scores, then class selection (the "
        "papers' way: smooth edges, thin objects kept; on one CPU core at most ~1 ms more "
        "at 1024x512, only class edges are interpolated). labels: class selection at "
        "network resolution, then nearest upsampling of the labels (edges blocky at the "
        "network's stride, 8 px for Fast-SCNN).",
        choices=("labels", "logits")),
    ParamDef(
        "output_size", str, "input",
        "Size of the published masks: input (the camera's, pixel-aligned with it) or "
        "network (the inference size, cheaper; ~/camera_info is scaled to match).",
        choices=("input", "network")),
    ParamDef(
        "transport", str, "raw",
        "raw: subscribe to image (sensor_msgs/Image). compressed: subscribe to "
        "image/compressed (sensor_msgs/CompressedImage, jpeg or png).",
        choices=("raw", "compressed")),
    ParamDef(
        "reliability", str, "best_effort",
        "QoS reliability of the image subscription. best_effort hears reliable and "
        "best-effort cameras alike; reliable hears only reliable ones.",
        choices=("best_effort", "reliable")),
    ParamDef(
        "depth", int, 1,
        "QoS history depth of the image subscription; 1 keeps only the newest image.",
        minimum=1, maximum=100),
    ParamDef(
        "publish_color", bool, True,
        "Publish ~/color, the class palette image (rgb8).",
        dynamic=True),
    ParamDef(
        "publish_confidence", bool, False,
        "Publish ~/confidence, the winning class probability scaled to 0-255 (mono8).",
        dynamic=True),
    ParamDef(
        "publish_overlay", bool, False,
        "Publish ~/overlay, the palette blended over the camera image (rgb8).",
        dynamic=True),
    ParamDef(
        "overlay_alpha", float, 0.5,
        "Weight of the palette colour in ~/overlay: 0 shows the camera image only, 1 the "
        "palette only.",
        dynamic=True, minimum=0.0, maximum=1.0),
    ParamDef(
        "palette", str, "",
        "Class colours: a class set name (cityscapes, camvid) or a YAML file like "
        "config/palettes/cityscapes.yaml. Empty: the checkpoint's palette.",
        allowed_text="a class set name or a .yaml file, or empty"),
    ParamDef(
        "diagnostics_period", float, 1.0,
        "Seconds between two /diagnostics reports.",
        minimum=0.1, maximum=60.0),
    ParamDef(
        "latency_budget_ms", float, 100.0,
        "Diagnostics turn WARN when the p95 total latency per frame exceeds this many "
        "milliseconds; 0 turns the check off.",
        dynamic=True, minimum=0.0, maximum=60000.0),
    ParamDef(
        "min_output_hz", float, 1.0,
        "Diagnostics turn WARN when fewer masks per second are published while images "
        "arrive; 0 turns the check off.",
        dynamic=True, minimum=0.0, maximum=1000.0),
    ParamDef(
        "max_input_size", str, "4096x4096",
        "Largest input image WxH accepted: a wider or taller image is rejected (counted "
        "in diagnostics) instead of allocating device memory for it.",
        kind="size", allow_empty=False),
)

BY_NAME: Mapping[str, ParamDef] = {p.name: p for p in PARAMETERS}


@dataclass(frozen=True)
class SegParams:
    """Validated parameters (field order and names are those of `PARAMETERS`)."""

    network: str
    weights: str
    device: str
    precision: str
    backend: str
    openvino_device: str
    retune: bool
    cuda_graphs: bool
    tf32: bool
    inference_size: Size | None
    input_size: Size | None
    threads: int
    upsample: str
    output_size: str
    transport: str
    reliability: str
    depth: int
    publish_color: bool
    publish_confidence: bool
    publish_overlay: bool
    overlay_alpha: float
    palette: str
    diagnostics_period: float
    latency_budget_ms: float
    min_output_hz: float
    max_input_size: Size

    @property
    def outputs(self) -> tuple[str, ...]:
        """The engine outputs the switches ask for; the label mask is always published."""
        switched = (("color", self.publish_color), ("confidence", self.publish_confidence),
                    ("overlay", self.publish_overlay))
        return ("label", *(name for name, on in switched if on))

    def parameter_values(self) -> dict[str, Any]:
        """The values as ROS parameters (sizes back to "WxH" strings)."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if BY_NAME[f.name].kind == "size":
                value = "" if value is None else str(value)
            values[f.name] = value
        return values


def parse_size(text: str, name: str = "size") -> Size | None:
    """ "640x480" -> Size(640, 480); "" -> None; ConfigError naming `name` otherwise."""
    if not text.strip():
        return None
    match = _SIZE_RE.match(text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError(
            f"parameter {name!r} is {text!r}: expected WxH with positive integers, such as "
            "640x480, or empty"
        )
    return Size(int(match.group(1)), int(match.group(2)))


# The largest integer every smaller one of which a double holds exactly (2**53).
_EXACT_DOUBLE_LIMIT = 2 ** 53


def ros_type_name(value: Any) -> str:
    """The ROS 2 name of the type of a parameter value as rclpy or YAML gives it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "not set"
    return "array"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _checked(definition: ParamDef, value: Any) -> Any:
    """`value` as the parameter's Python value, or a one-line ConfigError.

    An integer is accepted for a double parameter when the double holds it exactly (a
    parameter file's `overlay_alpha: 1`): the node stores it as that double.
    """
    name, kind = definition.name, definition.type
    allowed = definition.allowed()
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, float) and math.isfinite(value) or \
            isinstance(value, int) and not isinstance(value, bool) \
            and abs(value) <= _EXACT_DOUBLE_LIMIT
    else:
        ok = isinstance(value, str)
    if not ok:
        given, expected = ros_type_name(value), definition.type_name
        raise ConfigError(
            f"parameter {name!r} is {value!r}, {_article(given)} {given}: expected "
            f"{_article(expected)} {expected} ({allowed})"
        )
    if kind is float:
        value = float(value)
    if definition.choices and value not in definition.choices:
        raise ConfigError(f"parameter {name!r} is {value!r}: allowed {allowed}")
    if definition.minimum is not None and value < definition.minimum or \
            definition.maximum is not None and value > definition.maximum:
        raise ConfigError(f"parameter {name!r} is {value!r}: allowed {allowed}")
    if definition.kind == "size":
        size = parse_size(value, name)
        if size is None and not definition.allow_empty:
            raise ConfigError(f"parameter {name!r} is empty: allowed {allowed}")
        return size
    if definition.kind == "device":
        value = value.strip().lower()
        if not _DEVICE_RE.match(value):
            raise ConfigError(f"parameter {name!r} is {value!r}: allowed {allowed}")
    return value


def check_parameter_value(name: str, value: Any) -> Any:
    """`value` for parameter `name` checked on its own (type, choices, range, size format)
    and returned as the node stores it: an integer for a double parameter becomes that
    double. One-line ConfigError otherwise. Combinations of parameters are checked by
    `validate_parameters`, once every value is known (at configure)."""
    definition = BY_NAME.get(name)
    if definition is None:
        raise unknown_parameter_error(name)
    _checked(definition, value)
    return float(value) if definition.type is float else value


def unknown_parameter_error(name: str, where: str = "") -> ConfigError:
    close = difflib.get_close_matches(name, list(BY_NAME), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"{where}unknown parameter {name!r}{hint}; known: {', '.join(BY_NAME)}"
    )


def validate_parameters(values: Mapping[str, Any] | None = None) -> SegParams:
    """Every parameter checked: `values` (name -> value) over the defaults.

    Raises one ConfigError (one line: the parameter, its value, what is allowed) for the
    first problem: an unknown name, a wrong type, a value out of range, or a combination
    that cannot work.
    """
    values = dict(values or {})
    for name in values:
        if name not in BY_NAME:
            raise unknown_parameter_error(name)
    checked = {p.name: _checked(p, values.get(p.name, p.default)) for p in PARAMETERS}
    if not checked["network"] and not checked["weights"]:
        raise ConfigError(
            "parameters 'network' and 'weights' are both empty: give a network "
            f"({', '.join(NETWORK_NAMES)}) or a checkpoint file"
        )
    limit, expected = checked["max_input_size"], checked["input_size"]
    if limit is not None and expected is not None and (
            expected.width > limit.width or expected.height > limit.height):
        raise ConfigError(
            f"parameter 'input_size' is {str(expected)!r}, larger than max_input_size "
            f"{str(limit)!r}: raise max_input_size or fix input_size"
        )
    return SegParams(**checked)


def apply_parameter_changes(current: SegParams, changes: Mapping[str, Any], *,
                            configured: bool) -> SegParams:
    """`current` with `changes` applied and checked; a read-only parameter changed while
    the node is configured is refused with a reason (for the node's set-parameters
    callback)."""
    if configured:
        for name, value in changes.items():
            definition = BY_NAME.get(name)
            if definition is None:
                raise unknown_parameter_error(name)
            old = current.parameter_values()[name]
            if not definition.dynamic and value != old:
                raise ConfigError(
                    f"parameter {name!r} is read-only while the node is configured "
                    f"(it is {old!r}): deactivate and clean up the node, set it, then "
                    "configure again"
                )
    return validate_parameters({**current.parameter_values(), **changes})


# ------------------------------------------------------------------- parameter files


def _node_key(parts: list[str]) -> str:
    joined = "/".join(part.strip("/") for part in parts if part.strip("/"))
    return "/" + joined


def _node_entries(mapping: Mapping, path: str, parts: list[str]) -> list[tuple[str, Mapping]]:
    """(node name, ros__parameters mapping) for every entry, in file order."""
    entries = []
    for key, value in mapping.items():
        if key == "ros__parameters":
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{path}: ros__parameters of {_node_key(parts)} is not a mapping of "
                    "parameter names to values"
                )
            entries.append((_node_key(parts), value))
        elif isinstance(value, Mapping):
            entries.extend(_node_entries(value, path, [*parts, str(key)]))
        else:
            raise ConfigError(
                f"{path}: {_node_key([*parts, str(key)])} is {value!r}; a ROS 2 parameter "
                "file nests node names down to a 'ros__parameters:' mapping"
            )
    return entries


def _flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested parameter mappings as dotted names, as ROS 2 reads them."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_param_file(path: str | Path, node_name: str = DEFAULT_NODE_NAME,
                    namespace: str = "/") -> dict[str, Any]:
    """The parameter values a ROS 2 parameter file gives the node `namespace/node_name`.

    Applies `/**` then the node's own entry (rclpy's precedence), rejects unknown names
    (with a suggestion) and values the node would refuse; an integer for a double
    (`overlay_alpha: 1`) is read as that double, as the node does. Returns
    only the names the file sets; `validate_parameters` fills in the defaults and checks
    combinations once other sources (launch arguments, flags) are merged in.
    """
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigError(f"parameter file {str(file)!r} not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"parameter file {str(file)!r} is not a text file (expected YAML "
                          f"like config/seg.yaml)") from None
    except OSError as exc:
        raise ConfigError(f"parameter file {str(file)!r} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{file}: expected a ROS 2 parameter file ('/**:' then 'ros__parameters:'), "
            f"found {type(data).__name__}"
        )
    fqn = _node_key([namespace, node_name])
    entries = _node_entries(data, str(file), [])
    values: dict[str, Any] = {}
    matched = False
    for wanted in ("/**", fqn):
        for key, parameters in entries:
            if key != wanted:
                continue
            matched = True
            for name, value in _flatten(parameters).items():
                values[name] = _file_value(file, key, name, value)
    if not matched:
        found = ", ".join(key for key, _ in entries) or "none"
        raise ConfigError(
            f"{file}: no parameters for node {fqn} (entries found: {found}); put them "
            f"under '/**:' or '{fqn}:' and 'ros__parameters:'"
        )
    return values


def _file_value(file: Path, node: str, name: str, value: Any) -> Any:
    definition = BY_NAME.get(name)
    if definition is None:
        raise unknown_parameter_error(name, f"{file} ({node}): ")
    if value is None:
        raise ConfigError(
            f"{file}: parameter {name!r} has no value; write '' for an empty string"
            if definition.type is str else
            f"{file}: parameter {name!r} has no value; expected {definition.allowed()}"
        )
    # each value on its own: combinations are checked once every source (file, launch
    # arguments, command-line flags) is merged, by validate_parameters
    try:
        _checked(definition, value)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return value


# ------------------------------------------------------------------ launch arguments

# Parameters with a launch argument of their own in launch/seg.launch.py: the settings
# changed most often. Names not defined in PARAMETERS (an optional backend) are left out.
LAUNCH_PARAMETERS = ("network", "weights", "device", "precision", "backend", "transport",
                     "reliability", "depth", "input_size", "inference_size",
                     "publish_overlay", "publish_confidence")
TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


@dataclass(frozen=True)
class LaunchArgument:
    """One argument of launch/seg.launch.py; `parameter` when it sets that node parameter
    (empty by default: the parameter file's value stays)."""

    name: str
    default: str
    description: str
    parameter: bool = False
    shown_default: str = ""  # the table's text where the default is computed at launch


def launch_arguments() -> tuple[LaunchArgument, ...]:
    """Every launch argument of seg.launch.py, for the launch file and the docs tables."""
    own = (
        LaunchArgument("params_file", "", "ROS 2 parameter file for the node",
                       shown_default="installed `config/seg.yaml`"),
        LaunchArgument("namespace", "", "namespace of the node (its topics become "
                                        "/<namespace>/<node_name>/...)"),
        LaunchArgument("node_name", DEFAULT_NODE_NAME, "name of the node"),
        LaunchArgument("image_topic", "image", "camera topic the node's input `image` is "
                                               "remapped to (camera_info is read next to it)"),
        LaunchArgument("autostart", "true", "true: configure and activate the node; false: "
                                            "leave it unconfigured for `ros2 lifecycle set`"),
    )
    parameters = tuple(
        LaunchArgument(name, "", f"sets the parameter `{name}` ({BY_NAME[name].type_name}: "
                                 f"{BY_NAME[name].allowed()}); empty keeps the parameter "
                                 "file's", parameter=True)
        for name in LAUNCH_PARAMETERS if name in BY_NAME)
    return own + parameters


def launch_argument_value(name: str, text: str) -> Any:
    """A launch argument's text as the value of the parameter it sets, checked; one-line
    ConfigError naming the launch argument otherwise."""
    definition = BY_NAME[name]
    word = text.strip()
    try:
        if definition.type is bool:
            if word.lower() not in TRUE_WORDS + _FALSE_WORDS:
                raise ValueError
            value: Any = word.lower() in TRUE_WORDS
        elif definition.type is int:
            value = int(word)
        elif definition.type is float:
            value = float(word)
        else:
            value = word
        return check_parameter_value(name, value)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"launch argument {name}:={text!r} is not allowed: expected "
                          f"{_article(definition.type_name)} {definition.type_name}, "
                          f"{definition.allowed()}"
                          + (f" ({exc})" if isinstance(exc, ConfigError) else "")) from None


def misspelled_launch_arguments(given) -> list[str]:
    """A line for every given launch argument that is not one of seg.launch.py's but
    looks like a misspelling of one (launch itself ignores unknown arguments; names far
    from ours may be a parent launch file's and are left alone)."""
    ours = [argument.name for argument in launch_arguments()]
    lines = []
    for name in sorted(given):
        if name in ours:
            continue
        close = difflib.get_close_matches(name, ours, n=1, cutoff=0.75)
        if close:
            lines.append(f"launch argument {name!r} is not one of seg.launch.py's and is "
                         f"ignored: did you mean {close[0]!r}? (ros2 launch swiftseg_ros "
                         "seg.launch.py --show-args lists them)")
    return lines


def render_launch_table() -> str:
    """The Markdown table of the launch arguments (docs/ros.md and README.md)."""
    rows = ["| Argument | Default | Meaning |", "|---|---|---|"]
    for argument in launch_arguments():
        default = argument.shown_default or (f"`{argument.default}`" if argument.default
                                             else "empty")
        rows.append(f"| `{argument.name}` | {default} | "
                    + argument.description.replace("|", "\\|") + " |")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- engine configuration


def resolve_device(device: str) -> str:
    """'auto' as cuda if torch sees a GPU, else cpu; other values unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def engine_config_from_params(params: SegParams, outputs: tuple[str, ...] | None = None):
    """The `swiftseg_ros.engine.EngineConfig` for these parameters.

    `outputs` overrides the switches (the node asks only for outputs with subscribers).
    The weights path is resolved (absolute, working directory, models/) and the palette
    parameter loaded here, so that a missing file fails configure with its name.
    """
    from swiftseg_ros.classes import load_class_set
    from swiftseg_ros.engine.config import EngineConfig
    from swiftseg_ros.paths import resolve_weights

    weights = str(resolve_weights(params.weights)) if params.weights else None
    palette = None
    if params.palette:
        palette = [list(color) for color in load_class_set(params.palette).palette]
    return EngineConfig(
        network=params.network or None,
        weights=weights,
        device=resolve_device(params.device),
        precision=params.precision,
        backend=params.backend,
        openvino_device=params.openvino_device,
        retune=params.retune,
        inference_size=tuple(params.inference_size) if params.inference_size else None,
        outputs=tuple(outputs) if outputs is not None else params.outputs,
        upsample=params.upsample,
        output_size=params.output_size,
        cuda_graphs=params.cuda_graphs,
        tf32=params.tf32,
        threads=params.threads or None,
        max_input_size=tuple(params.max_input_size),
        overlay_alpha=params.overlay_alpha,
        palette=palette,
    )


# ------------------------------------------------------------------ generated files

TABLE_BEGIN = "<!-- parameters:begin -->"
TABLE_END = "<!-- parameters:end -->"
LAUNCH_TABLE_BEGIN = "<!-- launch-arguments:begin -->"
LAUNCH_TABLE_END = "<!-- launch-arguments:end -->"


def _yaml_value(definition: ParamDef, value: Any) -> str:
    if definition.type is bool:
        return "true" if value else "false"
    if definition.type is float:
        return repr(float(value))
    if definition.type is int:
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_param_file() -> str:
    """config/seg.yaml: every parameter at its default, each with its description."""
    lines = [
        "# Parameters of the swiftseg node: a ROS 2 parameter file, read by the node and by",
        "# swiftseg-replay. GENERATED by `python -m swiftseg_ros.ros.params --write` from",
        "# swiftseg_ros/ros/params.py (a test checks this file against it): to change a",
        "# setting, copy the file and pass the copy to the launch file, or override single",
        "# values at launch or with `ros2 param set`. [dynamic] parameters can change while",
        "# the node runs; the others only while it is unconfigured.",
        "/**:",
        "  ros__parameters:",
    ]
    for index, definition in enumerate(PARAMETERS):
        if index:
            lines.append("")
        note = f"{definition.description} Allowed: {definition.allowed()}."
        if definition.dynamic:
            note += " [dynamic]"
        lines.extend(textwrap.wrap(note, width=92, initial_indent="    # ",
                                   subsequent_indent="    # ", break_on_hyphens=False))
        lines.append(f"    {definition.name}: {_yaml_value(definition, definition.default)}")
    return "\n".join(lines) + "\n"


def render_parameter_table() -> str:
    """The Markdown table of every parameter (README block and docs/parameters.md)."""
    rows = [
        "| Parameter | Type | Default | Allowed | Dynamic | Description |",
        "|---|---|---|---|---|---|",
    ]
    for d in PARAMETERS:
        default = _yaml_value(d, d.default)
        cells = [f"`{d.name}`", d.type_name, f"`{default}`", d.allowed(),
                 "yes" if d.dynamic else "no", d.description]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def render_parameters_doc() -> str:
    """docs/parameters.md."""
    return (
        "# Node parameters\n\n"
        "<!-- GENERATED by `python -m swiftseg_ros.ros.params --write` from "
        "swiftseg_ros/ros/params.py; a test checks it. -->\n\n"
        "The `swiftseg` node's parameters, also read by `swiftseg-replay`. Defaults are in "
        "`config/seg.yaml`, a ROS 2 parameter file (`/**:` then `ros__parameters:`). Sizes "
        "are strings `WxH` (width first), empty for not set. Dynamic parameters can be "
        "changed while the node runs (`ros2 param set /swiftseg overlay_alpha 0.3`); the "
        "others are refused while the node is configured: deactivate and clean up, set "
        "them, then configure again. An integer given for a double parameter (`overlay_alpha: "
        "1`) is read as that double; a value of another wrong type makes configure fail with "
        "one line naming the parameter, the type given and the type expected, until it is "
        "set right with `ros2 param set`.\n\n"
        + render_parameter_table()
    )


def replace_marked_block(text: str, block: str, begin: str = TABLE_BEGIN,
                         end: str = TABLE_END) -> str:
    """`text` with the lines between the `begin` and `end` markers replaced by `block`."""
    start = text.index(begin) + len(begin)
    stop = text.index(end, start)
    return text[:start] + "\n" + block + text[stop:]


def marked_block(text: str, begin: str = TABLE_BEGIN, end: str = TABLE_END) -> str | None:
    """What is between the markers (None without markers)."""
    if begin not in text or end not in text:
        return None
    start = text.index(begin) + len(begin)
    return text[start:text.index(end, start)].removeprefix("\n")


def generated_files(root: Path) -> dict[Path, str]:
    """Every file generated from the definitions, with its content, under `root`.

    README.md and docs/ros.md are included where they have the table markers.
    """
    files = {
        root / "config" / "seg.yaml": render_param_file(),
        root / "docs" / "parameters.md": render_parameters_doc(),
    }
    blocks = {root / "README.md": ((TABLE_BEGIN, TABLE_END, render_parameter_table()),
                                   (LAUNCH_TABLE_BEGIN, LAUNCH_TABLE_END, render_launch_table())),
              root / "docs" / "ros.md": ((LAUNCH_TABLE_BEGIN, LAUNCH_TABLE_END,
                                         render_launch_table()),)}
    for path, tables in blocks.items():
        if not path.is_file():
            continue
        text = path.read_text()
        for begin, end, table in tables:
            if marked_block(text, begin, end) is not None:
                text = replace_marked_block(text, table, begin, end)
        files[path] = text
    return files


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="python -m swiftseg_ros.ros.params",
        description="Print config/seg.yaml as generated from the parameter definitions, "
                    "or write it and the parameter tables (docs/parameters.md, README.md).")
    parser.add_argument("--write", action="store_true",
                        help="write config/seg.yaml, docs/parameters.md and the README table")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2],
                        help="source checkout to write into (default: this package's)")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(render_param_file())
        return 0
    if not (args.root / "setup.py").is_file():
        raise ConfigError(f"{args.root} is not the source checkout (no setup.py): give --root")
    for path, content in generated_files(args.root).items():
        if not path.is_file() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"wrote {path}")
    if not (args.root / "README.md").is_file() or \
            marked_block((args.root / "README.md").read_text()) is None:
        print(f"README.md has no {TABLE_BEGIN} ... {TABLE_END} block: table not written there")
    return 0


if __name__ == "__main__":
    from swiftseg_ros.cli import fail

    try:
        sys.exit(main())
    except ConfigError as error:
        sys.exit(fail(str(error)))
