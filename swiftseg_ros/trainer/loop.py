"""The training loop: data, model, optimizer and schedule from a recipe; epochs, validation,
checkpoints, resumption, interruption and multi-GPU (PyTorch DDP under torchrun).

`train(config, out_dir)` runs a whole recipe (see trainer/config.py) and writes into
`out_dir`: `last.pt` and `best.pt` (training checkpoints: weights, metadata and the
training state), `final.pt` (exported: weights and metadata only), `metrics.csv` and
`curves.png`. Everything that makes a run reproducible is derived from `train.seed`:
the initial weights, the order of the samples in each epoch (a DistributedSampler
seeded with seed + epoch) and each sample's augmentation (a generator seeded with
(seed, epoch, index)), so a resumed run, restarted at the step it stopped at with the
saved optimizer, scheduler and RNG states, continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from swiftseg_ros.checkpoint import (
    check_compatible,
    load_checkpoint,
    load_state_strict,
    make_meta,
    save_checkpoint,
)
from swiftseg_ros.errors import CheckpointError, ConfigError, DatasetError
from swiftseg_ros.metrics import ConfusionMatrix
from swiftseg_ros.nets import NETWORKS, build_model
from swiftseg_ros.nets.pretrained import load_imagenet_encoder
from swiftseg_ros.progress import progress as progress_display
from swiftseg_ros.trainer.datasets import dataset_from_path, read_label
from swiftseg_ros.trainer.losses import SegmentationLoss, enet_class_weights
from swiftseg_ros.trainer.progress import TrainingLog
from swiftseg_ros.trainer.transforms import EvalTransform, TrainTransform

LAST, BEST, FINAL = "last.pt", "best.pt", "final.pt"


# ----------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: rank, world size and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_option: str) -> Distributed:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1).

    NCCL on CUDA, gloo on CPU; each process uses the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_option, local_rank if world > 1 else None)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
    return Distributed(rank, world, local_rank, device)


def resolve_device(option: str, local_rank: int | None = None) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch.device (under torchrun: the local GPU)."""
    text = option.strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text != "cpu" and not (text == "cuda" or (text.startswith("cuda:")
                                                 and text[5:].isdigit())):
        raise ConfigError(f"train.device = {option!r}: expected auto, cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device = {option!r} but CUDA is not available here "
                              f"(this torch: {torch.__version__}); use cpu")
        if local_rank is not None:
            return torch.device("cuda", local_rank)
        index = int(text[5:]) if ":" in text else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device = {option!r}: only {torch.cuda.device_count()} "
                              f"CUDA device(s)")
        return torch.device("cuda", index)
    return torch.device("cpu")


