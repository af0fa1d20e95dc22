"""The device pass for one input size, chosen by timing the candidates this machine supports.

A candidate is a whole pass (pre-processing, forward, post-processing) with its own
buffers, because the memory format of the network input and of the logits is part of
what is chosen. Each backend offers its candidates (backends/): on the CPU the torch
candidates are the (conv route, memory format) pairs of kernels/cpu_kernels.py; the ONNX
Runtime session is one more candidate when the backend is auto (or the only one when it
is onnxruntime). `autotune.choose` runs each
once untimed (dropping any that raise, with the error noted), then times them
interleaved, and the fastest is kept; the others are freed.

Each channels_last torch candidate may have a twin with its 3x3 convolutions as compiled
Winograd (winograd_kernel.py), "onednn/channels_last+winograd", timed alongside.

That measurement is the choice "device_pass" (every candidate's time, and why any was
left out); from it come the per-question choices that `stats()` also reports:
"backend" (torch's best against onnxruntime), "cpu_convs" (the routes at the chosen
memory format), "memory_format" (the formats at the chosen route) and, for a torch
winner, "conv_3x3" (direct against its Winograd twin). When ONNX Runtime wins,
"cpu_convs" and "memory_format" still say what torch's best candidate was, and
"conv_3x3" is the ONNX graph's own choice (engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from swiftseg_ros.engine.autotune import Choice, choose, failure_note
from swiftseg_ros.engine.backends import BACKENDS
from swiftseg_ros.errors import ConfigError

TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
TIMING_REPEATS = 3
WINOGRAD = "winograd"  # a twin candidate's suffix ("onednn/channels_last+winograd")


@dataclass
class DevicePass:
    """Pre-processing, forward and post-processing of one candidate, with its buffers."""

    name: str
    backend: str
    pre: object
    forward: Callable[[torch.Tensor], torch.Tensor]
    post: object
    model: torch.nn.Module | None = None
    route: str | None = None
    memory_format: str | None = None
    conv_3x3: str = "direct"  # or "winograd" (kernels/winograd.py, winograd_kernel.py)
    precision: str = "fp32"
    # the logits of its first forward, which shaped `post`: the edge selection's timing
    # runs on them (engine.py), then they are dropped
    first_logits: torch.Tensor | None = None

    def run(self) -> None:
        self.post.run(self.forward(self.pre.run()))


def pick_pass(candidates: dict[str, Callable[[], DevicePass]], notes: dict[str, str],
              repeats: int = TIMING_REPEATS, sync=None,
              precisions: tuple[str, ...] = ()) -> tuple[DevicePass, dict[str, Choice]]:
    """Build every candidate (one that fails to build is noted), time them, keep the fastest.

    With several `precisions` (precision auto), the names of candidates and notes at a
    precision other than fp32 end in "@precision" (`precision_name`); the per-question
    choices are then those at the winner's precision, and "precision" says which
    precision won with each one's best time. Raises RuntimeError when none works
    (autotune.choose's message names each error).
    """
    notes = dict(notes)
    built: dict[str, DevicePass] = {}
    errors: list[Exception] = []
    for name, build in candidates.items():
        try:
            built[name] = build()
        except Exception as exc:  # e.g. oneDNN refusing this dtype, an unwritable cache
            errors.append(exc)
            notes[name] = failure_note(exc)
    runs = {name: candidate.run for name, candidate in built.items()}
    if not runs and len(candidates) == 1 and isinstance(errors[0], ConfigError):
        raise errors[0]  # the one backend asked for: its own message says what to do
    if not runs:
        raise RuntimeError("device pass: no candidate works here (" + "; ".join(
            f"{n} {why}" for n, why in notes.items()) + ")")
    overall = choose("device_pass", runs, repeats=repeats, sync=sync, notes=notes)
    winner = built[overall.picked]
    if len(precisions) < 2:
        return winner, {"device_pass": overall, **derived_choices(overall, built, winner)}
    return winner, {"device_pass": overall,
                    **derived_choices(*_at_precision(overall, built, winner.precision),
                                      winner),
                    "precision": _precision_choice(overall, built, winner, precisions)}


def precision_name(name: str, precision: str) -> str:
    """A candidate's or note's name when several precisions are timed together."""
    return name if precision == "fp32" else f"{name}@{precision}"


def split_precision(name: str) -> tuple[str, str]:
    """(a candidate's own name, its precision) from its name in a mixed timing."""
    base, _, precision = name.partition("@")
    return base, precision or "fp32"


def _at_precision(overall: Choice, built: dict[str, DevicePass], precision: str):
    """The device pass choice and candidates at one precision, under their own names."""
    def keep(items):
        return {split_precision(n)[0]: v for n, v in items
                if split_precision(n)[1] == precision}

    choice = Choice(overall.what, split_precision(overall.picked)[0],
                    keep(overall.times_ms.items()), keep(overall.notes.items()))
    return choice, keep(built.items())


def _precision_choice(overall: Choice, built: dict[str, DevicePass], winner: DevicePass,
                      precisions: tuple[str, ...]) -> Choice:
    """Which precision won: each one's fastest candidate, and why one had none."""
    best: dict[str, float] = {}
    for name, ms in overall.times_ms.items():
        precision = built[name].precision
        best[precision] = min(ms, best.get(precision, ms))
    notes = {precision: "no candidate works at this precision here" for precision in precisions
             if precision not in best and precision != winner.precision}
    return Choice("precision", winner.precision, best, notes)


def derived_choices(overall: Choice, built: dict[str, DevicePass],
                    winner: DevicePass) -> dict[str, Choice]:
    """The per-question choices of one timing: "backend", "cpu_convs", "memory_format",
    and for a torch winner "conv_3x3" (its Winograd twin against it). Routes and formats
    are compared among candidates with the same conv_3x3 as torch's best."""
    times, notes = overall.times_ms, overall.notes
    choices: dict[str, Choice] = {}

    def best(names):
        timed = [n for n in names if n in times]
        return min(timed, key=times.get) if timed else None

    torch_names = [n for n, c in built.items() if c.backend == TORCH and n in times]
    backend_times, backend_notes = {}, {}
    for backend in BACKENDS:
        fastest = best([n for n, c in built.items() if c.backend == backend])
        if fastest is not None:
            backend_times[backend] = times[fastest]
        elif backend != winner.backend:
            why = [why if n == backend else f"{n} {why}" for n, why in notes.items()
                   if _backend_of(n) == backend and WINOGRAD not in n]
            if why:
                backend_notes[backend] = "; ".join(why)
    choices["backend"] = Choice("backend", winner.backend, backend_times, backend_notes)
    # the torch route and memory format: the winner's, or the best torch candidate's when
    # ONNX Runtime won (what torch would have run, for the record)
    fastest_torch = best(torch_names)
    reference = (built[fastest_torch] if fastest_torch is not None
                 else winner if winner.backend == TORCH else None)
    if reference is None:
        return choices
    alike = [n for n in torch_names if built[n].conv_3x3 == reference.conv_3x3]
    torch_notes = [(n.split("/"), why) for n, why in notes.items()
                   if "/" in n and WINOGRAD not in n]
    choices["cpu_convs"] = Choice(
        "cpu_convs", reference.route,
        {built[n].route: times[n] for n in alike
         if built[n].memory_format == reference.memory_format},
        {route: why for (route, fmt), why in torch_notes
         if fmt in (reference.memory_format, "*")})
    choices["memory_format"] = Choice(
        "memory_format", reference.memory_format,
        {built[n].memory_format: times[n] for n in alike if built[n].route == reference.route},
        {fmt: why for (route, fmt), why in torch_notes if route in (reference.route, "*")})
    if winner.backend == TORCH:
        twins = [n for n in torch_names if (built[n].route, built[n].memory_format)
                 == (winner.route, winner.memory_format)]
        why = notes.get(f"{winner.route}/{winner.memory_format}+{WINOGRAD}",
                        notes.get(WINOGRAD))
        choices["conv_3x3"] = Choice("conv_3x3", winner.conv_3x3,
                                     {built[n].conv_3x3: times[n] for n in twins},
                                     {} if why is None else {WINOGRAD: why})
    return choices


def _backend_of(name: str) -> str:
    """The backend a candidate's or note's name belongs to: another backend's own name,
    else torch's ("onednn/channels_last", "*/channels_last", "winograd")."""
    return name if name in BACKENDS else TORCH
