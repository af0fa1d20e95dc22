"""Labelled image datasets on disk: Cityscapes, CamVid (SegNet layout) and a generic layout.

Every dataset yields `(image, label)`: the image as uint8 H x W x 3 RGB, the label as
uint8 H x W class ids with 255 for ignored pixels, both read with OpenCV, then passed
through the optional `transform(image, label)` (the trainer's augmentation). Raw label
values are mapped to class ids with a 256-entry table (one vectorized lookup per image);
a raw value that the table does not allow is an error naming the file and the value.

Layouts (`dataset_from_path` tells them apart):

- Cityscapes: `leftImg8bit/<split>/<city>/*_leftImg8bit.png` with
  `gtFine/<split>/<city>/*_gtFine_labelIds.png`; the 34 label ids map to the 19 training
  classes, every other id to 255.
- CamVid, SegNet layout: `<split>/*.png` with `<split>annot/*.png` (splits train, val,
  test); ids 0-10 are the 11 classes, 11 (void) is ignored.
- Generic: `classes.yaml` (`classes: [{name: ..., color: [r, g, b]}, ...]`, optionally
  `ignore_index`), images in `images/<split>/` (.png, .jpg, .jpeg) and labels in
  `labels/<split>/` as single-channel PNGs with the same file stems. Without split
  folders (`images/*.png`, `labels/*.png`) the same files serve every split.

Datasets hold only paths and small tables, so they pickle cheaply into DataLoader worker
processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from swiftseg_ros import files
from swiftseg_ros.classes import GENERIC_CLASSES_FILE, IGNORE_INDEX, ClassSet, load_class_set
from swiftseg_ros.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# cityscapesScripts labels.py: label id -> train id for the 19 evaluated classes.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_MAX_LABEL_ID = 33  # ids 0-33 exist; 255 is where the license plate's -1 ends up
CAMVID_VOID = 11


def label_table(num_raw: int, mapping: dict[int, int] | None = None,
                ignored: tuple[int, ...] = (IGNORE_INDEX,)) -> np.ndarray:
    """A 256-entry int16 table from raw label value to class id.

    Raw values below `num_raw` map through `mapping` (identity where it has no entry and
    no mapping is given, 255 where a mapping is given but lacks the value); the `ignored`
    values map to 255; every other raw value is -1, meaning "not allowed in this dataset".
    """
    table = np.full(256, -1, dtype=np.int16)
    for raw in range(num_raw):
        table[raw] = raw if mapping is None else mapping.get(raw, IGNORE_INDEX)
    for raw in ignored:
        table[raw] = IGNORE_INDEX
    return table


def read_image(path: str) -> np.ndarray:
    """An image file as uint8 H x W x 3 RGB."""
    image = files.read_image(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: cannot read the image (missing, unreadable, or not an "
                           f"image format OpenCV reads)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: str) -> np.ndarray:
    """A label file as uint8 H x W raw values (single-channel 8-bit PNG expected)."""
    label = files.read_image(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"{path}: cannot read the label image (missing, unreadable, or not "
                           f"an image format OpenCV reads)")
    if label.ndim == 3:
        # Some tools save grey label images as RGB; equal channels carry the same ids.
        first = label[:, :, 0]
        if not all(np.array_equal(first, label[:, :, c]) for c in range(1, min(3, label.shape[2]))):
            raise DatasetError(f"{path}: a colour label image; labels must hold class ids in "
                               f"a single-channel 8-bit PNG (convert colours to ids first)")
        label = first
    if label.dtype != np.uint8:
        top = int(label.max()) if label.size else 0
        if label.dtype != np.uint16 or top > 255:
            raise DatasetError(f"{path}: label values of type {label.dtype} up to {top}; "
                               f"class ids must be 0-255 in an 8-bit PNG")
        label = label.astype(np.uint8)
    return np.ascontiguousarray(label)


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries
                      if e.is_file() and e.name.lower().endswith(suffixes))


def _by_stem(files: list[Path]) -> dict[str, Path]:
    """Files keyed by name without suffix; two files of one stem (a.png, a.jpg) are an error."""
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise DatasetError(f"{path}: same name as {found[path.stem].name}; images and labels "
                               f"pair by name, so keep one file per name")
        found[path.stem] = path
    return found


def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise DatasetError(f"{what}: folder {folder} does not exist")


def _pair_by_key(images: dict, labels: dict, expected_label: Callable, expected_image: Callable
                 ) -> list[tuple[str, str]]:
    """Match image and label paths that share a key; any unmatched file is an error."""
    _refuse_unmatched(images, labels, "image without a label", "images without labels",
                      expected_label)
    _refuse_unmatched(labels, images, "label without an image", "labels without images",
                      expected_image)
    return [(str(images[k]), str(labels[k])) for k in sorted(images)]


def _refuse_unmatched(files: dict, partners: dict, one: str, many: str,
                      expected_partner: Callable) -> None:
    """DatasetError naming the first of `files` whose key has no partner, and the count."""
    lonely = sorted(k for k in files if k not in partners)
    if not lonely:
        return
    first = files[lonely[0]]
    more = f" (and {len(lonely) - 1} more {many})" if len(lonely) > 1 else ""
    raise DatasetError(f"{first}: {one} (expected {expected_partner(first)}){more}")


class SegmentationDataset(Dataset):
    """(image, label) pairs of files with a class set and a raw-label table.

    `class_names`, `palette`, `ignore_index` (always 255 after mapping), `num_classes`,
    `samples` (list of (image path, label path)), `transform` (settable).
    """

    layout = "files"

    def __init__(self, root: str | Path, split: str, samples: list[tuple[str, str]],
                 class_set: ClassSet, table: np.ndarray,
                 transform: Callable | None = None):
        if not samples:
            raise DatasetError(f"{self.layout} dataset at {root}: split {split!r} has no images")
        self.root = str(root)
        self.split = split
        self.samples = samples
        self.class_names = list(class_set.class_names)
        self.palette = [list(c) for c in class_set.palette]
        self.ignore_index = IGNORE_INDEX
        self.table = table
        self.transform = transform
        allowed = np.flatnonzero(table >= 0)
        self._allowed_text = _ranges_text(allowed)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index` without the transform: (RGB uint8 HxWx3, class ids uint8 HxW)."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        raw = read_label(label_path)
        if image.shape[:2] != raw.shape:
            raise DatasetError(
                f"{label_path}: label is {raw.shape[1]}x{raw.shape[0]} but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]} (width x height)")
        mapped = self.table[raw]
        if mapped.min() < 0:
            bad = np.unique(raw[mapped < 0])
            raise DatasetError(
                f"{label_path}: class id {int(bad[0])} is out of range"
                f"{f' (also {bad[1:6].tolist()})' if bad.size > 1 else ''}; this "
                f"{self.layout} dataset allows {self._allowed_text}")
        return image, mapped.astype(np.uint8)

    def __getitem__(self, index: int):
        image, label = self.load(index)
        if self.transform is not None:
            return self.transform(image, label)
        return image, label

    def describe(self) -> str:
        return (f"{self.layout} dataset {self.root}, split {self.split}: {len(self)} images, "
                f"{self.num_classes} classes ({', '.join(self.class_names)}), "
                f"ignore index {self.ignore_index}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, split={self.split!r}, {len(self)} images)"


def _ranges_text(values: np.ndarray) -> str:
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return "raw values " + ", ".join(parts)


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations: labelIds mapped to the 19 training classes."""

    layout = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        root = Path(root)
        image_dir = root / "leftImg8bit" / split
        label_dir = root / "gtFine" / split
        _require_dir(image_dir, f"Cityscapes images of split {split!r}")
        _require_dir(label_dir, f"Cityscapes labels of split {split!r}")
        images, labels = {}, {}
        for city in sorted(p for p in image_dir.iterdir() if p.is_dir()):
            for path in _files(city, ("_leftimg8bit.png",)):
                images[(city.name, path.name[: -len("_leftImg8bit.png")])] = path
        for city in sorted(p for p in label_dir.iterdir() if p.is_dir()):
            for path in _files(city, ("_gtfine_labelids.png",)):
                labels[(city.name, path.name[: -len("_gtFine_labelIds.png")])] = path

        def expected_label(image: Path) -> Path:
            stem = image.name[: -len("_leftImg8bit.png")]
            return label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"

        def expected_image(label: Path) -> Path:
            stem = label.name[: -len("_gtFine_labelIds.png")]
            return image_dir / label.parent.name / f"{stem}_leftImg8bit.png"

        samples = _pair_by_key(images, labels, expected_label, expected_image)
        table = label_table(CITYSCAPES_MAX_LABEL_ID + 1, CITYSCAPES_TRAIN_IDS)
        super().__init__(root, split, samples, load_class_set("cityscapes"), table, transform)


