"""Training parts: augmentations, the loss, parameter groups and learning-rate schedules."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swiftseg_ros.nets import build_model
from swiftseg_ros.trainer.config import load_recipe
from swiftseg_ros.trainer.loop import (
    AugmentedDataset,
    EpochSampler,
    build_optimizer,
    build_scheduler,
    depthwise_parameter_names,
)
from swiftseg_ros.trainer.losses import SegmentationLoss, enet_class_weights
from swiftseg_ros.trainer.transforms import EvalTransform, TrainTransform, photometric_jitter

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], np.uint8)


def blocks_scene(height=48, width=80, seed=0):
    """A label of random rectangles and an image that is the label's colour per pixel."""
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    for cls in (1, 2, 3):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        label[y:y + rng.integers(6, 20), x:x + rng.integers(6, 30)] = cls
    return COLOURS[label], label


def test_crop_has_the_crop_size_and_only_source_labels_or_ignore():
    image, label = blocks_scene()
    transform = TrainTransform(crop=(32, 40), scale_range=(0.5, 2.0))
    for seed in range(8):
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        assert out_image.shape == (32, 40, 3) and out_image.dtype == np.uint8
        assert out_label.shape == (32, 40)
        assert set(np.unique(out_label)) <= {0, 1, 2, 3, 255}


def test_padding_uses_the_ignore_label_and_the_mean_colour():
    image, label = blocks_scene(height=20, width=30)
    transform = TrainTransform(crop=(32, 40), scale_range=(1.0, 1.0), mean=(10, 20, 30))
    out_image, out_label = transform(image, label, np.random.default_rng(3))
    padded = out_label == 255
    assert padded.sum() == 32 * 40 - 20 * 30
    assert (out_image[padded] == (10, 20, 30)).all()


def test_image_and_label_stay_aligned_through_crop_and_flip():
    image, label = blocks_scene()
    transform = TrainTransform(crop=(40, 64), scale_range=(1.0, 1.0), flip=True)
    flips = set()
    for seed in range(6):
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        valid = out_label != 255
        assert (out_image[valid] == COLOURS[out_label[valid]]).all()
        # a flipped crop is not a window of the original label
        windows = np.lib.stride_tricks.sliding_window_view(label, out_label.shape)
        flips.add(not (windows == out_label).all(axis=(-1, -2)).any())
    assert flips == {True, False}


def test_same_generator_seed_gives_the_same_sample():
    image, label = blocks_scene()
    transform = TrainTransform(crop=(32, 40), brightness=0.3, contrast=0.3, saturation=0.3)
    first = transform(image, label, np.random.default_rng(11))
    again = transform(image, label, np.random.default_rng(11))
    other = transform(image, label, np.random.default_rng(12))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_jitter_keeps_a_grey_image_grey_under_saturation_and_scales_brightness():
    grey = np.full((4, 4, 3), 100, np.uint8)
    saturated = photometric_jitter(grey, np.random.default_rng(0), 0.0, 0.0, 0.5)
    assert np.abs(saturated.astype(int) - 100).max() <= 1
    brighter = photometric_jitter(grey, np.random.default_rng(0), 0.5, 0.0, 0.0)
    assert len(np.unique(brighter)) == 1 and brighter[0, 0, 0] != 100


def test_eval_transform_resizes_labels_with_nearest_neighbour():
    image, label = blocks_scene(height=40, width=80)
    small_image, small_label = EvalTransform(0.5)(image, label)
    assert small_image.shape == (20, 40, 3) and small_label.shape == (20, 40)
    assert set(np.unique(small_label)) <= set(np.unique(label))


class TinyDataset:
    def __init__(self, frames=6):
        self.frames = [blocks_scene(seed=i) for i in range(frames)]

    def __len__(self):
        return len(self.frames)

    def load(self, index):
        return self.frames[index]


def test_augmented_sample_depends_on_seed_epoch_and_index_only():
    data = AugmentedDataset(TinyDataset(), TrainTransform(crop=(32, 32)), seed=5)
    first = data[(1, 2)]
    data[(0, 0)]
    assert torch.equal(first[0], data[(1, 2)][0])
    assert not torch.equal(first[0], data[(2, 2)][0])
    assert first[0].shape == (3, 32, 32) and first[1].shape == (32, 32)


def test_sampler_skips_the_steps_a_resumed_epoch_already_did():
    data = TinyDataset(10)
    full = EpochSampler(data, num_replicas=1, rank=0, seed=3)
    full.set_epoch(4)
    resumed = EpochSampler(data, num_replicas=1, rank=0, seed=3)
    resumed.set_epoch(4)
    resumed.skip = 4
    assert list(resumed) == list(full)[4:]
    assert all(epoch == 4 for epoch, _ in full)


