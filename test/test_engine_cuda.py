"""SegmentationEngine on CUDA: graph capture, pinned buffers, events, fp16, release.

Skipped without a CUDA GPU; run on one with `pytest -q test/test_engine_cuda.py`.
"""

import json

import numpy as np
import pytest
import torch

from swiftseg_ros import cli
from swiftseg_ros.checkpoint import make_meta, save_checkpoint
from swiftseg_ros.engine import EngineConfig, FrameError, SegmentationEngine
from swiftseg_ros.engine.timing import STAGES
from swiftseg_ros.nets import NETWORKS, build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NETWORK_NAMES = ("swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid", "fastscnn")
NUM_CLASSES = 5
HEIGHT, WIDTH = 200, 300  # resized to 192x288 (or 192x320 for the pyramid)


def scene(height=HEIGHT, width=WIDTH, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = rng.uniform(40, 200, 3) + (xx / width)[..., None] * rng.uniform(-40, 40, 3)
    for _ in range(5):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, height / 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded checkpoints; zero-sum class weights so that labels are not one constant."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for network in NETWORK_NAMES:
        torch.manual_seed(0)
        options = NETWORKS[network].inference_options
        model = build_model(network, NUM_CLASSES, **options).eval()
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                      and m.out_channels == NUM_CLASSES][-1]
        with torch.no_grad():
            classifier.weight -= classifier.weight.mean(dim=1, keepdim=True)
            classifier.bias.zero_()
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


def test_device_part_is_one_captured_graph_and_matches_eager(engine):
    graphed, eager = engine(), engine(cuda_graphs=False)
    frame = scene()
    a = graphed.infer(frame, "bgr8").copy()
    b = eager.infer(frame, "bgr8")
    assert graphed.uses_cuda_graph and not eager.uses_cuda_graph
    assert (a.label == b.label).mean() >= 0.999
    np.testing.assert_array_equal(a.color, graphed.palette[a.label])


def test_graph_replays_new_frame_contents(engine):
    e = engine()
    first = e.infer(scene(seed=1), "rgb8").copy()
    second = e.infer(scene(seed=2), "rgb8").copy()
    again = e.infer(scene(seed=1), "rgb8")
    assert not np.array_equal(first.overlay, second.overlay)
    np.testing.assert_array_equal(again.overlay, first.overlay)


@pytest.mark.parametrize("network", NETWORK_NAMES)
@pytest.mark.parametrize("upsample", ["logits", "labels"])
def test_fp32_cuda_labels_match_the_cpu_engine(engine, weights, network, upsample):
    gpu = engine(network, upsample=upsample)
    cpu = SegmentationEngine(EngineConfig(weights=weights[network], upsample=upsample,
                                          outputs=("label",), warmup_iters=1))
    frame = scene()
    gpu_label = gpu.infer(frame, "bgr8").label
    cpu_label = cpu.infer(frame, "bgr8").label
    assert len(np.unique(cpu_label)) > 1
    assert (gpu_label == cpu_label).mean() >= 0.999
    cpu.release()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_agrees_with_fp32(engine, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    frame = scene(128, 256, seed=3)
    full = engine().infer(frame, "rgb8").copy()
    reduced = engine(precision=precision).infer(frame, "rgb8")
    assert (reduced.label == full.label).mean() >= 0.995
    assert np.abs(reduced.confidence.astype(int) - full.confidence).max() <= 8


def test_stage_timings_come_from_events_inside_the_graph(engine):
    e = engine()
    for _ in range(3):
        result = e.infer(scene(), "rgb8")
    assert set(result.timings) == set(STAGES)
    assert result.timings["forward"] > 0 and result.timings["upload"] > 0
    device_sum = sum(result.timings[s] for s in STAGES[1:6])
    assert device_sum <= result.timings["total"] + 0.5
    stats = e.stats()
    assert stats["cuda_graph"] is True and stats["memory"]["peak_mb"] > 0


def test_host_buffers_are_pinned_and_results_live_in_them(engine):
    e = engine()
    result = e.infer(scene(), "rgb8")
    io = e._io
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


def test_release_returns_device_memory_to_its_prior_level(weights):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    e = SegmentationEngine(EngineConfig(weights=weights["swiftnet_rn18"], device="cuda"))
    e.infer(scene(), "rgb8")
    e.set_outputs(("label",))
    e.infer(scene(), "rgb8")
    assert torch.cuda.memory_allocated() > before
    e.release()
    assert torch.cuda.memory_allocated() == before


def test_bench_on_cuda_reports_graph_and_peak_memory(tmp_path):
    out = tmp_path / "bench.json"
    assert cli.bench(["--networks", "fastscnn", "--sizes", "256x128", "--device", "cuda",
                      "--precision", "fp32,fp16", "--iters", "3", "--warmup", "2",
                      "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["precision"] for r in rows] == ["fp32", "fp16"]
    for row in rows:
        assert row["device"].startswith("cuda") and row["cuda_graph"] is True
        assert row["peak_mem_mb"] > 0 and row["upload_ms"] > 0
    assert 0.0 <= rows[1]["label_agreement"] <= 1.0
