"""SegmentationEngine on the CPU: its outputs against plain torch references, bad frames,
re-planning, statistics, checkpoints and release."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swiftseg_ros.checkpoint import load_model, make_meta, save_checkpoint
from swiftseg_ros.engine import EngineConfig, FrameError, SegmentationEngine, colorize, cpu_caps
from swiftseg_ros.engine.postprocess import Postprocessor
from swiftseg_ros.engine.timing import STAGES
from swiftseg_ros.errors import CheckpointError, SwiftsegError
from swiftseg_ros.nets import NETWORKS, build_model

NETWORK_NAMES = ("swiftnet_rn18", "swiftnet_mnv2", "swiftnet_rn18_pyramid", "fastscnn")
FORMATS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
MEAN = (90.0, 100.0, 110.0)
STD = (50.0, 60.0, 70.0)
PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200]]
NUM_CLASSES = 4
# 70x100 needs resizing for every network (to 64x96, or 64x128 for the pyramid)
HEIGHT, WIDTH = 70, 100


def scene(height, width, channels=3, seed=0):
    """A synthetic camera frame: a colour gradient with a few flat shapes and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = rng.uniform(40, 200, channels) + (xx / width)[..., None] * rng.uniform(-40, 40, channels)
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(5, height / 2), rng.uniform(5, width / 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        image[inside] = rng.uniform(0, 255, channels)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def checkpoint_of(tmp_dir, network, seed=0):
    """A checkpoint with random weights and non-trivial BN statistics, mean, std and palette."""
    torch.manual_seed(seed)
    model = build_model(network, NUM_CLASSES, **NETWORKS[network].inference_options)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    # zero-sum class weights: with all-positive (post-ReLU) features a random classifier
    # otherwise picks one class everywhere, and label tests would compare constants
    classifier = [m for m in model.modules()
                  if isinstance(m, torch.nn.Conv2d) and m.out_channels == NUM_CLASSES][-1]
    with torch.no_grad():
        classifier.weight -= classifier.weight.mean(dim=1, keepdim=True)
        classifier.bias.zero_()
    meta = make_meta(network, NUM_CLASSES, palette=PALETTE, mean=MEAN, std=STD,
                     network_options=NETWORKS[network].inference_options)
    return save_checkpoint(tmp_dir / f"{network}.pt", model.eval(), meta)


def as_rgb(frame, pixel_format):
    if frame.ndim == 2:
        frame = frame[:, :, None]
    return {
        "rgb8": frame, "bgr8": frame[..., ::-1], "rgba8": frame[..., :3],
        "bgra8": frame[..., 2::-1], "mono8": np.repeat(frame, 3, axis=2),
    }[pixel_format]


def reference_input(frame, pixel_format, inference_hw, mean=MEAN, std=STD):
    """Channel order, normalization and bilinear resize with plain torch ops."""
    rgb = np.ascontiguousarray(as_rgb(frame, pixel_format))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    if tuple(x.shape[-2:]) != tuple(inference_hw):
        x = F.interpolate(x, size=inference_hw, mode="bilinear", align_corners=False)
    return x


def reference_logits(model, network_input, upsample, output_hw):
    """Logits at the resolution the engine selects classes at (eager, unfused, fp32)."""
    with torch.no_grad():
        logits = model.forward_logits(network_input.float().contiguous())
    if upsample == "logits":
        logits = F.interpolate(logits, size=output_hw, mode="bilinear", align_corners=False)
    return logits


def to_output(image_nchw, upsample, output_hw):
    """A per-pixel map at selection resolution -> the output size, as the mode does it."""
    if upsample == "labels":
        image_nchw = F.interpolate(image_nchw, size=output_hw, mode="nearest-exact")
    return image_nchw[0, 0]



@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {name: checkpoint_of(folder, name) for name in NETWORK_NAMES}


_ENGINES = {}


@pytest.fixture(scope="module")
def engine_for(checkpoints):
    """Engines shared across the tests of this module, by (network, upsample, precision)."""
    def get(network, upsample="labels", precision="fp32"):
        key = (network, upsample, precision)
        if key not in _ENGINES:
            _ENGINES[key] = SegmentationEngine(EngineConfig(
                weights=checkpoints[network], upsample=upsample, precision=precision,
                outputs=("label", "color", "confidence", "overlay"), warmup_iters=1))
        return _ENGINES[key]

    yield get
    for engine in _ENGINES.values():
        engine.release()
    _ENGINES.clear()


@pytest.fixture(scope="module")
def plain_model(checkpoints):
    models = {}

    def get(network):
        if network not in models:
            models[network] = load_model(checkpoints[network])[0].eval()
        return models[network]

    return get


def frame_for(pixel_format, height=HEIGHT, width=WIDTH, seed=1):
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[pixel_format]
    frame = scene(height, width, channels, seed)
    return frame[:, :, 0] if pixel_format == "mono8" else frame


@pytest.mark.parametrize("pixel_format", FORMATS)
def test_preprocessing_matches_plain_torch(engine_for, pixel_format):
    engine = engine_for("fastscnn")
    frame = frame_for(pixel_format)
    engine.infer(frame, pixel_format)
    expected = reference_input(frame, pixel_format, (64, 96))
    torch.testing.assert_close(engine.network_input, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("network, inference_size", [
    ("swiftnet_rn18", (96, 64)), ("swiftnet_rn18_pyramid", (128, 64))])
def test_inference_size_is_input_rounded_to_size_divisor(engine_for, network, inference_size):
    engine = engine_for(network)
    engine.infer(frame_for("rgb8"), "rgb8")
    assert engine.inference_size == inference_size
    assert tuple(engine.network_input.shape[-2:]) == inference_size[::-1]


def check_label_against_eager(engine, model, pixel_format, upsample):
    frame = frame_for(pixel_format)
    result = engine.infer(frame, pixel_format)
    logits = reference_logits(model, engine.network_input, upsample, (HEIGHT, WIDTH))
    expected = to_output(logits.argmax(1, keepdim=True).to(torch.uint8), upsample,
                         (HEIGHT, WIDTH))
    assert result.label.shape == (HEIGHT, WIDTH)
    assert len(np.unique(result.label)) > 1, "a constant label map would prove nothing"
    np.testing.assert_array_equal(result.label, expected.numpy())


@pytest.mark.parametrize("upsample", ("logits", "labels"))
@pytest.mark.parametrize("network, pixel_format", [
    ("swiftnet_rn18", "rgb8"), ("swiftnet_mnv2", "bgr8"),
    ("swiftnet_rn18_pyramid", "bgra8"), ("fastscnn", "mono8")])
def test_label_equals_class_selection_on_eager_logits_for_every_network(
        engine_for, plain_model, network, pixel_format, upsample):
    check_label_against_eager(engine_for(network, upsample), plain_model(network),
                              pixel_format, upsample)


@pytest.mark.parametrize("upsample", ("logits", "labels"))
@pytest.mark.parametrize("pixel_format", FORMATS)
def test_label_equals_class_selection_on_eager_logits_for_every_format(
        engine_for, plain_model, pixel_format, upsample):
    check_label_against_eager(engine_for("swiftnet_mnv2", upsample),
                              plain_model("swiftnet_mnv2"), pixel_format, upsample)


@pytest.mark.parametrize("network", ("swiftnet_mnv2", "fastscnn"))
def test_outputs_without_resizing_replicate_network_resolution_blocks(
        engine_for, plain_model, network):
    engine = engine_for(network)
    frame = frame_for("rgb8", 64, 128, seed=4)
    result = engine.infer(frame, "rgb8")
    assert engine.inference_size == (128, 64)
    torch.testing.assert_close(engine.network_input, reference_input(frame, "rgb8", (64, 128)),
                               atol=1e-5, rtol=1e-5)
    logits = reference_logits(plain_model(network), engine.network_input, "labels", (64, 128))
    label = to_output(logits.argmax(1, keepdim=True).to(torch.uint8), "labels", (64, 128))
    np.testing.assert_array_equal(result.label, label.numpy())
    np.testing.assert_array_equal(result.color, np.asarray(PALETTE, np.uint8)[result.label])
    probability = logits.double().softmax(1).amax(1, keepdim=True) * 255.0
    expected = to_output(probability, "labels", (64, 128)).numpy()
    assert np.abs(result.confidence.astype(np.float64) - expected).max() <= 2.0


@pytest.mark.parametrize("changes", [{"channels_last": False}, {"onednn_convs": False}],
                         ids=["contiguous-format", "torch-kernel-choice"])
def test_optional_cpu_paths_give_the_same_labels(checkpoints, engine_for, changes):
    frame = frame_for("bgr8")
    expected = engine_for("swiftnet_mnv2").infer(frame, "bgr8").label.copy()
    engine = SegmentationEngine(EngineConfig(weights=checkpoints["swiftnet_mnv2"],
                                             outputs=("label",), warmup_iters=1, **changes))
    result = engine.infer(frame, "bgr8")
    np.testing.assert_array_equal(result.label, expected)
    torch.testing.assert_close(engine.network_input,
                               reference_input(frame, "bgr8", (64, 96)), atol=1e-5, rtol=1e-5)
    engine.release()


@pytest.mark.parametrize("upsample", ("logits", "labels"))
def test_color_is_palette_of_label(engine_for, upsample):
    result = engine_for("swiftnet_mnv2", upsample).infer(frame_for("rgb8"), "rgb8")
    assert len(np.unique(result.label)) > 1
    np.testing.assert_array_equal(result.color, np.asarray(PALETTE, np.uint8)[result.label])


@pytest.mark.parametrize("upsample", ("logits", "labels"))
def test_confidence_is_fp32_softmax_max_within_two_levels(engine_for, plain_model, upsample):
    """At the network's resolution, then upsampled as the mode upsamples (bilinearly in
    logits mode: never from full-size logits)."""
    engine = engine_for("swiftnet_mnv2", upsample)
    result = engine.infer(frame_for("bgr8"), "bgr8")
    logits = reference_logits(plain_model("swiftnet_mnv2"), engine.network_input, "labels",
                              None)
    probability = logits.double().softmax(1).amax(1, keepdim=True) * 255.0
    if upsample == "logits":
        expected = F.interpolate(probability, size=(HEIGHT, WIDTH), mode="bilinear",
                                 align_corners=False)[0, 0].numpy()
    else:
        expected = to_output(probability, upsample, (HEIGHT, WIDTH)).numpy()
    assert np.abs(result.confidence.astype(np.float64) - expected).max() <= 2.0
    assert result.confidence.std() > 1.0  # not one flat value


def test_overlay_blends_color_over_the_image(engine_for):
    engine = engine_for("fastscnn")
    frame = frame_for("bgra8")
    result = engine.infer(frame, "bgra8")
    image = as_rgb(frame, "bgra8").astype(np.float64)
    alpha = engine.config.overlay_alpha
    expected = (1 - alpha) * image + alpha * result.color
    assert np.abs(result.overlay - expected).max() <= 0.5 + 1e-6


def test_outputs_at_network_size_follow_the_inference_size(checkpoints, plain_model):
    engine = SegmentationEngine(EngineConfig(
        weights=checkpoints["fastscnn"], output_size="network", upsample="logits",
        outputs=("label", "overlay"), warmup_iters=1))
    frame = frame_for("rgb8")
    result = engine.infer(frame, "rgb8")
    width, height = engine.inference_size
    assert result.label.shape == (height, width) and result.overlay.shape == (height, width, 3)
    logits = reference_logits(plain_model("fastscnn"), engine.network_input, "logits",
                              (height, width))
    np.testing.assert_array_equal(result.label, logits.argmax(1)[0].numpy())
    resized = reference_input(frame, "rgb8", (height, width), (0, 0, 0), (1, 1, 1))
    image = resized[0].permute(1, 2, 0).numpy()
    expected = 0.5 * image + 0.5 * colorize(result.label, np.asarray(PALETTE, np.uint8))
    assert np.abs(result.overlay - expected).max() <= 0.5 + 1e-3
    engine.release()


@pytest.mark.skipif(not cpu_caps.detect().native_bf16,
                    reason=f"no native bf16: this CPU {cpu_caps.detect().bf16_reason}")
def test_bf16_labels_agree_with_fp32_on_995_permille(engine_for):
    frame = frame_for("rgb8", 128, 256, seed=3)
    fp32 = engine_for("fastscnn").infer(frame, "rgb8").copy()
    bf16 = engine_for("fastscnn", precision="bf16").infer(frame, "rgb8")
    assert bf16.label.dtype == np.uint8
    assert (bf16.label == fp32.label).mean() >= 0.995


def test_fixed_inference_size_resizes_without_cropping(checkpoints, plain_model):
    engine = SegmentationEngine(EngineConfig(
        weights=checkpoints["swiftnet_mnv2"], inference_size=(64, 32), outputs=("label",),
        warmup_iters=1))
    frame = frame_for("rgb8", 60, 200)
    result = engine.infer(frame, "rgb8")
    assert engine.inference_size == (64, 32)
    expected_input = reference_input(frame, "rgb8", (32, 64))
    torch.testing.assert_close(engine.network_input, expected_input, atol=1e-5, rtol=1e-5)
    logits = reference_logits(plain_model("swiftnet_mnv2"), engine.network_input, "labels",
                              (60, 200))
    expected = to_output(logits.argmax(1, keepdim=True).to(torch.uint8), "labels", (60, 200))
    np.testing.assert_array_equal(result.label, expected.numpy())
    engine.release()


@pytest.mark.parametrize("bad, pixel_format, message", [
    (np.zeros((32, 32, 3), np.float32), "rgb8", "dtype"),
    (np.zeros((32, 32, 3), np.uint16), "rgb8", "dtype"),
    (np.zeros((32, 32, 4), np.uint8), "rgb8", "channels"),
    (np.zeros((32, 32, 3), np.uint8), "mono8", "channels"),
    (np.zeros((32, 32), np.uint8), "bgra8", "shape"),
    (np.zeros((0, 32, 3), np.uint8), "rgb8", "empty"),
    (np.zeros((32, 5000, 3), np.uint8), "rgb8", "max_input_size"),
    (np.zeros((32, 32, 3), np.uint8), "yuv422", "pixel format"),
    ([[1, 2, 3]], "rgb8", "numpy"),
])
def test_bad_frame_raises_and_engine_stays_usable(engine_for, bad, pixel_format, message):
    engine = engine_for("fastscnn")
    good = frame_for("rgb8")
    before = engine.infer(good, "rgb8").copy()
    with pytest.raises(FrameError, match=message):
        engine.infer(bad, pixel_format)
    after = engine.infer(good, "rgb8")
    np.testing.assert_array_equal(after.label, before.label)
    assert engine.input_size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("make_view", [
    pytest.param(lambda f: np.pad(f, ((0, 0), (0, 13), (0, 0)))[:, :WIDTH], id="padded-step"),
    pytest.param(lambda f: np.ascontiguousarray(f[::-1, ::-1, ::-1])[::-1, ::-1, ::-1],
                 id="negative-strides"),
    pytest.param(lambda f: np.asfortranarray(f), id="fortran-order"),
])
def test_non_contiguous_frame_gives_same_result(engine_for, make_view):
    engine = engine_for("fastscnn")
    frame = frame_for("bgr8")
    expected = engine.infer(frame, "bgr8").copy()
    view = make_view(frame)
    assert not view.flags["C_CONTIGUOUS"]
    result = engine.infer(view, "bgr8")
    np.testing.assert_array_equal(result.label, expected.label)
    np.testing.assert_array_equal(result.overlay, expected.overlay)


def test_result_views_are_reused_and_copy_detaches(engine_for):
    engine = engine_for("fastscnn")
    first = engine.infer(frame_for("rgb8", seed=1), "rgb8")
    kept = first.copy()
    second = engine.infer(frame_for("rgb8", seed=2), "rgb8")
    assert np.shares_memory(first.label, second.label)
    assert not np.shares_memory(kept.label, second.label)
    assert set(second.timings) == set(STAGES)


def test_unrequested_outputs_are_none(checkpoints):
    engine = SegmentationEngine(EngineConfig(weights=checkpoints["fastscnn"],
                                             outputs=("confidence",), warmup_iters=1))
    result = engine.infer(frame_for("rgb8"), "rgb8")
    assert result.label is None and result.color is None and result.overlay is None
    assert result.confidence.shape == (HEIGHT, WIDTH)
    engine.release()


def test_set_outputs_replans_once(checkpoints, log_records):
    engine = SegmentationEngine(EngineConfig(weights=checkpoints["fastscnn"], outputs=("label",),
                                             warmup_iters=1))
    frame = frame_for("rgb8")
    label = engine.infer(frame, "rgb8").label.copy()
    with log_records("swiftseg_ros.engine") as records:
        engine.set_outputs(["color", "label"])
        engine.set_outputs(("label", "color"))
        result = engine.infer(frame, "rgb8")
    assert sum("prepared" in message for message in records.messages()) == 1
    assert engine.outputs == ("label", "color")
    np.testing.assert_array_equal(result.label, label)
    np.testing.assert_array_equal(result.color, np.asarray(PALETTE, np.uint8)[label])
    engine.release()


def test_new_pixel_format_alone_keeps_the_plan(engine_for, log_records):
    engine = engine_for("swiftnet_mnv2")
    engine.infer(frame_for("rgb8"), "rgb8")
    with log_records("swiftseg_ros.engine") as records:
        engine.infer(frame_for("bgra8"), "bgra8")
    assert not any("prepared" in message for message in records.messages())
    assert engine.stats()["pixel_format"] == "bgra8"


def test_new_input_size_prepares_a_plan_with_a_log_line(engine_for, log_records):
    engine = engine_for("swiftnet_mnv2")
    engine.infer(frame_for("rgb8"), "rgb8")
    with log_records("swiftseg_ros.engine") as records:
        result = engine.infer(frame_for("rgb8", 40, 50), "rgb8")
    assert result.label.shape == (40, 50)
    assert any("prepared 50x40" in message for message in records.messages())
    assert engine.input_size == (50, 40) and engine.inference_size == (64, 32)


def test_stats_window_stays_bounded(checkpoints):
    engine = SegmentationEngine(EngineConfig(weights=checkpoints["fastscnn"], outputs=("label",),
                                             warmup_iters=1, stats_window=4))
    frame = frame_for("rgb8", 32, 64)
    for _ in range(7):
        engine.infer(frame, "rgb8")
    stats = engine.stats()
    assert stats["frames"] == 7 and stats["window"] == 4
    assert set(stats["stages"]) == set(STAGES)
    total = stats["stages"]["total"]
    assert 0 < total["p50"] <= total["p90"] <= total["p95"] <= total["p99"] <= total["max"]
    assert stats["rate_hz"] > 0 and stats["throughput_hz"] > 0
    assert stats["device"] == "cpu" and stats["precision"] == "fp32"
    assert stats["network"] == "fastscnn" and stats["input_size"] == (64, 32)
    assert stats["inference_size"] == (64, 32) and stats["memory"] is None
    engine.release()


def test_checkpoint_mean_std_and_palette_are_used(engine_for):
    engine = engine_for("swiftnet_rn18")
    assert engine.mean == MEAN and engine.std == STD
    np.testing.assert_array_equal(engine.palette, np.asarray(PALETTE, np.uint8))
    assert engine.class_names == [f"class_{i}" for i in range(NUM_CLASSES)]


def test_palette_parameter_overrides_the_checkpoint(checkpoints):
    palette = [[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4], [5, 5, 5]]
    engine = SegmentationEngine(EngineConfig(weights=checkpoints["fastscnn"], palette=palette,
                                             warmup_iters=1))
    result = engine.infer(frame_for("rgb8"), "rgb8")
    np.testing.assert_array_equal(result.color, np.asarray(palette[:4], np.uint8)[result.label])
    engine.release()


def test_network_contradicting_the_checkpoint_is_an_error(checkpoints):
    with pytest.raises(CheckpointError, match="swiftnet_rn18"):
        SegmentationEngine(EngineConfig(weights=checkpoints["fastscnn"], network="swiftnet_rn18"))


def test_class_count_contradicting_the_checkpoint_is_an_error(checkpoints):
    with pytest.raises(CheckpointError, match="classes"):
        SegmentationEngine(EngineConfig(weights=checkpoints["fastscnn"], num_classes=19))


def test_random_weights_use_default_normalization_and_warn(log_records):
    with log_records("swiftseg_ros.engine", logging.WARNING) as records:
        engine = SegmentationEngine(EngineConfig(network="fastscnn", num_classes=3,
                                                 warmup_iters=1))
    assert any("random weights" in message for message in records.messages())
    assert engine.mean == (73.15, 82.90, 72.3) and engine.std == (47.67, 48.49, 47.73)
    assert engine.infer(frame_for("rgb8", 32, 32), "rgb8").color.shape == (32, 32, 3)
    engine.release()


def test_release_frees_the_network_and_refuses_frames(checkpoints):
    engine = SegmentationEngine(EngineConfig(weights=checkpoints["fastscnn"], warmup_iters=1))
    engine.infer(frame_for("rgb8"), "rgb8")
    engine.release()
    assert engine.model is None and engine.network_input is None
    with pytest.raises(SwiftsegError, match="released"):
        engine.infer(frame_for("rgb8"), "rgb8")


def test_reduced_precision_confidence_in_logits_mode_stays_at_network_resolution():
    """No full-size fp32 copy of the upsampled logits (160 MB at 2048x1024, 19 classes)."""
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 8, 16) * 4.0
    palette = torch.zeros((5, 3), dtype=torch.uint8)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        post = Postprocessor(logits.to(dtype), ("confidence",), "logits", (64, 128), palette,
                             0.5)
        post.run(logits.to(dtype))
        results[dtype] = post.outputs["confidence"].numpy().astype(int)
        if dtype != torch.float32:
            assert tuple(post.logits_fp32.shape[-2:]) == (8, 16)
    assert np.abs(results[torch.bfloat16] - results[torch.float32]).max() <= 8
