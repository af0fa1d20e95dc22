"""swiftseg-eval: score a checkpoint on a labelled dataset through the inference engine.

    swiftseg-eval --weights CKPT --data DIR [--split val] [--size WxH] [--device cpu]
                  [--precision fp32] [--upsample logits|labels] [--limit N]
                  [--json FILE] [--montage FILE.png] [--samples K]

Every frame goes through `SegmentationEngine` exactly as the ROS node runs it (the same
pre-processing, inference size, upsampling and class selection), with the labels at the
input size, and is scored with the shared confusion matrix (`swiftseg_ros.metrics`).
Prints a per-class table, mIoU and pixel accuracy; `--json` writes them (`miou` in 0-1,
`per_class`, `pixel_accuracy`, `frames` and the settings); `--montage` writes a PNG of
input / ground truth / prediction for a few frames.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from swiftseg_ros import interrupts
from swiftseg_ros.cli import (
    ArgumentParser,
    add_common_flags,
    check_count,
    check_device,
    check_network,
    parse_size_flag,
    write_json,
)
from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.engine.config import UPSAMPLE_MODES
from swiftseg_ros.errors import ConfigError, DatasetError
from swiftseg_ros.files import check_output_file
from swiftseg_ros.metrics import ConfusionMatrix
from swiftseg_ros.montage import MontageFrame, frame_montage
from swiftseg_ros.progress import progress as progress_display
from swiftseg_ros.trainer.datasets import SegmentationDataset, dataset_from_path

log = logging.getLogger(__name__)


def check_classes(dataset: SegmentationDataset, engine: SegmentationEngine, weights) -> None:
    """The dataset must have the checkpoint's class count; different names only warn."""
    if dataset.num_classes != engine.num_classes:
        raise DatasetError(
            f"dataset {dataset.root} has {dataset.num_classes} classes but the checkpoint "
            f"{weights} predicts {engine.num_classes} ({', '.join(engine.class_names)}); "
            f"evaluate weights trained on this dataset's class set")
    if list(dataset.class_names) != list(engine.class_names):
        log.warning("class names differ (dataset: %s; checkpoint: %s); scoring by class id, "
                    "reporting the checkpoint's names", ", ".join(dataset.class_names),
                    ", ".join(engine.class_names))


def evaluate(engine: SegmentationEngine, dataset: SegmentationDataset, limit: int | None = None,
             samples: int = 0, progress: bool = True
             ) -> tuple[ConfusionMatrix, list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]:
    """Run the first `limit` frames (all if None) through the engine and count them.

    Returns (confusion matrix, up to `samples` (index, image, truth, prediction) spread
    evenly over the frames, seconds spent in `engine.infer`).
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    keep = set(np.linspace(0, count - 1, samples).round().astype(int).tolist()) if samples else set()
    matrix = ConfusionMatrix(engine.num_classes, dataset.ignore_index)
    kept, seconds = [], 0.0
    if count:
        # allocate and warm up before timing, as the node does in configure
        height, width = dataset.load(0)[0].shape[:2]
        engine.prepare(height, width, "rgb8")
    for index in progress_display(range(count), desc="eval", unit="frame", enabled=progress):
        interrupts.raise_pending()  # a signal a C callback swallowed while preparing
        image, truth = dataset.load(index)
        started = time.perf_counter()
        prediction = engine.infer(image, "rgb8").label
        seconds += time.perf_counter() - started
        matrix.update(prediction, truth)
        if index in keep:
            kept.append((index, image, truth, prediction.copy()))
    return matrix, kept, seconds


def frame_miou(prediction: np.ndarray, truth: np.ndarray, num_classes: int,
               ignore_index: int) -> float | None:
    """One frame's own mIoU (None when it has no scored pixel)."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    matrix.update(prediction, truth)
    miou = matrix.miou()
    return None if np.isnan(miou) else float(miou)


