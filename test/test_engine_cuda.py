"""SegmentationEngine on CUDA: graph capture, plans, pipelining, pinned buffers, events,
math modes, release. Each check is made so that it can fail: logits are spread (the
classifier is scaled) so that labels and confidences vary, results are compared with
an eager engine or the CPU on the same frames, and memory is checked reserved and pinned.

Skipped without a CUDA GPU; run on one with `pytest -q test/test_engine_cuda.py` (or
`make gpu-check`, which runs it first).
"""

import json

import numpy as np
import pytest
import torch

from swiftseg_ros import cli
from swiftseg_ros.checkpoint import make_meta, save_checkpoint
from swiftseg_ros.engine import EngineConfig, FrameError, SegmentationEngine
from swiftseg_ros.engine import launchers as engine_module
from swiftseg_ros.engine.cuda_support import bf16_refusal
from swiftseg_ros.engine.timing import DEVICE_STAGES, STAGES, CudaStageClock
from swiftseg_ros.nets import NETWORKS, build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NETWORK_NAMES = ("swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid", "fastscnn")
NUM_CLASSES = 5
HEIGHT, WIDTH = 200, 300  # resized to 192x288 (or 192x320 for the pyramid): 60000 pixels
LOGIT_STD = 3.0  # trained networks' logits spread over several units; random ones do not


def scene(height=HEIGHT, width=WIDTH, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = rng.uniform(40, 200, 3) + (xx / width)[..., None] * rng.uniform(-40, 40, 3)
    for _ in range(5):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, height / 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def _spread_classifier(network, model):
    """Zero-sum class weights (labels are not one constant), scaled so that the logits'
    standard deviation on a scene is LOGIT_STD (confidence then spans 0-255)."""
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                  and m.out_channels == NUM_CLASSES][-1]
    with torch.no_grad():
        classifier.weight -= classifier.weight.mean(dim=1, keepdim=True)
        classifier.bias.zero_()
        x = torch.from_numpy(scene(192, 320)).permute(2, 0, 1)[None].float() / 64.0 - 2.0
        std = float(model.forward_logits(x).std())
        classifier.weight *= LOGIT_STD / std


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for network in NETWORK_NAMES:
        torch.manual_seed(0)
        options = NETWORKS[network].inference_options
        model = build_model(network, NUM_CLASSES, **options).eval()
        _spread_classifier(network, model)
        meta = make_meta(network, NUM_CLASSES, network_options=options)
        paths[network] = save_checkpoint(folder / f"{network}.pt", model, meta)
    return paths


@pytest.fixture
def engine(weights):
    made = []

    def make(network="fastscnn", **changes):
        values = dict(weights=weights[network], device="cuda", warmup_iters=2,
                      outputs=("label", "color", "confidence", "overlay"))
        values.update(changes)
        made.append(SegmentationEngine(EngineConfig(**values)))
        return made[-1]

    yield make
    for e in made:
        e.release()


def agreement(a, b) -> float:
    return float((a == b).mean())


# ------------------------------------------------------------------ graphs and eager

@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_captured_graph_matches_an_eager_engine_on_the_same_frames(engine, network):
    graphed, eager = engine(network), engine(network, cuda_graphs=False)
    for seed in range(3):
        frame = scene(seed=seed)
        a = graphed.infer(frame, "bgr8").copy()
        b = eager.infer(frame, "bgr8")
        assert graphed.uses_cuda_graph and not eager.uses_cuda_graph
        assert len(np.unique(a.label)) > 1 and a.confidence.std() > 5.0
        # each engine measures its own memory format: summation orders may differ
        assert agreement(a.label, b.label) >= 0.999
        assert np.abs(a.confidence.astype(int) - b.confidence).max() <= 2
        np.testing.assert_array_equal(a.color, graphed.palette[a.label])


def test_graph_replays_new_frame_contents(engine):
    e = engine()
    first = e.infer(scene(seed=1), "rgb8").copy()
    second = e.infer(scene(seed=2), "rgb8").copy()
    again = e.infer(scene(seed=1), "rgb8")
    assert agreement(first.label, second.label) < 0.9
    np.testing.assert_array_equal(again.overlay, first.overlay)
    np.testing.assert_array_equal(again.label, first.label)


# ------------------------------------------------------------------ math modes

@pytest.mark.parametrize("network", NETWORK_NAMES)
@pytest.mark.parametrize("upsample", ["logits", "labels"])
def test_fp32_cuda_labels_match_the_cpu_engine(engine, weights, network, upsample):
    """fp32 means fp32: TF32 is off unless asked for, so the GPU agrees with the CPU."""
    gpu = engine(network, upsample=upsample)
    assert gpu.math_mode == "fp32"
    cpu = SegmentationEngine(EngineConfig(weights=weights[network], upsample=upsample,
                                          outputs=("label", "confidence"), warmup_iters=1))
    frame = scene()
    gpu_result = gpu.infer(frame, "bgr8")
    cpu_result = cpu.infer(frame, "bgr8")
    assert len(np.unique(cpu_result.label)) > 1
    assert agreement(gpu_result.label, cpu_result.label) >= 0.999
    assert np.abs(gpu_result.confidence.astype(int) - cpu_result.confidence).max() <= 2
    cpu.release()


