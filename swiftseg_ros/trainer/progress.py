"""Training records: `metrics.csv` (one row per epoch), `curves.png` (loss and mIoU per
epoch) and, when the tensorboard package is installed, TensorBoard events."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from swiftseg_ros.files import save_figure

COLUMNS = ("epoch", "step", "lr", "train_loss", "val_miou", "val_pixel_accuracy", "seconds",
           "images_per_second")
CSV_NAME, PLOT_NAME, TENSORBOARD_DIR = "metrics.csv", "curves.png", "tensorboard"


class TrainingLog:
    """Appends epoch rows to out/metrics.csv and redraws out/curves.png after each.

    `keep_epochs` is where a resumed run continues: rows of later epochs (written by the
    interrupted run after its last checkpoint) are dropped, so each epoch has one row.
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, keep_epochs: int = 0):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out_dir / CSV_NAME
        self.plot_path = self.out_dir / PLOT_NAME
        self.rows = [r for r in read_metrics(self.csv_path) if r["epoch"] <= keep_epochs] \
            if keep_epochs else []
        if self.rows or self.csv_path.exists():  # a new run writes its first row, not a header
            self._write_csv()
        self.writer = _tensorboard_writer(self.out_dir / TENSORBOARD_DIR) if tensorboard else None

    def add(self, row: dict) -> None:
        self.rows.append({c: row.get(c) for c in COLUMNS})
        self._write_csv()
        plot_curves(self.rows, self.plot_path)
        if self.writer is not None:
            for name in ("train_loss", "lr", "val_miou", "val_pixel_accuracy",
                         "images_per_second"):
                if row.get(name) is not None:
                    self.writer.add_scalar(name, row[name], row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _write_csv(self) -> None:
        tmp = self.csv_path.with_name(self.csv_path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({c: "" if row.get(c) is None else _text(row[c]) for c in COLUMNS})
        tmp.replace(self.csv_path)


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.csv with numbers parsed (None for empty cells); [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for column in COLUMNS:
                text = (raw.get(column) or "").strip()
                row[column] = None if not text else (
                    int(text) if column in ("epoch", "step") else float(text))
            rows.append(row)
    return rows


def plot_curves(rows: list[dict], path: str | Path) -> None:
    """Training loss and validation mIoU against the epoch, side by side, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes, miou_axes = figure.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    loss_axes.plot(epochs, [r["train_loss"] for r in rows], marker=".", color="tab:blue")
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss")
    loss_axes.grid(alpha=0.3)
    val = [(r["epoch"], 100 * r["val_miou"]) for r in rows
           if r.get("val_miou") is not None and not math.isnan(r["val_miou"])]
    if val:
        miou_axes.plot(*zip(*val, strict=True), marker="o", color="tab:green")
        best_epoch, best = max(val, key=lambda v: v[1])
        miou_axes.annotate(f"best {best:.1f}% (epoch {best_epoch})", (best_epoch, best),
                           textcoords="offset points", xytext=(0, -14), ha="center",
                           fontsize=8)
    miou_axes.set(xlabel="epoch", ylabel="mIoU (%)", title="validation mIoU")
    for axes in (loss_axes, miou_axes):  # epochs are whole numbers: no tick at 1.2, 1.4
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    miou_axes.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)


def _text(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: CSV and PNG are always written
        return None
    return SummaryWriter(str(folder))