def write_montage(path, kept, palette: np.ndarray, class_names, ignore_index: int) -> None:
    """The kept frames in the layout replay's montage uses (`frame_montage`), each titled
    with its own mIoU."""
    frames = []
    for index, image, truth, prediction in kept:
        miou = frame_miou(prediction, truth, len(class_names), ignore_index)
        score = "no scored pixel" if miou is None else f"mIoU {100 * miou:.1f} %"
        frames.append(MontageFrame(f"frame {index} ({score})", image, prediction, truth))
    frame_montage(frames, path, class_names=class_names, palette=palette,
                  ignore_index=ignore_index)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="swiftseg-eval",
        description="Per-class IoU, mIoU and pixel accuracy of a checkpoint on a labelled "
                    "dataset (Cityscapes, CamVid or the generic layout), run through the "
                    "same inference engine as the ROS node.")
    add_common_flags(parser, backend=True)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument("--size", help="network input size WxH (multiples of the network's "
                        "size divisor); default: each image's size rounded to them")
    parser.add_argument("--upsample", default="logits", choices=UPSAMPLE_MODES,
                        help="logits: bilinear scores then class selection (the node's "
                             "default); labels: class selection then nearest upsampling")
    parser.add_argument("--threads", type=int, help="CPU threads for inference")
    parser.add_argument("--limit", type=int, help="evaluate only the first N frames")
    parser.add_argument("--montage", metavar="FILE.png",
                        help="write input / ground truth / prediction of a few frames here")
    parser.add_argument("--samples", type=int, default=4,
                        help="frames in the montage (default 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.weights:
        raise ConfigError("--weights is required: the checkpoint (.pt) to evaluate")
    if args.limit is not None:
        check_count(args.limit, "--limit", 1, 10**9)
    check_count(args.samples, "--samples", 1, 64)
    if args.threads is not None:
        check_count(args.threads, "--threads", 1, 1024)
    check_network(args.network)
    check_device(args.device)
    if args.json:
        check_output_file(args.json, "--json")
    if args.montage:
        check_output_file(args.montage, "--montage", suffixes=(".png", ".jpg", ".jpeg"))
    size = parse_size_flag(args.size, "--size") if args.size else None
    dataset = dataset_from_path(args.data, args.split)
    # an .onnx file runs on ONNX Runtime; a checkpoint on torch unless asked otherwise
    backend = args.backend or ("onnxruntime" if str(args.weights).lower().endswith(".onnx")
                               else "torch")
    if not args.quiet:
        print(f"preparing {args.weights} on {args.device} ({backend}): building the network "
              "and timing its candidates (a few seconds to a minute)", flush=True)
    engine = SegmentationEngine(EngineConfig(
        weights=args.weights, network=args.network, device=args.device,
        precision=args.precision, backend=backend, inference_size=size,
        outputs=("label",),
        upsample=args.upsample, output_size="input", threads=args.threads,
        retune=args.retune))
    try:
        check_classes(dataset, engine, args.weights)
        matrix, kept, seconds = evaluate(engine, dataset, args.limit,
                                         args.samples if args.montage else 0,
                                         progress=not args.quiet)
        inference_size = engine.inference_size
    finally:
        engine.release()
    names = engine.class_names
    print(f"{engine.network} ({args.weights}) on {dataset.describe()}")
    print(matrix.format_table(names))
    results = matrix.as_dict(names)
    fps = results["frames"] / seconds if seconds > 0 else None
    net = "x".join(map(str, inference_size)) if inference_size else "n/a"
    print(f"{fps or 0:.1f} frames/s through the engine (network input {net}, {args.device}, "
          f"{backend}, {args.precision}, upsample {args.upsample})")
    results.update(
        weights=str(args.weights), network=engine.network, data=str(args.data),
        split=args.split, layout=dataset.layout, device=args.device, backend=backend,
        precision=args.precision, upsample=args.upsample,
        inference_size=list(inference_size) if inference_size else None,
        frames_per_second=fps)
    write_json(args.json, results)
    if args.montage:
        write_montage(args.montage, kept, engine.palette, names, dataset.ignore_index)
        print(f"montage: {Path(args.montage)}")
    return 0