class CamVidDataset(SegmentationDataset):
    """CamVid in the SegNet layout: 11 classes, id 11 (void) ignored."""

    layout = "camvid"

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        root = Path(root)
        image_dir, label_dir = root / split, root / f"{split}annot"
        _require_dir(image_dir, f"CamVid images of split {split!r}")
        _require_dir(label_dir, f"CamVid labels of split {split!r}")
        images = _by_stem(_files(image_dir, IMAGE_SUFFIXES))
        labels = _by_stem(_files(label_dir, (".png",)))
        samples = _pair_by_key(images, labels, lambda p: label_dir / f"{p.stem}.png",
                               lambda p: image_dir / f"{p.stem}.png")
        class_set = load_class_set("camvid")
        table = label_table(class_set.num_classes, ignored=(CAMVID_VOID, IGNORE_INDEX))
        super().__init__(root, split, samples, class_set, table, transform)


def generic_split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    """The image and label folders of `split` in a generic layout (flat layout fallback)."""
    images, labels = root / "images", root / "labels"
    _require_dir(images, f"generic dataset {root}")
    _require_dir(labels, f"generic dataset {root}")
    if (images / split).is_dir():
        _require_dir(labels / split, f"labels of split {split!r}")
        return images / split, labels / split
    if _files(images, IMAGE_SUFFIXES):
        log.warning("%s has no split folders: split %r uses every image in %s", root, split,
                    images)
        return images, labels
    splits = sorted(p.name for p in images.iterdir() if p.is_dir())
    raise DatasetError(f"generic dataset {root}: folder {images / split} does not exist "
                       f"(splits found: {', '.join(splits) or 'none'})")


