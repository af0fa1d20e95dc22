"""Measured choices: run the candidate ways of doing one step on the machine at hand and
keep the fastest one that works, the way `cudnn.benchmark` picks convolution algorithms.

No choice of kernel route, memory format or backend is fixed by a flag that holds on
one CPU or GPU only (DESIGN.md, engine contract): the engine states the candidates
that the hardware supports, `choose` times them during warm-up, and the resulting
`Choice` is logged and reported in `stats()`, /diagnostics and the bench JSON.

A candidate that raises is not a candidate: it is dropped with its error in the
choice's notes, so no frame is ever routed to a kernel that fails on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# Candidates whose fastest run is within this fraction of the fastest one's are a close
# call: they are timed again, `repeats` more interleaved runs among themselves.
CLOSE = 0.25


@dataclass(frozen=True)
class Choice:
    """What was picked for one step, and the evidence."""

    what: str
    picked: str
    times_ms: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One log line: 'cpu_convs=onednn (onednn 12.1 ms, torch 15.3 ms)'."""
        seen = [f"{name} {ms:.2f} ms" for name, ms in sorted(self.times_ms.items(),
                                                            key=lambda item: item[1])]
        seen += [f"{name}: {note}" for name, note in self.notes.items()]
        return f"{self.what}={self.picked}" + (f" ({', '.join(seen)})" if seen else "")

    def as_dict(self) -> dict:
        return {"picked": self.picked, "times_ms": dict(self.times_ms),
                "notes": dict(self.notes)}


def failure_note(exc: Exception) -> str:
    """'failed: Type: first line of the message', for a candidate's note."""
    text = str(exc)
    return f"failed: {type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def measure(candidates: Mapping[str, Callable[[], object]], repeats: int = 5,
            sync: Callable[[], object] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """The fastest milliseconds per call of each candidate, run round-robin `repeats` times.

    Interleaving spreads machine drift (other processes, clock changes) over all
    candidates alike; other processes only ever add time to a run, so each candidate's
    fastest run is the estimate they move least (on a shared 2-core machine the median
    of three ~0.7 s frames flipped a 10% difference). `sync` (e.g. a CUDA stream's
    synchronize) runs after each call, inside the timed span, so asynchronous work is
    counted.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            started = clock()
            run()
            if sync is not None:
                sync()
            samples[name].append((clock() - started) * 1000.0)
    return {name: min(values) for name, values in samples.items()}


def choose(what: str, candidates: Mapping[str, Callable[[], object]], repeats: int = 5,
           warmup: int = 1, sync: Callable[[], object] | None = None,
           clock: Callable[[], float] = time.perf_counter,
           notes: Mapping[str, str] | None = None, close: float = CLOSE) -> Choice:
    """The fastest working candidate for `what`.

    Each candidate first runs `warmup` times untimed (primitive creation, autotuning,
    allocator caches); one that raises there is dropped and its error noted. A single
    working candidate is picked without timing. The others run `repeats` times
    interleaved (`measure`); those within `close` of the fastest then run `repeats` times
    more, interleaved among themselves, each keeping its fastest run of all: on a loaded
    machine a burst of other work that hits a few of one candidate's runs can turn a
    close call (two bf16 passes 13% apart on a quiet core) around, and more runs of
    just the contenders give each more chances of an undisturbed one, at the cost of the
    close candidates alone. `notes` carries reasons for candidates left out before this
    call (e.g. "no native bf16 on this CPU"). Raises RuntimeError when no candidate
    works, with every error.
    """
    notes = dict(notes or {})
    working: dict[str, Callable[[], object]] = {}
    for name, run in candidates.items():
        try:
            for _ in range(warmup):
                run()
            if sync is not None:
                sync()
        except Exception as exc:  # a kernel that fails here is never used
            notes[name] = failure_note(exc)
            continue
        working[name] = run
    if not working:
        raise RuntimeError(f"{what}: no candidate works here ("
                           + "; ".join(f"{n} {why}" for n, why in notes.items()) + ")")
    if len(working) == 1:
        return Choice(what, next(iter(working)), {}, notes)
    times = measure(working, repeats=repeats, sync=sync, clock=clock)
    fastest = min(times.values())
    contenders = {name: run for name, run in working.items()
                  if times[name] <= fastest * (1.0 + close)}
    if len(contenders) > 1:
        again = measure(contenders, repeats=repeats, sync=sync, clock=clock)
        times.update({name: min(times[name], ms) for name, ms in again.items()})
    picked = min(times, key=times.get)
    return Choice(what, picked, times, notes)
