"""What the swiftseg-replay tests share: the camera bag they replay, checkpoints of the
synthetic scenes' classes and running the console entry point (test_replay_cli.py,
test_replay_decision.py), and the small engine the in-process replays run
(test_replay.py, test_replay_pipelined.py)."""

import torch

from swiftseg_ros.checkpoint import make_meta, save_checkpoint
from swiftseg_ros.cli import replay as replay_entry
from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.nets import build_model
from swiftseg_ros.replay.synthbag import CameraBagSpec, write_camera_bag
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE

FRAMES = 6
IMAGE, LABELS = "/camera/image_raw", "/camera/labels"


def write_bag(folder):
    """The camera bag with ground truth: FRAMES frames of 64x32 on IMAGE and LABELS."""
    return write_camera_bag(folder / "bag", CameraBagSpec(frames=FRAMES, width=64, height=32),
                            progress=False)


def checkpoint(path, network="fastscnn", seed=0, classes=CLASS_NAMES, **meta):
    """Random weights of `network` (from `seed`) for `classes`, saved at `path`."""
    torch.manual_seed(seed)
    meta = make_meta(network, len(classes), class_names=list(classes),
                     palette=[list(PALETTE[i % len(PALETTE)]) for i in range(len(classes))],
                     **meta)
    return save_checkpoint(path, build_model(network, len(classes)), meta)


def run(capsys, *argv):
    """swiftseg-replay with `argv` (str() of each): its exit status, stdout and stderr."""
    status = replay_entry([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(err):
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def small_engine():
    """A seeded 9-class Fast-SCNN engine for a module's replays, released afterwards (a
    fixture body: `yield from small_engine()`)."""
    torch.manual_seed(0)
    engine = SegmentationEngine(EngineConfig(network="fastscnn", num_classes=9, warmup_iters=1))
    yield engine
    engine.release()
