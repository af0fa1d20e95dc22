"""The network's memory format on CUDA, chosen by timing both on the machine at hand.

channels_last is usually the fast layout for cuDNN's fp16 convolutions, but not for every
network on every GPU: depthwise convolutions (Fast-SCNN, MobileNetV2, the dilated
depthwise conv in Fast-SCNN's fusion module) and a 3-channel first convolution can run
slower in it. So the engine times the network's forward pass in both formats at its
first input size (`autotune.choose`, interleaved medians, on the engine's stream) and
keeps the faster; the choice is reported in `stats()["choices"]["memory_format"]`.
"""

from __future__ import annotations

import copy

import torch

from swiftseg_ros.engine.autotune import Choice, choose

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def choose_memory_format(model: torch.nn.Module, input_hw: tuple[int, int], dtype,
                         candidates=("channels_last", "contiguous"), repeats: int = 5,
                         warmup: int = 2, sync=None) -> tuple[Choice, torch.nn.Module]:
    """(the choice, the network in the picked format) among `candidates`.

    `model` may be converted in place (nn.Module.to does) and is the one returned when
    its format wins; the other formats run on copies that are dropped. Inputs are random
    (never zeros, which can run faster than real data).
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(0)
    models, runs = {}, {}
    # the engine's network holds inference tensors: copy and convert them in that mode
    with torch.inference_mode():
        image = torch.randn((1, 3, *input_hw), generator=generator).to(device=device,
                                                                        dtype=dtype)
        for index, name in enumerate(candidates):
            fmt = FORMATS[name]
            models[name] = (model if index == 0 else copy.deepcopy(model)).to(memory_format=fmt)
            runs[name] = _forward(models[name], image.contiguous(memory_format=fmt))
        choice = choose("memory_format", runs, repeats=repeats, warmup=warmup, sync=sync)
    return choice, models[choice.picked]


def _forward(model, image):
    def run():
        return model.forward_logits(image)

    return run
