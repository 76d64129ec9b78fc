"""1 process vs N torchrun processes (gloo on CPU) on the same generated data, seed and global batch:
validation metrics per epoch and wall time of each run, measured in the same invocation.

    python benchmarks/ddp_vs_single.py --out /tmp/ddp_bench [--nproc 2] [--epochs 5] [--threads 1]

Every rank draws the same seeded order and augments the same global batch, so the runs see the same
images per step; on CPU batch norm normalises each rank's half batch (SyncBatchNorm needs CUDA), which
is the expected source of differences.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from biounet.data.synthetic import write_synthetic_dataset

COLUMNS = ("train_loss", "val_loss", "val_dice_disc", "val_dice_cup", "val_dice_mean")


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=64)
    a = ap.parse_args()
    data = write_synthetic_dataset(a.out / "data", n_train=a.n_train, n_test=1, h=96, w=108)
    train = ["train", "--data", str(data), "--epochs", str(a.epochs), "--batch-size", "4"]
    train += ["--image-size", str(a.image_size), "--precision", "fp32", "--seed", "0"]
    one = a.out / "single"
    many = a.out / f"ddp{a.nproc}"
    for run_dir in (one, many):  # this script's own scratch runs: train refuses a finished one
        shutil.rmtree(run_dir, ignore_errors=True)
    t_one = run([sys.executable, "-m", "biounet", "-q", *train, "--out", str(one)], a.threads)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += [f"--nproc_per_node={a.nproc}", "-m", "biounet", "-q", *train, "--out", str(many)]
    t_many = run(launch, a.threads)
    print(f"{'epoch':>5} {'column':>14} {'1 process':>10} {f'{a.nproc} processes':>12} {'diff':>9}")
    for r1, rn in zip(rows(one), rows(many), strict=True):
        for c in COLUMNS:
            x, y = float(r1[c]), float(rn[c])
            print(f"{r1['epoch']:>5} {c:>14} {x:>10.4f} {y:>12.4f} {y - x:>+9.4f}")
    print(
        f"wall time (s, process start to exit): 1 process {t_one:.1f}, {a.nproc} processes {t_many:.1f}"
    )


if __name__ == "__main__":
    main()
