"""Making a plan: the buffers for one input, and its device pass chosen by measurement.

For a plan the planner asks every backend in use for its candidate passes (at each
precision that is a candidate), times them together (choices.pick_pass: the fastest
working one is kept, the others freed), lets the winner's backend refine it, picks the
faster class selection along edges on the winner's own logits, then warms the plan up
and finishes it (CUDA: captures its graph) with the engine's launcher. What it measured
is stored (choice_cache.py): with the same setup a later prepare builds only the stored
winner. It knows the backends only through their interface (backends/base.py).
"""

from __future__ import annotations

import functools
import logging
import time

import torch

from swiftseg_ros.engine.autotune import Choice, choose, failure_note
from swiftseg_ros.engine.backends import BACKENDS
from swiftseg_ros.engine.backends.base import PassSpec
from swiftseg_ros.engine.buffers import BatchIO, FrameIO
from swiftseg_ros.engine.choice_cache import ChoiceCache, choice_key
from swiftseg_ros.engine.choices import (
    TIMING_REPEATS,
    DevicePass,
    pick_pass,
    precision_name,
    split_precision,
)
from swiftseg_ros.engine.cuda_support import math_mode
from swiftseg_ros.engine.graph_cache import cache_folder
from swiftseg_ros.engine.plans import Plan, PlanKey
from swiftseg_ros.engine.postprocess import BatchPostprocessor, Postprocessor
from swiftseg_ros.engine.preprocess import BatchPreprocessor, Preprocessor
from swiftseg_ros.errors import ConfigError

log = logging.getLogger("swiftseg_ros.engine")


class Planner:
    """Builds the engine's plans from its backends, measured on its launcher."""

    def __init__(self, engine, backends: dict, backend_notes: dict[str, str], launcher):
        self.engine = engine  # config, device, precisions, palette, mean/std, network facts
        self.backends = backends
        self.backend_notes = backend_notes
        self.launcher = launcher
        self.cache = ChoiceCache(cache_folder(engine.config.cache_dir))

    def make(self, key: PlanKey, net_hw: tuple[int, int], device_pass) -> Plan:
        """A ready plan for `key`: built, chosen, warmed up and (CUDA) captured;
        `device_pass(plan, marks=True)` is the engine's pass over a plan."""
        started = time.perf_counter()
        with torch.inference_mode(), math_mode(self.engine.config.tf32):
            plan = self._build(key, net_hw)
            self.launcher.warm_up(plan, device_pass)
            self.launcher.finish(plan, device_pass)
        plan.prepare_ms = (time.perf_counter() - started) * 1000.0
        return plan

    def _build(self, key: PlanKey, net_hw: tuple[int, int]) -> Plan:
        """Buffers for this plan, and its device pass chosen by timing every backend's
        candidates (on CUDA on the engine's stream, where the pass will run)."""
        engine = self.engine
        net_h, net_w = net_hw
        if key.batch == 1:
            io = FrameIO(key.height, key.width, engine.device)
            rgbs = [io.device_rgb]
        else:
            io = BatchIO(key.batch, key.height, key.width, engine.device)
            rgbs = io.device_rgbs
        for rgb in rgbs:
            rgb.zero_()
        output_hw = ((key.height, key.width) if engine.config.output_size == "input"
                     else (net_h, net_w))
        specs = {precision: PassSpec(io, key, net_hw, output_hw, precision,
                                     functools.partial(self._preprocessor, rgbs, net_hw),
                                     functools.partial(self._finish, rgbs, key, output_hw,
                                                       precision))
                 for precision in engine.precisions}
        cache_key = choice_key(engine, key, net_hw)
        record = None if engine.config.retune else self.cache.load(cache_key)
        found = None if record is None else self._cached_pass(record, specs)
        if found is not None:
            chosen, choices = found
            source = "cache"
        else:
            chosen, choices = self._measured_pass(specs)
            source = "retune" if engine.config.retune else "measured"
        chosen.first_logits = None  # only the choices above needed them
        log.info("engine: %dx%d: %s%s", net_w, net_h,
                 "(from the choices cache) " if source == "cache" else "",
                 "; ".join(choice.describe() for choice in choices.values()))
        if source != "cache":
            backend = self.backends[chosen.backend]
            self.cache.store(cache_key, {
                # the candidate's own name, as its backend offers it (before refine)
                "winner": {"backend": chosen.backend, "precision": chosen.precision,
                           "name": split_precision(choices["device_pass"].picked)[0]},
                "choices": {what: choice.as_dict() for what, choice in choices.items()},
                "state": backend.state(specs[chosen.precision])})
        if key.batch == 1:
            io.set_outputs({name: chosen.post.outputs[name] for name in key.outputs})
        else:
            io.set_outputs([{name: outputs[name] for name in key.outputs}
                            for outputs in chosen.post.outputs])
        return Plan(key, io, chosen.pre, chosen.post, self.launcher.clock(),
                    device_pass=chosen, choices=choices, choices_source=source)

    def _measured_pass(self, specs: dict[str, PassSpec]):
        """(the fastest pass of every backend's candidates, the choices that say so)."""
        candidates, notes = {}, {}
        for name in BACKENDS:
            if name not in self.backends:
                notes[name] = self.backend_notes[name]
                continue
            for precision, spec in specs.items():
                offered, why = self.backends[name].candidates(spec)
                if len(specs) > 1:  # precision auto: names tell the precisions apart
                    offered = {precision_name(n, precision): c for n, c in offered.items()}
                    why = {precision_name(n, precision): w for n, w in why.items()}
                candidates.update(offered)
                notes.update(why)
        try:
            chosen, choices = self.launcher.pick(
                lambda sync: pick_pass(candidates, notes, sync=sync,
                                       precisions=tuple(specs)))
        except ConfigError:
            raise
        except RuntimeError as exc:
            raise ConfigError(f"engine: {exc}") from exc
        chosen = self.backends[chosen.backend].refine(chosen, choices,
                                                      specs[chosen.precision])
        _choose_edge_kernel(chosen, choices)
        return chosen, choices

    def _cached_pass(self, record: dict, specs: dict[str, PassSpec]):
        """(the stored winner, built alone, the stored choices), or None with a warning
        when it cannot be built here any more (then the caller measures)."""
        winner = record["winner"]
        backend = self.backends.get(winner.get("backend"))
        spec = specs.get(winner.get("precision"))
        try:
            choices = {what: Choice(what, **choice) for what, choice
                       in record["choices"].items()}
            if backend is None or spec is None:
                raise LookupError(f"{winner} is not a candidate of this engine")
            backend.restore(spec, record.get("state") or {})
            offered, _ = backend.candidates(spec)
            if winner.get("name") not in offered:
                raise LookupError(f"{winner.get('name')} is not offered here any more")
            chosen = self.launcher.pick(lambda sync: offered[winner["name"]]())
            chosen = backend.refine(chosen, choices, spec)
        except Exception as exc:  # anything: measuring again is always possible
            log.warning("engine: the cached choice cannot be used (%s); measuring again",
                        failure_note(exc).removeprefix("failed: "))
            return None
        _choose_edge_kernel(chosen, choices, cached=choices.get("edge_labels"))
        return chosen, choices

    def _preprocessor(self, rgbs, net_hw, dtype, channels_last: bool):
        """The pre-processing of a plan's frame(s) into a new network input."""
        engine = self.engine
        if len(rgbs) == 1:
            return Preprocessor(rgbs[0], net_hw, engine.mean, engine.std, dtype, channels_last)
        return BatchPreprocessor(rgbs, net_hw, engine.mean, engine.std, dtype, channels_last)

    def _finish(self, rgbs, key, output_hw, precision, name, backend, pre, forward,
                upsample=None, **extra) -> DevicePass:
        """A candidate pass from a backend's pre-processing and forward: the
        post-processing is shaped by a real forward pass (also its first warm-up pass);
        a batch's frames each get theirs, on their slice of the logits."""
        engine = self.engine
        logits = forward(pre.run())
        frames = getattr(pre, "frames", [pre])
        posts = [Postprocessor(logits[index:index + 1], key.outputs,
                               upsample or engine.config.upsample, output_hw,
                               engine.palette_device, engine.config.overlay_alpha,
                               _overlay_source(key, rgb, frame, output_hw, engine.mean,
                                               engine.std),
                               align_corners=engine.align_corners)
                 for index, (rgb, frame) in enumerate(zip(rgbs, frames, strict=True))]
        post = posts[0] if len(posts) == 1 else BatchPostprocessor(posts)
        return DevicePass(name, backend, pre, forward, post, first_logits=logits,
                          precision=precision, **extra)


