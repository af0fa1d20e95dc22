"""The engine's measured choices: conv route and memory format per input size, reported."""

import numpy as np
import pytest
import torch

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.engine.choices import DevicePass, pick_pass
from swiftseg_ros.engine.kernels.cpu_kernels import onednn_available
from swiftseg_ros.errors import ConfigError
from swiftseg_ros.ros.diagnostics import build_status
from swiftseg_ros.ros.frames import FrameCounters


@pytest.fixture(scope="module")
def engine():
    seg = SegmentationEngine(EngineConfig(network="fastscnn", outputs=("label",),
                                          warmup_iters=1))
    seg.infer(np.full((64, 128, 3), 90, np.uint8), "rgb8")
    yield seg
    seg.release()


def test_conv_route_and_memory_format_are_timed_and_the_fastest_kept(engine):
    choices = engine.stats()["choices"]
    routes, formats = choices["cpu_convs"], choices["memory_format"]
    expected_routes = {"onednn", "torch"} if onednn_available() else {"torch"}
    if len(expected_routes) > 1:
        assert set(routes["times_ms"]) == expected_routes
        assert routes["picked"] == min(routes["times_ms"], key=routes["times_ms"].get)
    assert set(formats["times_ms"]) == {"channels_last", "contiguous"}
    assert formats["picked"] == min(formats["times_ms"], key=formats["times_ms"].get)
    assert choices["backend"]["picked"] == "torch"
    assert "not asked" in choices["backend"]["notes"]["onnxruntime"]


def test_stats_carry_backend_and_the_cpu_record(engine):
    stats = engine.stats()
    assert stats["backend"] == "torch"
    assert stats["cpu"]["model"] and isinstance(stats["cpu"]["native_bf16"], bool)
    assert "onednn_convs" not in stats


def test_diagnostics_show_the_backend_and_each_choice(engine):
    status = build_status(counters=FrameCounters(), engine_stats=engine.stats())
    values = dict(status.values)
    assert values["backend"] == "torch"
    picked = engine.stats()["choices"]["memory_format"]["picked"]
    assert values["choice memory_format"].startswith(picked + " (")
    assert "native bf16" in values["cpu"]


class _Pass:
    """A minimal pre-processing / post-processing pair around a forward that may fail."""

    def __init__(self):
        self.network_input = torch.ones(4)

    def run(self, *args):
        return self.network_input


def _candidate(name, forward, backend="torch", route="torch", memory_format="contiguous"):
    return lambda: DevicePass(name, backend, _Pass(), forward, _Pass(), route=route,
                              memory_format=memory_format)


def test_a_candidate_that_raises_is_dropped_with_its_error():
    def broken(x):
        raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx512bw")

    winner, choices = pick_pass({
        "onednn/contiguous": _candidate("onednn/contiguous", broken, route="onednn"),
        "torch/contiguous": _candidate("torch/contiguous", lambda x: x * 2),
    }, notes={})
    assert winner.name == "torch/contiguous"
    assert "bf16 path needs" in choices["cpu_convs"].notes["onednn"]


def test_the_only_backend_asked_for_fails_with_its_own_line():
    def unwritable():
        raise ConfigError("ONNX cache folder /x: cannot write (Read-only file system)")

    with pytest.raises(ConfigError, match="cannot write"):
        pick_pass({"onnxruntime": unwritable}, notes={})
