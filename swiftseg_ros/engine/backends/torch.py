"""The torch backend: the fused network run eagerly by PyTorch on the CPU or a CUDA GPU.

Its candidates for a plan are the (conv route, memory format) variants of the network
(kernels/cpu_kernels.py): on the CPU every convolution through oneDNN or PyTorch's own
per-call kernel choice, channels_last or contiguous; on CUDA cuDNN picks its algorithms
per shape itself (benchmark), so only the memory formats are candidates. channels_last is
usually cuDNN's fast layout for fp16, but depthwise convolutions (Fast-SCNN, MobileNetV2)
and a 3-channel first convolution can be slower in it, so it is measured per network.

On the CPU in fp32, each channels_last variant may have a twin whose 3x3 convolutions
that are faster as compiled Winograd at this input size (kernels/winograd_kernel.py) are
replaced: "onednn/channels_last+winograd", one more candidate. Which layers are faster is
timed once per input size, and each twin is built once per input size.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

import torch

from swiftseg_ros.engine.autotune import failure_note
from swiftseg_ros.engine.backends.base import Backend, PassSpec
from swiftseg_ros.engine.choices import TIMING_REPEATS, TORCH
from swiftseg_ros.engine.kernels.cpu_kernels import model_variants, onednn_available

log = logging.getLogger("swiftseg_ros.engine")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def why_unusable(config) -> str | None:
    """The torch backend runs wherever the engine does."""
    return None


class TorchBackend(Backend):
    name = TORCH

    def __init__(self, context):
        super().__init__(context)
        self._variants: dict[str, dict] = {}  # precision -> {(route, format): network}
        self._variant_notes: dict[str, dict] = {}
        self._compiled_filters = None
        self._compiled_layers: dict[tuple, Any] = {}  # input size -> faster layers or note
        self._compiled_twins: dict[tuple, Any] = {}

    def candidates(self, spec: PassSpec):
        variants, notes = self.variants(spec.precision)
        notes = dict(notes)
        candidates = {}
        for (route, memory_format), model in variants.items():
            candidates[f"{route}/{memory_format}"] = functools.partial(
                self._pass, spec, model, route, memory_format)
        self._add_compiled(candidates, notes, spec)
        return candidates, notes

    def default_model(self):
        precision = self.context.config.precision
        if precision not in DTYPES:  # "auto": the fp32 network until a plan chose
            precision = "fp32"
        return next(iter(self.variants(precision)[0].values()), None)

    def variants(self, precision: str):
        """({(route, memory format): network} at this precision, notes on those left out),
        made once per precision."""
        if precision not in self._variants:
            self._variants[precision], self._variant_notes[precision] = \
                self._make_variants(precision)
        return self._variants[precision], self._variant_notes[precision]

    def state(self, spec: PassSpec) -> dict:
        """The compiled-Winograd layers measured faster at this size, by module name,
        with their band rows per input size (or the note why there are none)."""
        layers = self._compiled_layers.get(tuple(spec.net_hw))
        if layers is None or spec.precision != "fp32":  # compiled Winograd runs fp32 only
            return {}
        if isinstance(layers, str):
            return {"compiled": layers}
        model = next(m for (_, fmt), m in self._variants["fp32"].items()
                     if fmt == "channels_last")
        faster = {}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if weight is not None and id(weight) in layers:
                bands = self._compiled_filters(module).band_rows
                faster[name] = [[h, w, rows] for (h, w), rows in bands.items()]
        return {"compiled": faster}

    def restore(self, spec: PassSpec, state: dict) -> None:
        compiled = state.get("compiled")
        if compiled is None or spec.precision != "fp32" \
                or tuple(spec.net_hw) in self._compiled_layers:
            return
        if isinstance(compiled, str):
            self._compiled_layers[tuple(spec.net_hw)] = compiled
            return
        from swiftseg_ros.engine.kernels import winograd_kernel

        if self._compiled_filters is None:
            self._compiled_filters = winograd_kernel.compiled_filters()
        variants, _ = self.variants("fp32")
        model = next(m for (_, fmt), m in variants.items() if fmt == "channels_last")
        layers = set()
        for name, bands in compiled.items():
            module = model.get_submodule(name)
            layers.add(id(module.weight))
            self._compiled_filters(module).band_rows.update(
                {(h, w): rows for h, w, rows in bands})
        self._compiled_layers[tuple(spec.net_hw)] = layers

    def release(self) -> None:
        self._variants.clear()
        self._compiled_filters = None
        self._compiled_layers.clear()
        self._compiled_twins.clear()

    def _make_variants(self, precision: str):
        context, config = self.context, self.context.config
        dtype = DTYPES[precision]
        model = context.model
        if model is None:  # an .onnx file as weights: nothing for torch to run
            return {}, {}
        if context.on_cuda or dtype != torch.float32:
            # .to() converts in place: the fp32 CPU original stays for the exporters
            model = copy.deepcopy(model)
        model = model.to(device=context.device, dtype=dtype)
        formats = ("channels_last", "contiguous") if config.channels_last else ("contiguous",)
        notes = {} if config.channels_last else {"*/channels_last": "not asked (channels_last off)"}
        if context.on_cuda:
            routes = ("torch",)  # cuDNN picks its algorithms per shape itself (benchmark)
        elif not config.onednn_convs:
            routes = ("torch",)
            notes["onednn/*"] = "not asked (onednn_convs off)"
        elif not onednn_available():
            routes = ("torch",)
            notes["onednn/*"] = "this torch has no oneDNN"
        elif dtype == torch.bfloat16 and not context.cpu.onednn_bf16:
            routes = ("torch",)
            notes["onednn/*"] = "oneDNN refuses bf16 on this CPU"
        else:
            routes = ("onednn", "torch")
        return model_variants(model, routes=routes, formats=formats), notes

    def _pass(self, spec: PassSpec, model, route, memory_format, conv_3x3: str = "direct"):
        pre = spec.preprocess(DTYPES[spec.precision], memory_format == "channels_last")
        suffix = "" if conv_3x3 == "direct" else f"+{conv_3x3}"
        return spec.finish(f"{route}/{memory_format}{suffix}", TORCH, pre,
                           model.forward_logits, model=model, route=route,
                           memory_format=memory_format, conv_3x3=conv_3x3)

    def compiled_note(self, precision: str) -> str | None:
        """Why compiled Winograd twins are not candidates here, or None when they are."""
        context = self.context
        if not context.config.winograd:
            return "not asked (winograd off)"
        if context.on_cuda:
            return "CUDA: cuDNN picks its own algorithms per shape (benchmark)"
        if precision != "fp32":
            return f"fp32 only ({precision} loses too much in its transforms)"
        try:
            from swiftseg_ros.engine.kernels.winograd_kernel import (
                MIN_CHANNELS,
                count_compiled_eligible,
            )
        except ImportError as exc:  # numba missing, or not built for this numpy
            return f"numba unavailable ({exc}): pip install numba"
        if not count_compiled_eligible(context.model):
            return f"no 3x3 convolution with {MIN_CHANNELS}+ channels in {context.network}"
        return None

    def _add_compiled(self, candidates: dict, notes: dict, spec: PassSpec) -> None:
        """Each channels_last candidate's compiled-Winograd twin as one more candidate;
        notes say where there is none."""
        variants, _ = self.variants(spec.precision)
        if not variants:
            return
        note = self.compiled_note(spec.precision)
        if note is not None:
            notes["winograd"] = note
            return
        for route, memory_format in variants:
            name = f"{route}/{memory_format}+winograd"
            if memory_format != "channels_last":
                notes[name] = "the compiled kernel reads and writes channels_last only"
                continue
            twin = self._compiled_twin(route, memory_format, spec.net_hw)
            if isinstance(twin, str):
                notes[name] = twin
            else:
                candidates[name] = functools.partial(self._pass, spec, twin, route,
                                                     memory_format, "winograd")

    def _compiled_twin(self, route: str, memory_format: str, net_hw) -> Any:
        """The fp32 variant (route, memory format) with each 3x3 convolution that is
        faster as compiled Winograd at this input size replaced, or the note why there is
        none. Which layers are faster is timed once per input size (on the first
        channels_last variant: the direct 3x3 convolutions of both routes are oneDNN's)."""
        from swiftseg_ros.engine.kernels import winograd_kernel

        variants = self._variants["fp32"]
        if self._compiled_filters is None:
            self._compiled_filters = winograd_kernel.compiled_filters()
        layers = self._compiled_layers.get(tuple(net_hw))
        if layers is None:
            example = torch.zeros((1, 3, *net_hw)).contiguous(memory_format=torch.channels_last)
            try:
                layers, summary = winograd_kernel.faster_compiled(
                    variants[(route, memory_format)], example, self._compiled_filters,
                    repeats=TIMING_REPEATS)
            except LookupError as exc:  # no layer is faster here
                layers = f"slower layer by layer at {net_hw[1]}x{net_hw[0]}: {exc}"
            except Exception as exc:  # the direct candidates still work
                layers = failure_note(exc)
            else:
                log.info("engine: %dx%d: compiled Winograd faster in %s", net_hw[1],
                         net_hw[0], summary)
            self._compiled_layers[tuple(net_hw)] = layers
        if isinstance(layers, str):
            return layers
        seen = (route, memory_format, tuple(net_hw))
        twin = self._compiled_twins.get(seen)
        if twin is None:
            twin = winograd_kernel.compiled_copy(variants[(route, memory_format)], layers,
                                                 self._compiled_filters)
            self._compiled_twins[seen] = twin
        return twin