def _choose_edge_kernel(chosen: DevicePass, choices: dict, cached: Choice | None = None
                        ) -> None:
    """The faster implementation of the post-processing's edge selection (torch's or the
    compiled one, kernels/edge_labels.edge_kernels), timed on this pass's own logits: the
    choice "edge_labels". Plans without edge selection (CUDA, labels mode, confidence)
    have none."""
    post = chosen.post
    if not post.edge_kernels:
        return
    if cached is not None and cached.picked in post.edge_kernels:
        try:
            post.use_edge_kernel(cached.picked)  # the only one built: numba only if compiled
            return
        except Exception as exc:  # e.g. numba no longer imports: measure what does
            log.warning("engine: the cached edge_labels=%s cannot be used (%s); measuring "
                        "again", cached.picked, failure_note(exc).removeprefix("failed: "))
    logits = chosen.first_logits

    def post_with(name: str) -> None:
        post.use_edge_kernel(name)
        post.run(logits)

    runs = {name: functools.partial(post_with, name) for name in post.edge_kernels}
    choice = choose("edge_labels", runs, repeats=TIMING_REPEATS, notes=post.edge_notes)
    post.use_edge_kernel(choice.picked)
    choices["edge_labels"] = choice


def _overlay_source(key: PlanKey, rgb: torch.Tensor, pre, output_hw, mean, std):
    """Channel views of the image under the overlay, at the output size, on 0-255."""
    if "overlay" not in key.outputs:
        return None
    if output_hw == (key.height, key.width):
        return rgb.permute(2, 0, 1).unsqueeze(0), (1.0,) * 3, (0.0,) * 3
    # the resized network input: undo the normalization
    return pre.network_input, std, mean