def test_tf32_is_an_explicit_choice_and_the_process_flags_are_restored(engine):
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    fp32, tf32 = engine("swiftnet_rn18"), engine("swiftnet_rn18", tf32=True)
    assert (fp32.math_mode, tf32.math_mode) == ("fp32", "tf32")
    frame = scene(seed=5)
    a, b = fp32.infer(frame, "rgb8").copy(), tf32.infer(frame, "rgb8")
    assert agreement(a.label, b.label) >= 0.98  # TF32 rounds; it is not fp32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_agrees_with_fp32(engine, precision):
    if bf16_refusal(torch.device("cuda")) is not None and precision == "bf16":
        pytest.skip("GPU without native bf16")
    frame = scene(256, 384, seed=3)
    full = engine().infer(frame, "rgb8").copy()
    reduced = engine(precision=precision).infer(frame, "rgb8")
    assert full.confidence.std() > 5.0 and len(np.unique(full.confidence)) > 50
    assert agreement(reduced.label, full.label) >= 0.99
    assert np.abs(reduced.confidence.astype(int) - full.confidence).max() <= 8


def test_bf16_is_refused_in_one_line_where_it_is_only_emulated(weights):
    refusal = bf16_refusal(torch.device("cuda"))
    if torch.cuda.get_device_capability()[0] >= 8:
        assert refusal is None
        return
    with pytest.raises(Exception, match="only emulated") as info:
        SegmentationEngine(EngineConfig(weights=weights["fastscnn"], device="cuda",
                                        precision="bf16"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_memory_format_is_measured_per_network_and_both_give_the_same_labels(engine,
                                                                            network):
    measured, contiguous = engine(network, precision="fp16"), engine(
        network, precision="fp16", channels_last=False)
    frame = scene(seed=4)
    a = measured.infer(frame, "rgb8").copy()
    b = contiguous.infer(frame, "rgb8")
    choice = measured.stats()["choices"]["memory_format"]
    assert set(choice["times_ms"]) == {"channels_last", "contiguous"}
    assert measured.stats()["memory_format"] == choice["picked"]
    assert contiguous.stats()["memory_format"] == "contiguous"
    assert agreement(a.label, b.label) >= 0.99


# ------------------------------------------------------------------ timing

def test_stage_timings_come_from_events_inside_the_graph_and_are_fresh(engine):
    small, large = engine("swiftnet_rn18", outputs=("label",)), engine("swiftnet_rn18",
                                                                       outputs=("label",))
    forwards = []
    for seed in range(4):
        result = small.infer(scene(seed=seed), "rgb8")
        assert set(STAGES) <= set(result.timings)
        forwards.append(result.timings["forward"])
    assert len(set(forwards)) > 1  # stale events would repeat one value
    device_sum = sum(result.timings[s] for s in DEVICE_STAGES)
    assert 0 < device_sum <= result.timings["total"] + 0.05
    big = large.infer(scene(1024, 2048, seed=1), "rgb8").timings
    assert big["forward"] > 2 * np.median(forwards)  # 30x the pixels
    assert big["forward"] >= 0.3 * big["total"]
    assert large.stats()["cuda_graph"] is True


def test_without_graph_timing_events_the_graph_is_timed_from_outside(engine, monkeypatch):
    """Older torch (JetPack) has no external events: still a graph, device time known."""
    reference = engine().infer(scene(), "rgb8").copy()

    class OldTorchClock(CudaStageClock):
        def __init__(self, torch_module):
            super().__init__(torch_module, graph_safe=False)

    monkeypatch.setattr(engine_module, "CudaStageClock", OldTorchClock)
    e = engine()
    result = e.infer(scene(), "rgb8")
    assert e.uses_cuda_graph and "from outside" in e.stats()["cuda_graph_note"]
    assert all(np.isnan(result.timings[s]) for s in DEVICE_STAGES)
    assert 0 < result.timings["device"] <= result.timings["total"]
    assert agreement(result.label, reference.label) >= 0.999
    assert "forward" not in e.stats()["stages"] and "total" in e.stats()["stages"]


# ------------------------------------------------------------------ capture failure

def test_failed_capture_runs_eager_restores_the_stream_and_frees_its_memory(engine, weights):
    reference = engine().infer(scene(), "rgb8").copy()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    reserved = torch.cuda.memory_reserved()
    # one memory format, so one network variant: the one patched below
    e = SegmentationEngine(EngineConfig(weights=weights["fastscnn"], device="cuda",
                                        warmup_iters=2, channels_last=False,
                                        outputs=("label", "color", "confidence", "overlay")))
    forward = e.model.forward_logits

    def synchronizing_forward(x):
        torch.cuda.synchronize()  # not allowed while a graph is captured
        return forward(x)

    e.model.forward_logits = synchronizing_forward
    caller_stream = torch.cuda.current_stream()
    result = e.infer(scene(), "rgb8")
    assert torch.cuda.current_stream() == caller_stream
    assert not e.uses_cuda_graph
    assert "capture failed" in e.stats()["cuda_graph_note"]
    assert agreement(result.label, reference.label) >= 0.999
    e.release()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    assert torch.cuda.memory_reserved() == reserved


# ------------------------------------------------------------------ plans and pipelining

def test_alternating_sizes_and_outputs_reuse_graphs_in_the_shared_pool(engine):
    e = engine(outputs=("label",))
    frames = {size: scene(*size, seed=7) for size in ((200, 300), (128, 256))}
    first = {size: e.infer(f, "rgb8").label.copy() for size, f in frames.items()}
    e.set_outputs(("label", "confidence"))
    e.infer(frames[(200, 300)], "rgb8")
    e.set_outputs(("label",))
    for _ in range(2):
        for size, frame in frames.items():
            np.testing.assert_array_equal(e.infer(frame, "rgb8").label, first[size])
            assert e.uses_cuda_graph
    plans = e.stats()["plans"]
    assert plans["prepares"] == 3 and plans["evictions"] == 0
    assert plans["last_prepare_ms"] > 0


def test_pipelined_frames_match_serial_ones_under_real_asynchrony(engine):
    serial, pipelined = engine("swiftnet_rn18"), engine("swiftnet_rn18")
    frames = [scene(seed=s % 3) for s in range(7)]
    expected = [serial.infer(f, "rgb8").label.copy() for f in frames]
    got = []
    for index, frame in enumerate(frames):
        out = pipelined.infer_pipelined(frame, "rgb8", tag=index)
        if out is not None:
            got.append((out[0], out[1].label.copy()))
    tag, last = pipelined.flush_pipelined()
    got.append((tag, last.label.copy()))
    assert [t for t, _ in got] == list(range(7))
    for (index, label), want in zip(got, expected, strict=True):
        # a buffer race would swap or mix frames (agreement far lower); the engines'
        # measured memory formats may differ in summation order only
        assert agreement(label, want) >= 0.999, f"frame {index}"
    assert pipelined.uses_cuda_graph


# ------------------------------------------------------------------ buffers and release

def test_host_buffers_are_pinned_and_results_live_in_them(engine):
    e = engine()
    result = e.infer(scene(), "rgb8")
    io = e._current.io
    assert io.host_rgb.is_pinned()
    assert all(t.is_pinned() for t in io.host_outputs.values())
    assert np.shares_memory(result.label, io.host_outputs["label"].numpy())


def test_bad_frame_keeps_the_captured_graph_usable(engine):
    e = engine()
    good = e.infer(scene(), "rgb8").copy()
    with pytest.raises(FrameError):
        e.infer(scene().astype(np.float32), "rgb8")
    np.testing.assert_array_equal(e.infer(scene(), "rgb8").label, good.label)
    assert e.uses_cuda_graph


def test_set_outputs_recaptures_the_graph(engine):
    e = engine(outputs=("label",))
    label = e.infer(scene(), "rgb8").label.copy()
    e.set_outputs(("label", "color"))
    result = e.infer(scene(), "rgb8")
    assert e.uses_cuda_graph
    np.testing.assert_array_equal(result.label, label)
    np.testing.assert_array_equal(result.color, e.palette[label])


def _pinned_bytes():
    """Bytes PyTorch's pinned host allocator holds (None where this torch cannot say)."""
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is None:
        return None
    numbers = stats()
    return numbers.get("allocated_bytes.current", numbers.get("allocated_bytes.all.current"))


def test_release_returns_device_and_pinned_memory_to_their_prior_level(weights):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    pinned = _pinned_bytes()
    e = SegmentationEngine(EngineConfig(weights=weights["swiftnet_rn18"], device="cuda"))
    e.infer(scene(), "rgb8")
    e.set_outputs(("label",))
    e.infer(scene(), "rgb8")
    e.infer_pipelined(scene(), "rgb8")
    e.flush_pipelined()
    assert torch.cuda.memory_reserved() > reserved
    e.release()
    assert torch.cuda.memory_allocated() == allocated
    assert torch.cuda.memory_reserved() == reserved
    after = _pinned_bytes()
    if pinned is not None and after is not None:
        assert after <= pinned


def test_bench_on_cuda_reports_graphed_floor_pipelining_and_memory(tmp_path, weights):
    out = tmp_path / "bench.json"
    assert cli.bench(["--weights", str(weights["fastscnn"]), "--sizes", "512x256",
                      "--device", "cuda", "--precision", "fp32,fp16", "--iters", "10",
                      "--warmup", "3", "--pipelined", "4", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["precision"] for r in rows] == ["fp32", "fp16"]
    for row in rows:
        assert row["device"].startswith("cuda") and row["cuda_graph"] is True
        assert row["bare_runner"] == "graph" and row["bare_graph_ms"] > 0
        assert 0.5 < row["engine_over_bare"] < 20
        assert row["reserved_mem_mb"] > 1 and row["peak_mem_mb"] > 1
        assert row["pipelined_ms"] > 0 and row["upload_ms"] > 0
    assert rows[1]["label_agreement"] >= 0.99
