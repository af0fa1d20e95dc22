"""Dataset layouts, label mapping and the errors that name the bad file (tiny PNGs made here)."""

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from swiftseg_ros.errors import DatasetError, SwiftsegError
from swiftseg_ros.trainer.datasets import (
    CamVidDataset,
    CityscapesDataset,
    GenericDataset,
    dataset_from_path,
    detect_layout,
)

H, W = 4, 6


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), label)


def rgb(value=(200, 100, 50), h=H, w=W) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def make_cityscapes(root: Path, label: np.ndarray, split="val", city="bonn", stem="bonn_000000_000019"):
    write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb())
    write_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
    # files of other kinds in gtFine must not be taken for labels
    write_label(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", label)


def make_generic(root: Path, labels: dict, split: str | None = "train", classes=("a", "b", "c")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(
        {"classes": [{"name": n, "color": [10 * i, 20 * i, 30 * i]} for i, n in enumerate(classes)]}))
    sub = Path(split) if split else Path()
    for stem, label in labels.items():
        write_rgb(root / "images" / sub / f"{stem}.png", rgb(h=label.shape[0], w=label.shape[1]))
        write_label(root / "labels" / sub / f"{stem}.png", label)


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    raw = np.array([[7, 8, 11, 12, 13, 17],
                    [19, 20, 21, 22, 23, 24],
                    [25, 26, 27, 28, 31, 32],
                    [33, 0, 1, 6, 30, 255]], dtype=np.uint8)
    make_cityscapes(tmp_path, raw)
    image, label = CityscapesDataset(tmp_path, "val")[0]
    expected = np.array([[0, 1, 2, 3, 4, 5],
                         [6, 7, 8, 9, 10, 11],
                         [12, 13, 14, 15, 16, 17],
                         [18, 255, 255, 255, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(label, expected)
    assert label.dtype == np.uint8 and image.dtype == np.uint8


def test_images_are_returned_in_rgb_order(tmp_path):
    make_cityscapes(tmp_path, np.full((H, W), 7, np.uint8))
    image, _ = CityscapesDataset(tmp_path, "val")[0]
    assert image.shape == (H, W, 3)
    assert image[0, 0].tolist() == [200, 100, 50]


def test_cityscapes_exposes_its_19_classes(tmp_path):
    make_cityscapes(tmp_path, np.full((H, W), 7, np.uint8))
    ds = dataset_from_path(tmp_path, "val")
    assert isinstance(ds, CityscapesDataset)
    assert ds.num_classes == 19 and ds.class_names[0] == "road" and ds.ignore_index == 255
    assert len(ds.palette) == 19
    assert "cityscapes" in ds.describe() and "1 images" in ds.describe()


def test_cityscapes_raw_id_beyond_33_is_an_error_naming_file_and_id(tmp_path):
    raw = np.full((H, W), 7, np.uint8)
    raw[1, 1] = 40
    make_cityscapes(tmp_path, raw)
    with pytest.raises(DatasetError, match=r"bonn_000000_000019_gtFine_labelIds\.png: class id 40"):
        CityscapesDataset(tmp_path, "val")[0]


def test_camvid_void_is_ignored_and_classes_kept(tmp_path):
    raw = np.array([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]] * 2, dtype=np.uint8)
    write_rgb(tmp_path / "test" / "0001TP_006690.png", rgb())
    write_label(tmp_path / "testannot" / "0001TP_006690.png", raw)
    ds = dataset_from_path(tmp_path, "test")
    assert isinstance(ds, CamVidDataset) and ds.num_classes == 11
    _, label = ds[0]
    assert label[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert label[1].tolist() == [6, 7, 8, 9, 10, 255]


def test_camvid_id_12_is_an_error(tmp_path):
    write_rgb(tmp_path / "train" / "a.png", rgb())
    write_label(tmp_path / "trainannot" / "a.png", np.full((H, W), 12, np.uint8))
    with pytest.raises(DatasetError, match=r"a\.png: class id 12 is out of range"):
        CamVidDataset(tmp_path, "train")[0]


def test_generic_layout_with_splits_reads_classes_yaml(tmp_path):
    label = np.array([[0, 1, 2, 255, 0, 1]] * H, dtype=np.uint8)
    make_generic(tmp_path, {"frame_000000": label, "frame_000001": label}, split="val")
    ds = dataset_from_path(tmp_path, "val")
    assert isinstance(ds, GenericDataset)
    assert ds.class_names == ["a", "b", "c"]
    assert ds.palette[2] == [20, 40, 60]
    assert len(ds) == 2
    np.testing.assert_array_equal(ds[1][1], label)


def test_generic_layout_without_split_folders_serves_any_split(tmp_path):
    make_generic(tmp_path, {"x": np.zeros((H, W), np.uint8)}, split=None)
    assert len(GenericDataset(tmp_path, "train")) == 1
    assert len(GenericDataset(tmp_path, "val")) == 1


def test_generic_jpg_images_pair_with_png_labels(tmp_path):
    make_generic(tmp_path, {}, split="train")
    (tmp_path / "images" / "train").mkdir(parents=True)
    assert cv2.imwrite(str(tmp_path / "images" / "train" / "a.jpg"), rgb())
    write_label(tmp_path / "labels" / "train" / "a.png", np.ones((H, W), np.uint8))
    ds = GenericDataset(tmp_path, "train")
    assert ds.samples[0][0].endswith("a.jpg")


def test_generic_class_id_out_of_range_names_file_and_id(tmp_path):
    label = np.zeros((H, W), np.uint8)
    label[0, 0] = 5
    make_generic(tmp_path, {"bad_frame": label})
    with pytest.raises(DatasetError, match=r"bad_frame\.png: class id 5 is out of range.*0-2, 255"):
        GenericDataset(tmp_path, "train")[0]


def test_generic_custom_ignore_index_maps_to_255(tmp_path):
    label = np.array([[0, 1, 2, 100, 0, 0]] * H, dtype=np.uint8)
    make_generic(tmp_path, {"f": label})
    data = yaml.safe_load((tmp_path / "classes.yaml").read_text())
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({**data, "ignore_index": 100}))
    _, mapped = GenericDataset(tmp_path, "train")[0]
    assert mapped[0].tolist() == [0, 1, 2, 255, 0, 0]


def test_missing_dataset_folder_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere does not exist"):
        dataset_from_path(tmp_path / "nowhere", "val")


def test_a_file_given_as_the_dataset_is_named_a_file(tmp_path):
    (tmp_path / "frames.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match=r"frames\.zip is a file; give the dataset's folder"):
        dataset_from_path(tmp_path / "frames.zip", "val")


def test_missing_split_folder_names_it(tmp_path):
    make_cityscapes(tmp_path, np.full((H, W), 7, np.uint8), split="train")
    with pytest.raises(DatasetError, match=r"leftImg8bit/val does not exist"):
        CityscapesDataset(tmp_path, "val")


def test_generic_missing_split_lists_the_splits_found(tmp_path):
    make_generic(tmp_path, {"f": np.zeros((H, W), np.uint8)}, split="train")
    with pytest.raises(DatasetError, match=r"images/val does not exist \(splits found: train\)"):
        GenericDataset(tmp_path, "val")


def test_generic_without_classes_yaml_is_an_error(tmp_path):
    make_generic(tmp_path, {"f": np.zeros((H, W), np.uint8)})
    (tmp_path / "classes.yaml").unlink()
    (tmp_path / "images").mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match=r"classes\.yaml does not exist"):
        GenericDataset(tmp_path, "train")


def test_generic_binary_classes_yaml_is_an_error_naming_it(tmp_path):
    make_generic(tmp_path, {"f": np.zeros((H, W), np.uint8)})
    (tmp_path / "classes.yaml").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(SwiftsegError, match=r"classes\.yaml: expected `classes:"):
        GenericDataset(tmp_path, "train")


def test_image_without_label_names_the_image(tmp_path):
    make_generic(tmp_path, {"f": np.zeros((H, W), np.uint8)})
    write_rgb(tmp_path / "images" / "train" / "orphan.png", rgb())
    with pytest.raises(DatasetError, match=r"orphan\.png: image without a label"):
        GenericDataset(tmp_path, "train")


def test_label_without_image_names_the_label(tmp_path):
    make_cityscapes(tmp_path, np.full((H, W), 7, np.uint8))
    write_label(tmp_path / "gtFine" / "val" / "bonn" / "bonn_000001_000019_gtFine_labelIds.png",
                np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match=r"bonn_000001_000019_gtFine_labelIds\.png: label "
                                           r"without an image"):
        CityscapesDataset(tmp_path, "val")


def test_image_and_label_of_different_sizes_is_an_error(tmp_path):
    make_generic(tmp_path, {"f": np.zeros((H, W), np.uint8)})
    write_label(tmp_path / "labels" / "train" / "f.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(DatasetError, match=r"f\.png: label is 6x5 but its image .*f\.png is 6x4"):
        GenericDataset(tmp_path, "train")[0]


def test_colour_label_image_is_an_error(tmp_path):
    make_generic(tmp_path, {"f": np.zeros((H, W), np.uint8)})
    write_rgb(tmp_path / "labels" / "train" / "f.png", rgb())
    with pytest.raises(DatasetError, match=r"f\.png: a colour label image"):
        GenericDataset(tmp_path, "train")[0]


def test_empty_split_is_an_error(tmp_path):
    make_generic(tmp_path, {}, split="train")
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"split 'train' has no images"):
        GenericDataset(tmp_path, "train")


def test_unrecognised_folder_explains_the_layouts(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match=r"classes\.yaml.*leftImg8bit.*trainannot"):
        detect_layout(tmp_path)


def test_transform_receives_image_and_label(tmp_path):
    make_generic(tmp_path, {"f": np.ones((H, W), np.uint8)})
    ds = GenericDataset(tmp_path, "train", transform=lambda im, lb: (im.shape, int(lb.sum())))
    assert ds[0] == ((H, W, 3), H * W)


def test_dataset_pickles_for_worker_processes(tmp_path):
    make_generic(tmp_path, {"f": np.full((H, W), 2, np.uint8)})
    ds = GenericDataset(tmp_path, "train")
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0][1], ds[0][1])


def test_two_images_of_one_name_are_an_error(tmp_path):
    make_generic(tmp_path, {"f": np.zeros((H, W), np.uint8)})
    assert cv2.imwrite(str(tmp_path / "images" / "train" / "f.jpg"), rgb())
    with pytest.raises(DatasetError, match=r"f\.(png|jpg): same name as f\.(png|jpg)"):
        GenericDataset(tmp_path, "train")
