"""Confusion matrix and IoU metrics against values worked out by hand."""

import json
import math

import numpy as np
import pytest
import torch

from swiftseg_ros.metrics import ConfusionMatrix

# 4 classes, 255 ignored. Counted (truth, prediction) pairs:
# (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); the two ignored pixels predict 3 and 0.
TARGET = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 3, 0]], dtype=np.uint8)
NAMES = ["road", "car", "sky", "person"]


@pytest.fixture
def cm():
    m = ConfusionMatrix(4)
    m.update(PRED, TARGET)
    return m


def test_matrix_counts_truth_rows_and_prediction_columns_skipping_ignored(cm):
    expected = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert cm.matrix.tolist() == expected
    assert cm.pixels == 6


def test_per_class_iou_matches_hand_computation(cm):
    # road: tp 1, union 2 truth + 2 predicted - 1 = 3; car: 2 / (2 + 3 - 2); sky: 1 / (2 + 1 - 1)
    iou = cm.iou()
    assert iou[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2])


def test_class_absent_from_truth_and_prediction_has_no_iou(cm):
    # person is predicted only on an ignored pixel, so it never counts
    assert math.isnan(cm.iou()[3])
    assert cm.as_dict(NAMES)["per_class"]["person"] is None
    assert cm.as_dict(NAMES)["absent_classes"] == ["person"]


def test_miou_averages_present_classes_only(cm):
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_pixel_and_class_accuracy_match_hand_computation(cm):
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    acc = cm.class_accuracy()
    assert acc[:3] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert math.isnan(acc[3])


def test_class_predicted_but_not_in_truth_counts_as_zero_iou():
    m = ConfusionMatrix(3)
    m.update(np.array([[0, 2]]), np.array([[0, 0]]))
    assert m.iou()[2] == 0.0
    assert math.isnan(m.iou()[1])
    assert m.miou() == pytest.approx((0.5 + 0.0) / 2)


def test_updates_accumulate_like_one_update_of_all_pixels():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, (3, 8, 9))
    target = rng.integers(0, 5, (3, 8, 9))
    target[:, :2] = 255
    whole = ConfusionMatrix(5)
    whole.update(pred, target)
    parts = ConfusionMatrix(5)
    for p, t in zip(pred, target, strict=True):
        parts.update(torch.from_numpy(p), torch.from_numpy(t))
    assert torch.equal(whole.matrix, parts.matrix)
    assert whole.frames == parts.frames == 3


def test_merge_adds_counts_and_frames(cm):
    other = ConfusionMatrix(4)
    other.update(PRED, TARGET)
    cm.merge(other)
    assert cm.pixels == 12
    assert cm.frames == 2
    assert cm.miou() == pytest.approx(0.5)


def test_prediction_out_of_range_is_an_error():
    m = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"prediction holds class ids \[7\]"):
        m.update(np.array([[0, 7]]), np.array([[0, 1]]))


def test_truth_id_that_is_neither_class_nor_ignore_is_an_error():
    m = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"ground truth holds class ids \[9\]"):
        m.update(np.array([[0, 1]]), np.array([[0, 9]]))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        ConfusionMatrix(3).update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


def test_as_dict_is_strict_json(cm):
    text = json.dumps(cm.as_dict(NAMES), allow_nan=False)
    data = json.loads(text)
    assert data["miou"] == pytest.approx(0.5)
    assert data["pixel_accuracy"] == pytest.approx(4 / 6)
    assert data["frames"] == 1
    assert data["per_class"]["car"] == pytest.approx(2 / 3)


def test_empty_matrix_reports_no_miou():
    m = ConfusionMatrix(2)
    m.update(np.full((2, 2), 1), np.full((2, 2), 255))
    assert m.as_dict()["miou"] is None
    assert m.as_dict()["pixel_accuracy"] is None


def test_table_marks_absent_classes_and_gives_the_summary(cm):
    table = cm.format_table(NAMES)
    person = next(line for line in table.splitlines() if line.startswith("person"))
    assert "absent" in person
    assert "mIoU 50.00%" in table
    assert "3 present classes" in table


def test_all_reduce_over_a_one_rank_gloo_group_keeps_counts(cm, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        before = cm.matrix.clone()
        cm.all_reduce()
    finally:
        dist.destroy_process_group()
    assert torch.equal(cm.matrix, before)
    assert cm.frames == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_counts_on_cuda_match_the_cpu_counts():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 6, (2, 33, 47))
    target = rng.integers(0, 6, (2, 33, 47))
    target[:, 5] = 255
    cpu, gpu = ConfusionMatrix(6), ConfusionMatrix(6, device="cuda")
    cpu.update(pred, target)
    gpu.update(torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda())
    assert gpu.matrix.device.type == "cuda"
    assert torch.equal(gpu.matrix.cpu(), cpu.matrix)
