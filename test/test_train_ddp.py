"""Multi-process training with PyTorch DDP: two CPU processes on the gloo backend, set up
through the environment variables torchrun gives each process."""

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from swiftseg_ros.synthetic.frames import write_dataset
from swiftseg_ros.trainer.config import load_recipe
from swiftseg_ros.trainer.loop import train
from swiftseg_ros.trainer.progress import read_metrics

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, port: int, data: str, out: str, results: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    config = load_recipe(None, [
        "model.name=fastscnn", f"data.root={data}", "data.val_split=train",
        "augment.crop=[64, 128]", "train.batch_size=2", "train.epochs=2", "train.workers=0",
        "train.device=cpu", "optim.name=sgd", "optim.lr=0.01", "log.tensorboard=false"])
    result = train(config, out)
    torch.save({"state": result.model.state_dict(), "step": result.step,
                "miou": result.best_miou}, Path(results) / f"rank{rank}.pt")


def test_two_gloo_processes_train_in_step_and_end_with_equal_parameters(tmp_path):
    data = write_dataset(tmp_path / "data", frames=8, width=128, height=64, seed=0,
                         progress=False)
    out, results = tmp_path / "out", tmp_path / "results"
    results.mkdir()
    # forked rather than spawned (mp.spawn): a spawned process imports torch and the package
    # again, which took most of this test's time. Each child runs torch on one thread
    # (_rank_main), as a forked DataLoader worker does, so no OpenMP pool is used after fork.
    mp.start_processes(_rank_main, args=(_free_port(), str(data), str(out), str(results)),
                       nprocs=WORLD, join=True, start_method="fork")
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    # 8 frames, 4 per rank, 2 per step: 2 steps per epoch
    assert [r["step"] for r in ranks] == [4, 4]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    # the validation confusion matrix is summed over ranks: both report the same mIoU
    assert ranks[0]["miou"] == ranks[1]["miou"] is not None
    assert [r["epoch"] for r in read_metrics(out / "metrics.csv")] == [1, 2]
    assert (out / "final.pt").exists()