def autocast_dtype(option: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.precision` on this device; None for fp32."""
    if option == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if option == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision = 'fp16' needs CUDA; on CPU use fp32 or bf16")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[option]


# ---------------------------------------------------------------------------------- data

class AugmentedDataset(Dataset):
    """Samples of a dataset through a transform, as (uint8 3xHxW image, uint8 HxW label).

    Keys are `(epoch, index)` pairs: the augmentation's generator is seeded from (seed,
    epoch, index), which makes every sample independent of worker processes and of where
    a run was resumed.
    """

    def __init__(self, base, transform: Callable, seed: int):
        self.base = base
        self.transform = transform
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, index = key
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        image, label = self.base.load(index)
        image, label = self.transform(image, label, rng)
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(label)))


class EpochSampler(DistributedSampler):
    """DistributedSampler that yields `(epoch, index)` keys and can start mid-epoch.

    `skip` drops this rank's first samples of the epoch (the steps a resumed run has
    already done); the permutation itself is DistributedSampler's (seed + epoch).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self):
        for index in list(super().__iter__())[self.skip:]:
            yield self.epoch, index

    def __len__(self) -> int:
        return super().__len__() - self.skip


def _worker_init(worker_id: int) -> None:
    # Ctrl-C and SIGTERM are the main process's to handle: a terminal, systemd or SLURM
    # signal the whole process group, and a worker that died of it would end the main
    # process with a DataLoader error instead of letting it finish the step and save.
    # The main process shuts its workers down itself; they also exit if it dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def open_dataset(config: dict, split: str, root: str | None = None):
    root = root or config["data"]["root"]
    if not root:
        raise ConfigError("no dataset: give --data DIR (or data.root in the recipe)")
    root = str(Path(root).expanduser())
    layout = config["data"]["layout"]
    return dataset_from_path(root, split, layout=None if layout == "auto" else layout)


def make_train_transform(config: dict) -> TrainTransform:
    augment = config["augment"]
    return TrainTransform(
        crop=tuple(augment["crop"]), scale_range=(augment["scale_min"], augment["scale_max"]),
        flip=augment["flip"], brightness=augment["brightness"], contrast=augment["contrast"],
        saturation=augment["saturation"], mean=tuple(config["data"]["mean"]),
        prescale=config["data"]["scale"])


# ------------------------------------------------------------------ optimizer, schedule

def depthwise_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of depthwise convs (groups == in_channels > 1)."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and (
                module.groups == module.in_channels):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def parameter_groups(model: nn.Module, optim: dict, pretrained: set[str]) -> list[dict]:
    """Parameter groups with their own lr and weight decay.

    ImageNet-initialized parameters get `pretrained_lr_scale` x lr and
    `pretrained_wd_scale` x weight decay (SwiftNet 4.1: 4x smaller); depthwise convs get
    no weight decay unless `decay_depthwise` (Fast-SCNN 4.1, as MobileNetV2).
    """
    depthwise = set() if optim["decay_depthwise"] else depthwise_parameter_names(model)
    groups: dict[tuple[bool, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = (name in pretrained, name not in depthwise)
        if key not in groups:
            lr_scale = optim["pretrained_lr_scale"] if key[0] else 1.0
            wd_scale = optim["pretrained_wd_scale"] if key[0] else 1.0
            groups[key] = {
                "params": [],
                "name": f"{'pretrained' if key[0] else 'new'}"
                        f"{'' if key[1] else ' depthwise (no decay)'}",
                "lr": optim["lr"] * lr_scale,
                "weight_decay": optim["weight_decay"] * wd_scale if key[1] else 0.0,
            }
        groups[key]["params"].append(parameter)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, optim: dict, pretrained: set[str] = frozenset()
                    ) -> torch.optim.Optimizer:
    """Adam (SwiftNet) or SGD with momentum (Fast-SCNN) over `parameter_groups`."""
    groups = parameter_groups(model, optim, set(pretrained))
    if optim["name"] == "adam":
        return torch.optim.Adam(groups, lr=optim["lr"], betas=tuple(optim["betas"]))
    return torch.optim.SGD(groups, lr=optim["lr"], momentum=optim["momentum"])


def build_scheduler(optimizer: torch.optim.Optimizer, optim: dict, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step decay over `total_steps`: cosine to `min_lr` (every group ends at the same
    absolute value, as the authors' eta_min), poly with `power`, or constant."""
    schedule, min_lr, power = optim["schedule"], optim["min_lr"], optim["power"]
    total = max(1, int(total_steps))

    def factor_for(base_lr: float) -> Callable[[int], float]:
        floor = min(min_lr, base_lr) / base_lr if base_lr > 0 else 0.0

        def factor(step: int) -> float:
            progress = min(step, total) / total
            if schedule == "cosine":
                return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
            if schedule == "poly":
                return (1.0 - progress) ** power
            return 1.0

        return factor

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [factor_for(group["lr"]) for group in optimizer.param_groups])


# ------------------------------------------------------------------------------ stopping

class StopRequest:
    """Ctrl-C / SIGTERM while training: remember the signal, finish the step, then stop.

    A second signal aborts at once, as the signal would have without this handler (a
    second Ctrl-C raises KeyboardInterrupt, a second SIGTERM terminates the process).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> StopRequest:
        if _in_main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            if callable(previous):  # Python's own SIGINT handler: KeyboardInterrupt
                previous(signum, frame)
            else:  # the default action, now
                signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, saving a resumable "
              f"checkpoint (again to abort at once)", file=sys.stderr)

    def __call__(self) -> bool:
        return self.signum is not None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------- run

@dataclass
class TrainResult:
    """What a run did: epochs and steps completed, best validation mIoU, the files written,
    the trained model (unwrapped, on its device) and, when it was interrupted, the signal."""

    out_dir: Path
    epochs_done: int
    step: int
    best_miou: float | None
    model: nn.Module
    files: dict = field(default_factory=dict)
    interrupted_by: int | None = None
    history: list = field(default_factory=list)
    epoch_step: int = 0  # steps done in the epoch after `epochs_done` (0: none)
    steps_per_epoch: int = 0
    epochs: int = 0

    def position(self) -> str:
        """Where the run stands, in the words of the progress bar and the resume message."""
        return run_position(self.epochs_done, self.epoch_step, self.steps_per_epoch,
                            self.epochs)


def run_position(epochs_done: int, epoch_step: int, steps_per_epoch: int, epochs: int) -> str:
    """Epochs are counted from 1 everywhere (progress bar, metrics.csv, messages): after
    `epochs_done` epochs and `epoch_step` steps, the run is in epoch `epochs_done + 1`."""
    if epoch_step:
        return f"epoch {epochs_done + 1}/{epochs} step {epoch_step}/{steps_per_epoch}"
    return f"the start of epoch {epochs_done + 1}/{epochs}"


def train(config: dict, out_dir: str | Path, *, resume: bool = False,
          stop: Callable[[int], bool] | None = None, command: str | None = None,
          recipe: str | None = None, progress: bool = True) -> TrainResult:
    """Run the recipe `config` into `out_dir`; `resume` continues from `out_dir/last.pt`.

    `stop(step)` is asked after every step with the number of steps done (besides
    SIGINT/SIGTERM); when it says yes the run saves a resumable checkpoint and returns
    with `interrupted_by` set. `progress`: show the progress display (bars or lines).
    """
    out_dir = Path(out_dir)
    proc = setup_distributed(config["train"]["device"])
    # OpenCV's thread pool off while training: the DataLoader workers are the
    # parallelism, and a worker forked while the pool exists deadlocks in its first
    # OpenCV call. (PyTorch already runs its workers on one thread.)
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        with StopRequest() as signals:
            return _Run(config, out_dir, proc, resume, signals, stop, command, recipe,
                        progress).run()
    finally:
        cv2.setNumThreads(cv2_threads)
        if proc.enabled and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    """State of one training run; `run()` drives it from start (or resume) to end."""

    def __init__(self, config, out_dir: Path, proc: Distributed, resume: bool,
                 signals: StopRequest, stop, command, recipe, progress: bool = True):
        self.config, self.out_dir, self.proc = config, out_dir, proc
        self.signals, self.extra_stop = signals, stop
        self.command, self.recipe = command, recipe
        self.show_progress = progress and proc.is_main
        self.resumed_with: list[str] = []  # the commands that continued this run
        train_cfg = config["train"]
        self.seed = train_cfg["seed"]
        self.dtype = autocast_dtype(train_cfg["precision"], proc.device)
        resume_state = self._read_resume_state() if resume else None
        if not resume and (out_dir / LAST).exists():
            raise ConfigError(f"{out_dir} already holds a training run ({out_dir / LAST}); "
                              f"pass --resume to continue it, or choose another --out")

        self.train_set = open_dataset(config, config["data"]["train_split"])
        self.val_set = None
        if config["data"]["val_split"]:
            self.val_set = open_dataset(config, config["data"]["val_split"],
                                        config["data"]["val_root"])
            if self.val_set.num_classes != self.train_set.num_classes:
                raise DatasetError(
                    f"validation set {self.val_set.root} has {self.val_set.num_classes} "
                    f"classes, the training set {self.train_set.root} "
                    f"{self.train_set.num_classes}")
        self.num_classes = self.train_set.num_classes

        torch.manual_seed(self.seed)
        self.model, pretrained = self._build_model()
        self.batch_size = train_cfg["batch_size"]
        self.sampler = EpochSampler(self.train_set, proc.world_size, proc.rank, self.seed)
        self.steps_per_epoch = len(self.sampler) // self.batch_size
        if self.steps_per_epoch < 1:
            raise DatasetError(
                f"{self.train_set.root}: split {self.train_set.split!r} has "
                f"{len(self.train_set)} images, fewer than one batch of "
                f"{self.batch_size} per process; lower train.batch_size")
        self.total_steps = self.steps_per_epoch * train_cfg["epochs"]
        self.optimizer = build_optimizer(self.model, config["optim"], pretrained)
        self.scheduler = build_scheduler(self.optimizer, config["optim"], self.total_steps)
        self.scaler = torch.amp.GradScaler(proc.device.type,
                                           enabled=self.dtype == torch.float16)
        weights = None
        if train_cfg["class_weights"] == "enet":
            weights = enet_class_weights(self._class_pixel_counts(),
                                         train_cfg["enet_c"]).to(proc.device)
        self.criterion = SegmentationLoss(train_cfg["aux_weight"], class_weights=weights)
        self.mean = torch.tensor(config["data"]["mean"], device=proc.device).view(1, 3, 1, 1)
        self.std = torch.tensor(config["data"]["std"], device=proc.device).view(1, 3, 1, 1)

        self.epoch, self.step, self.epoch_step, self.epoch_loss = 0, 0, 0, 0.0
        self.best_miou: float | None = None
        self.best_epoch: int | None = None
        if resume_state is not None:
            self._restore(*resume_state)
        self.net = self.model
        if proc.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[proc.device.index] if proc.device.type == "cuda"
                else None)
        self.records = (TrainingLog(out_dir, config["log"]["tensorboard"], keep_epochs=self.epoch)
                        if proc.is_main else None)

    # model ---------------------------------------------------------------------------

    def _build_model(self) -> tuple[nn.Module, set[str]]:
        model_cfg = self.config["model"]
        model = build_model(model_cfg["name"], self.num_classes, **model_cfg["options"])
        pretrained: set[str] = set()
        if model_cfg["imagenet_init"]:
            path = Path(model_cfg["imagenet_init"]).expanduser()
            loaded = load_imagenet_encoder(model, path).loaded
            pretrained = {f"encoder.{key}" for key in loaded}
        # channels_last: the faster convolution kernels on CUDA and on CPU (oneDNN)
        model = model.to(self.proc.device, memory_format=torch.channels_last)
        return model, pretrained

    def _class_pixel_counts(self) -> np.ndarray:
        """Pixels of each class in the training labels (labels only, no images decoded)."""
        counts = np.zeros(256, dtype=np.int64)
        for _, label_path in progress_display(self.train_set.samples, desc="class frequencies",
                                              unit="label", enabled=self.show_progress):
            counts += np.bincount(self.train_set.table[read_label(label_path)].ravel()
                                  .astype(np.uint8), minlength=256)
        return counts[: self.num_classes]

    def meta(self, epoch: int, miou: float | None) -> dict:
        config = self.config
        return make_meta(
            config["model"]["name"], self.num_classes,
            class_names=self.train_set.class_names, palette=self.train_set.palette,
            mean=config["data"]["mean"], std=config["data"]["std"],
            train_size=config["augment"]["crop"],
            network_options=config["model"]["options"],
            provenance={
                "dataset": str(Path(self.train_set.root).resolve()),
                "layout": self.train_set.layout, "train_split": self.train_set.split,
                "train_frames": len(self.train_set), "recipe": self.recipe,
                "command": self.command, "resumed_with": self.resumed_with,
                "epochs": epoch, "seed": self.seed,
                "val_miou": miou, "val_frames": len(self.val_set) if self.val_set else 0,
            })

    # resume --------------------------------------------------------------------------

    def _read_resume_state(self):
        path = self.out_dir / LAST
        if not path.exists():
            raise CheckpointError(f"{path}: nothing to resume (no training checkpoint in "
                                  f"{self.out_dir}); start without --resume")
        state, meta, training = load_checkpoint(path)
        if training is None:
            raise CheckpointError(f"{path}: an exported checkpoint without training state; "
                                  f"cannot resume from it")
        check_compatible(meta, self.config["model"]["name"], where=str(path))
        return path, state, meta, training

    def _restore(self, path: Path, state: dict, meta: dict, training: dict) -> None:
        check_compatible(meta, self.config["model"]["name"], self.num_classes, where=str(path))
        if training.get("steps_per_epoch") != self.steps_per_epoch:
            raise CheckpointError(
                f"{path}: saved with {training.get('steps_per_epoch')} steps per epoch, this "
                f"run has {self.steps_per_epoch} (another dataset, batch size or process "
                f"count); resume with the settings of the interrupted run")
        load_state_strict(self.model, state, str(path))
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        if training.get("scaler"):
            self.scaler.load_state_dict(training["scaler"])
        torch.set_rng_state(training["rng"]["torch"])
        if self.proc.device.type == "cuda" and training["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(training["rng"]["cuda"])
        self.epoch, self.step = training["epoch"], training["step"]
        self.epoch_step, self.epoch_loss = training["epoch_step"], training["epoch_loss"]
        self.best_miou, self.best_epoch = training["best_miou"], training["best_epoch"]
        # the provenance names the command that started the run, not only the last one
        started = meta.get("provenance") or {}
        if started.get("command"):
            self.resumed_with = [*started.get("resumed_with", []), self.command]
            self.command = started["command"]
        self.recipe = self.recipe or started.get("recipe")
        if self.proc.is_main:
            where = run_position(self.epoch, self.epoch_step, self.steps_per_epoch,
                                 self.config["train"]["epochs"])
            print(f"resuming {path} at {where} (global step {self.step})", file=sys.stderr)

    def training_state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.proc.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch, "step": self.step, "epoch_step": self.epoch_step,
            "epoch_loss": self.epoch_loss, "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.proc.world_size,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng, "best_miou": self.best_miou, "best_epoch": self.best_epoch,
            "config": self.config,
        }

    def save(self, name: str, miou: float | None = None) -> Path | None:
        if not self.proc.is_main:
            return None
        return save_checkpoint(self.out_dir / name, self.model, self.meta(self.epoch, miou),
                               training=self.training_state())

    # loop ----------------------------------------------------------------------------

    def should_stop(self) -> bool:
        wanted = self.signals() or bool(self.extra_stop and self.extra_stop(self.step))
        if self.proc.enabled:
            # Every rank must stop after the same step, or the others wait forever in the
            # next gradient all-reduce.
            flag = torch.tensor([int(wanted)], device=self.proc.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            wanted = bool(flag.item())
        return wanted

    def run(self) -> TrainResult:
        epochs = self.config["train"]["epochs"]
        result = TrainResult(self.out_dir, self.epoch, self.step, self.best_miou, self.model)
        if self.proc.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            print(f"{self.train_set.describe()}\n{self.config['model']['name']}: "
                  f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.3f}M parameters, "
                  f"{self.steps_per_epoch} steps/epoch x {epochs} epochs on "
                  f"{self.proc.device} x {self.proc.world_size}, precision "
                  f"{self.dtype or 'fp32'}", file=sys.stderr)
        while self.epoch < epochs:
            started = time.perf_counter()
            finished = self._train_epoch(epochs)
            if not finished:
                self.save(LAST)
                result.interrupted_by = self.signals.signum or signal.SIGINT
                break
            row = self._end_epoch(epochs, time.perf_counter() - started)
            result.history.append(row)
            if self.should_stop():
                result.interrupted_by = self.signals.signum or signal.SIGINT
                break
        result.epochs_done, result.step = self.epoch, self.step
        result.epoch_step, result.steps_per_epoch = self.epoch_step, self.steps_per_epoch
        result.epochs = epochs
        result.best_miou = self.best_miou
        if result.interrupted_by is None and self.proc.is_main:
            result.files[FINAL] = export_checkpoint(
                self.out_dir / (BEST if (self.out_dir / BEST).exists() else LAST),
                self.out_dir / FINAL, half=self.config["export"]["fp16"])
        if self.proc.is_main:
            result.files.update({n: self.out_dir / n for n in (LAST, BEST)
                                 if (self.out_dir / n).exists()})
            self.records.close()
        return result

    def _loader(self) -> DataLoader:
        data = AugmentedDataset(self.train_set, make_train_transform(self.config), self.seed)
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.epoch_step * self.batch_size
        workers = self.config["train"]["workers"]
        return DataLoader(
            data, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=workers, pin_memory=self.proc.device.type == "cuda",
            worker_init_fn=_worker_init if workers else None,
            persistent_workers=False,
            # the loader's own seed must not draw from the global RNG: that RNG drives
            # dropout and is restored on resume
            generator=torch.Generator().manual_seed(self.seed))

    def _train_epoch(self, epochs: int) -> bool:
        """Train the rest of the current epoch; False when stopped before its end."""
        self.net.train()
        loader = self._loader()
        bar = progress_display(total=self.steps_per_epoch, initial=self.epoch_step,
                               desc=f"epoch {self.epoch + 1}/{epochs}", unit="step",
                               enabled=self.show_progress)
        started, images = time.perf_counter(), 0
        try:
            for image, label in loader:
                loss = self._step(image, label)
                self.epoch_step += 1
                self.step += 1
                self.epoch_loss += loss
                images += image.shape[0] * self.proc.world_size
                speed = images / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.current_lr():.3g}",
                                img_s=f"{speed:.1f}", refresh=False)
                bar.update(1)
                if self.epoch_step < self.steps_per_epoch and self.should_stop():
                    return False
        finally:
            bar.close()
        return True

    def _step(self, image: torch.Tensor, label: torch.Tensor) -> float:
        device = self.proc.device
        x = image.to(device, non_blocking=True).float().sub_(self.mean).div_(self.std)
        x = x.contiguous(memory_format=torch.channels_last)
        y = label.to(device, non_blocking=True).long()
        with torch.autocast(device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            output = self.net(x)
            loss = self.criterion(output, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(f"the loss became {value} at epoch {self.epoch + 1}, step "
                              f"{self.epoch_step + 1}; lower optim.lr or use train.precision "
                              f"fp32")
        return value

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[-1]["lr"])

    def _end_epoch(self, epochs: int, seconds: float) -> dict:
        mean_loss = self.epoch_loss / max(self.epoch_step, 1)
        if self.proc.enabled:
            total = torch.tensor([mean_loss], dtype=torch.float64, device=self.proc.device)
            dist.all_reduce(total)
            mean_loss = float(total.item()) / self.proc.world_size
        if self.proc.enabled:
            self._average_buffers()
        self.epoch += 1
        val = None
        every = self.config["train"]["val_every"]
        if self.val_set is not None and (self.epoch % every == 0 or self.epoch == epochs):
            val = self.validate()
        miou = val.miou() if val is not None else None
        if miou is not None and math.isnan(miou):
            miou = None
        row = {"epoch": self.epoch, "step": self.step, "lr": self.current_lr(),
               "train_loss": mean_loss, "val_miou": miou,
               "val_pixel_accuracy": val.pixel_accuracy() if val is not None else None,
               "seconds": seconds,
               "images_per_second": self.steps_per_epoch * self.batch_size
               * self.proc.world_size / max(seconds, 1e-9)}
        self.epoch_step, self.epoch_loss = 0, 0.0
        improved = miou is not None and (self.best_miou is None or miou > self.best_miou)
        if improved:
            self.best_miou, self.best_epoch = miou, self.epoch
        if self.proc.is_main:
            self.records.add(row)
            text = f"epoch {self.epoch}/{epochs}: loss {mean_loss:.4f}"
            if miou is not None:
                text += f", val mIoU {100 * miou:.2f}%" + (" (best)" if improved else "")
            print(text, file=sys.stderr)
            self.save(LAST, miou)
            if improved:
                self.save(BEST, miou)
        return row

    @torch.no_grad()
    def _average_buffers(self) -> None:
        """Average the BatchNorm running statistics over the ranks.

        DDP keeps parameters equal but each rank's last forward updates its own running
        statistics; averaging them makes every rank hold the same model (the one saved),
        so that their shares of the validation are scored by one network.
        """
        for buffer in self.model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(self.proc.world_size)

    @torch.no_grad()
    def validate(self) -> ConfusionMatrix:
        """Confusion matrix of the validation split, each rank a share, summed over ranks."""
        model = self.model
        was_training = model.training
        model.eval()
        data = AugmentedDataset(self.val_set, EvalTransform(self.config["data"]["scale"]),
                                self.seed)
        # A plain stride over the indices: unlike DistributedSampler, it never repeats a
        # frame to even out the shares, so every frame is counted exactly once.
        share = Subset(data, [(0, i) for i in range(self.proc.rank, len(data),
                                                    self.proc.world_size)])
        workers = min(self.config["train"]["workers"], 2)
        loader = DataLoader(share, batch_size=1, num_workers=workers,
                            worker_init_fn=_worker_init if workers else None)
        matrix = ConfusionMatrix(self.num_classes, device=self.proc.device)
        divisor = getattr(model, "size_divisor", 1)
        for image, label in progress_display(loader, desc="validation", unit="img",
                                             enabled=self.show_progress):
            x = image.to(self.proc.device).float().sub_(self.mean).div_(self.std)
            height, width = x.shape[-2:]
            # Zero after normalization is the mean colour: the padding the crops used.
            x = F.pad(x, (0, -width % divisor, 0, -height % divisor)).contiguous(
                memory_format=torch.channels_last)
            with torch.autocast(self.proc.device.type, dtype=self.dtype or torch.float32,
                                enabled=self.dtype is not None):
                logits = model(x)
            matrix.update(logits[..., :height, :width].max(1).indices,
                          label.to(self.proc.device))
        if self.proc.enabled:
            matrix.all_reduce()
        model.train(was_training)
        return matrix


# -------------------------------------------------------------------------------- export

def export_checkpoint(src: str | Path, dst: str | Path, half: bool = False) -> Path:
    """Write `src` without its training state and training-only layers to `dst`.

    The network is rebuilt with its inference options (Fast-SCNN without the auxiliary
    heads), the weights it has are kept and checked to fit. The result is what the node
    and the engine load; `half=True` stores the floating tensors as fp16 (half the
    size; loading converts them back).
    """
    state, meta, _ = load_checkpoint(src)
    info = NETWORKS[meta["network"]]
    options = {**meta.get("network_options", {}), **info.inference_options}
    model = build_model(meta["network"], meta["num_classes"], **options)
    state = {k: v for k, v in state.items() if k in model.state_dict()}
    load_state_strict(model, state, str(src))
    return save_checkpoint(dst, state, {**meta, "network_options": options}, half=half)