def test_samplers_of_two_ranks_split_the_epoch():
    data = TinyDataset(10)
    shares = []
    for rank in (0, 1):
        sampler = EpochSampler(data, num_replicas=2, rank=rank, seed=0)
        sampler.set_epoch(1)
        shares.append({index for _, index in sampler})
    assert shares[0] | shares[1] == set(range(10)) and not shares[0] & shares[1]


def test_aux_losses_are_weighted_and_upsampled_to_the_label():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16))
    main, aux = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 4, 4)
    loss = SegmentationLoss(aux_weight=0.4)((main, [aux]), target)
    upsampled = F.interpolate(aux, size=(16, 16), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(main, target) + 0.4 * F.cross_entropy(upsampled, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ignored_pixels_do_not_count_in_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8))
    ignored = target.clone()
    ignored[0, :4] = 255
    loss = SegmentationLoss()(logits, ignored)
    expected = F.cross_entropy(logits[..., 4:, :], target[:, 4:])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_enet_weights_grow_as_a_class_gets_rarer():
    weights = enet_class_weights([900, 90, 10, 0])
    assert weights[0] < weights[1] < weights[2] < weights[3]
    assert weights[2].item() == pytest.approx(1 / np.log(1.02 + 0.01), rel=1e-6)


def test_a_larger_enet_c_flattens_the_weights():
    sharp, flat = enet_class_weights([990, 10]), enet_class_weights([990, 10], c=1.2)
    assert flat[1] / flat[0] < sharp[1] / sharp[0]


def test_class_weights_scale_each_classs_pixels_in_the_loss():
    logits = torch.zeros(1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 0, 1]]])
    logits[0, 1, 0, 3] = 2.0  # class 1's pixel is easy, class 0's are uncertain
    plain = SegmentationLoss()(logits, target)
    rare_up = SegmentationLoss(class_weights=torch.tensor([1.0, 3.0]))(logits, target)
    per_pixel = F.cross_entropy(logits, target, reduction="none")[0, 0]
    assert plain.item() == pytest.approx(per_pixel.mean().item(), rel=1e-6)
    assert rare_up.item() == pytest.approx(
        ((per_pixel[:3].sum() + 3 * per_pixel[3]) / 6).item(), rel=1e-6)


def test_depthwise_convs_get_no_weight_decay_in_the_fastscnn_recipe():
    model = build_model("fastscnn", 4)
    optim = load_recipe(None, ["optim.name=sgd", "optim.decay_depthwise=false",
                               "optim.weight_decay=4e-5"])["optim"]
    optimizer = build_optimizer(model, optim)
    depthwise = {id(p) for n, p in model.named_parameters()
                 if n in depthwise_parameter_names(model)}
    assert depthwise
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        assert group["weight_decay"] == (0.0 if ids <= depthwise else 4e-5)
        assert ids <= depthwise or not ids & depthwise


def test_pretrained_parameters_get_a_quarter_of_lr_and_weight_decay():
    model = build_model("swiftnet_mnv2", 4)
    pretrained = {n for n, _ in model.named_parameters() if n.startswith("encoder.")}
    optimizer = build_optimizer(model, load_recipe(None)["optim"], pretrained)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["pretrained"]["lr"] == pytest.approx(1e-4)
    assert by_name["pretrained"]["weight_decay"] == pytest.approx(2.5e-5)
    assert by_name["new"]["lr"] == pytest.approx(4e-4)
    assert len(by_name["pretrained"]["params"]) == len(pretrained)


def _lrs(schedule_options, steps=10):
    weight = torch.nn.Parameter(torch.zeros(1))
    optim = load_recipe(None, schedule_options)["optim"]
    optimizer = torch.optim.SGD([{"params": [weight], "lr": optim["lr"]}], lr=optim["lr"])
    scheduler = build_scheduler(optimizer, optim, steps)
    lrs = []
    for _ in range(steps + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_decays_from_lr_to_min_lr():
    lrs = _lrs(["optim.schedule=cosine", "optim.lr=4e-4", "optim.min_lr=1e-6"])
    assert lrs[0] == pytest.approx(4e-4)
    assert lrs[-1] == pytest.approx(1e-6)
    assert lrs[5] == pytest.approx((4e-4 + 1e-6) / 2)


def test_poly_schedule_follows_the_power_law():
    lrs = _lrs(["optim.schedule=poly", "optim.lr=0.045", "optim.power=0.9"])
    assert lrs[3] == pytest.approx(0.045 * (1 - 3 / 10) ** 0.9)
    assert lrs[-1] == 0.0
