"""Distributed training: rank sharding as pure functions, and a real 2-process gloo run via torchrun."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from biounet.cli import main
from biounet.config import DataConfig, RunConfig, TrainConfig
from biounet.data.dataset import ArrayDataset
from biounet.dist import Dist, check_batch_size, epoch_order, rank_slice, wrap_model
from biounet.errors import BiounetError
from biounet.train_data import array_batches


def test_from_env_reads_torchrun_variables() -> None:
    assert Dist.from_env({}) == Dist(0, 1, 0)
    d = Dist.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (d.rank, d.world_size, d.local_rank, d.enabled, d.is_main) == (3, 4, 1, True, False)
    with pytest.raises(BiounetError, match="RANK=4 is outside WORLD_SIZE=4"):
        Dist.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(BiounetError, match="RANK/WORLD_SIZE/LOCAL_RANK"):
        Dist.from_env({"WORLD_SIZE": "two"})


def test_ranks_take_disjoint_equal_shares_of_the_same_order() -> None:
    order = torch.tensor([4, 0, 6, 2, 5, 1, 3])  # 7 images, 3 ranks: the 7th is dropped
    shares = [rank_slice(epoch_order(order, Dist(r, 3)), Dist(r, 3)).tolist() for r in range(3)]
    assert shares == [[4, 2], [0, 5], [6, 1]]
    assert epoch_order(order, Dist()).tolist() == order.tolist()  # one process keeps all


def test_global_batch_must_split_evenly() -> None:
    check_batch_size(8, Dist(0, 4))
    with pytest.raises(BiounetError, match="--batch-size 6 .* among the 4 processes"):
        check_batch_size(6, Dist(0, 4))


def test_rank_batches_interleave_to_the_single_process_batches() -> None:
    """Every rank augments the same global batch: ranks 0 and 1 together see what 1 process sees."""
    g = torch.Generator().manual_seed(0)
    n, s = 10, 16
    data = ArrayDataset(
        [str(i) for i in range(n)],
        torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g),
        (torch.rand(n, 1, s, s, generator=g) > 0.5).to(torch.uint8),
        [],
    )
    cfg = RunConfig(data=DataConfig(image_size=s), train=TrainConfig(batch_size=4))
    one = list(array_batches(data, cfg, torch.Generator().manual_seed(7)))
    ranks = [
        list(array_batches(data, cfg, torch.Generator().manual_seed(7), Dist(r, 2)))
        for r in range(2)
    ]
    assert [len(x) for x, _ in one] == [4, 4, 2]
    for (x, y), (x0, y0), (x1, y1) in zip(one, *ranks, strict=True):
        torch.testing.assert_close(x[0::2], x0, rtol=0, atol=0)
        torch.testing.assert_close(x[1::2], x1, rtol=0, atol=0)
        torch.testing.assert_close(y[0::2], y0, rtol=0, atol=0)
        torch.testing.assert_close(y[1::2], y1, rtol=0, atol=0)


def test_sync_bn_on_cpu_is_refused() -> None:
    with pytest.raises(BiounetError, match="--sync-bn needs CUDA"):
        wrap_model(torch.nn.BatchNorm2d(2), Dist(), True, torch.device("cpu"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_one_run(synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "ddp"
    args = ["train", "--data", str(synthetic_data), "--out", str(out), "--epochs", "1"]
    args += ["--image-size", "32", "--batch-size", "4", "--precision", "fp32"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*launcher, "--nproc_per_node=2", "-m", "biounet", "-q", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run folder:") == 1  # rank 0 alone reports
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.csv", "curves.png", "best.pt", "last.pt"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    (row,) = read_rows(out / "metrics.csv")
    assert row["epoch"] == "1" and 0 <= float(row["val_dice_mean"]) <= 1
    # One process on the same data, seed and global batch sees the same augmented images per step;
    # only batch norm differs (each rank normalises its half batch; SyncBatchNorm needs CUDA).
    assert main(["-q", *args[:4], str(tmp_path / "single"), *args[5:]]) == 0
    (one,) = read_rows(tmp_path / "single" / "metrics.csv")
    for col in ("train_loss", "val_loss", "val_dice_mean"):
        assert abs(float(row[col]) - float(one[col])) < 0.01, col
