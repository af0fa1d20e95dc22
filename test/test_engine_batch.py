"""SegmentationEngine.infer_batch: several frames of one size in one forward pass, each
frame's outputs those of `infer` on it alone."""

import numpy as np
import pytest
from test_engine import checkpoint_of, scene

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.errors import ConfigError

HEIGHT, WIDTH = 64, 128


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return checkpoint_of(tmp_path_factory.mktemp("batch"), "fastscnn")


def _engine(weights, **settings):
    return SegmentationEngine(EngineConfig(weights=weights, warmup_iters=1, **settings))


@pytest.mark.parametrize("outputs", [("label", "color"), ("label", "confidence", "overlay")])
def test_each_frame_of_a_batch_gets_the_outputs_of_infer_alone(weights, outputs):
    seg = _engine(weights, outputs=outputs, upsample="logits")
    frames = [(scene(HEIGHT, WIDTH, seed=seed), fmt)
              for seed, fmt in ((1, "rgb8"), (2, "bgr8"), (3, "rgb8"))]
    alone = [seg.infer(frame, fmt).copy() for frame, fmt in frames]
    batch = seg.infer_batch(frames)
    assert len(batch) == 3
    assert seg.stats()["plans"]["cached"] == 2  # batch 1 and batch 3
    for single, batched in zip(alone, batch, strict=True):
        for name in outputs:
            np.testing.assert_array_equal(getattr(batched, name), getattr(single, name))
        assert batched.timings["total"] > 0


def test_batch_results_are_views_until_the_next_call(weights):
    seg = _engine(weights)
    frames = [(scene(HEIGHT, WIDTH, seed=seed), "rgb8") for seed in (4, 5)]
    first = seg.infer_batch(frames)
    kept = [result.copy() for result in first]
    seg.infer_batch(frames[::-1])
    np.testing.assert_array_equal(first[0].label, kept[1].label)  # overwritten in place


def test_a_one_frame_batch_is_infer(weights):
    seg = _engine(weights)
    frame = scene(HEIGHT, WIDTH, seed=6)
    (result,) = seg.infer_batch([(frame, "rgb8")])
    np.testing.assert_array_equal(result.label, seg.infer(frame, "rgb8").label)
    assert seg.infer_batch([]) == []
    assert seg.stats()["plans"]["cached"] == 1


def test_frames_of_different_sizes_are_refused_in_one_line(weights):
    seg = _engine(weights)
    with pytest.raises(ConfigError, match="share the input size, got 128x64, 96x64"):
        seg.infer_batch([(scene(HEIGHT, WIDTH), "rgb8"), (scene(HEIGHT, 96), "rgb8")])


def test_onnxruntime_runs_a_batch_from_its_own_batched_graph(weights):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    seg = _engine(weights, backend="onnxruntime")
    frames = [(scene(HEIGHT, WIDTH, seed=seed), "rgb8") for seed in (7, 8)]
    alone = [seg.infer(frame, fmt).label.copy() for frame, fmt in frames]
    batch = seg.infer_batch(frames)
    assert seg.backend == "onnxruntime"
    for single, batched in zip(alone, batch, strict=True):
        assert (batched.label == single).mean() >= 0.999