class GenericDataset(SegmentationDataset):
    """images/<split>/ and labels/<split>/ with matching stems, classes from classes.yaml."""

    layout = "generic"

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        root = Path(root)
        classes_file = root / GENERIC_CLASSES_FILE
        if not classes_file.is_file():
            raise DatasetError(f"generic dataset {root}: {classes_file} does not exist (it lists "
                               f"the classes: `classes: [{{name: ..., color: [r, g, b]}}, ...]`)")
        class_set = load_class_set(classes_file)
        if class_set.num_classes > IGNORE_INDEX:
            raise DatasetError(f"{classes_file}: {class_set.num_classes} classes; at most "
                               f"{IGNORE_INDEX} fit in 8-bit labels beside the ignore index")
        image_dir, label_dir = generic_split_dirs(root, split)
        images = _by_stem(_files(image_dir, IMAGE_SUFFIXES))
        labels = _by_stem(_files(label_dir, (".png",)))
        samples = _pair_by_key(images, labels, lambda p: label_dir / f"{p.stem}.png",
                               lambda p: image_dir / f"{p.stem}.png (or .jpg)")
        ignored = {IGNORE_INDEX, class_set.ignore_index}
        if any(not 0 <= v <= 255 for v in ignored) or class_set.ignore_index < class_set.num_classes:
            raise DatasetError(f"{classes_file}: ignore_index {class_set.ignore_index} must be "
                               f"in {class_set.num_classes}-255 (not a class id)")
        table = label_table(class_set.num_classes, ignored=tuple(sorted(ignored)))
        super().__init__(root, split, samples, class_set, table, transform)


LAYOUTS = {"cityscapes": CityscapesDataset, "camvid": CamVidDataset, "generic": GenericDataset}


def require_dataset_folder(root: str | Path) -> Path:
    """`root` as a Path; DatasetError unless it is an existing folder."""
    root = Path(root)
    if root.is_file():
        raise DatasetError(f"dataset {root} is a file; give the dataset's folder (the one "
                           f"holding images/ and labels/, or leftImg8bit/ and gtFine/)")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    return root


def detect_layout(root: str | Path) -> str:
    """Which layout a dataset folder has: cityscapes, camvid or generic."""
    root = require_dataset_folder(root)
    if (root / GENERIC_CLASSES_FILE).is_file() or (root / "images").is_dir():
        return "generic"
    if (root / "leftImg8bit").is_dir() or (root / "gtFine").is_dir():
        return "cityscapes"
    if any((root / f"{s}annot").is_dir() for s in ("train", "val", "test")):
        return "camvid"
    raise DatasetError(
        f"{root}: not a dataset folder this tool reads; expected classes.yaml with images/ and "
        f"labels/ (generic), leftImg8bit/ and gtFine/ (Cityscapes), or train/ and trainannot/ "
        f"(CamVid SegNet layout)")


def dataset_from_path(root: str | Path, split: str = "train", transform: Callable | None = None,
                      layout: str | None = None) -> SegmentationDataset:
    """Open a dataset folder of any supported layout (detected unless `layout` is given)."""
    name = layout or detect_layout(root)
    if name not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {name!r} (known: {', '.join(LAYOUTS)})")
    require_dataset_folder(root)
    return LAYOUTS[name](root, split, transform)
