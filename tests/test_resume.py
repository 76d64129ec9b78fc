"""Crash-safe training: a SIGKILLed run resumes to the same weights, a NaN loss keeps the last good
epoch, and a run folder that cannot take the checkpoints is refused before training starts."""

from __future__ import annotations

import csv
import errno
import os
import re
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import biounet.checkpoint
import biounet.train
import biounet.train_state
from biounet.checkpoint import load_checkpoint
from biounet.cli import main
from biounet.data.synthetic import write_synthetic_dataset
from biounet.train_state import read_resume

pytestmark = pytest.mark.slow

FAST = ["--image-size", "64", "--batch-size", "4", "--precision", "fp32", "--deterministic"]


@pytest.fixture(scope="module")
def data12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 training images (3 batches an epoch after the validation hold-out), so an epoch is long
    enough to be killed in the middle of."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("d12"), n_train=12, n_test=1, h=64, w=72)


def train_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--epochs", str(epochs), *FAST]


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_sigkill_then_resume_gives_the_uninterrupted_weights(data12: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    assert main(["-q", *train_args(data12, ref, 3)]) == 0
    # The victim is started for 50 epochs so that it is surely still running when killed; the epoch
    # count changes nothing else (see test_cli's repeatability test), and --resume --epochs 3 ends it.
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "biounet", "-q", *train_args(data12, run, 50)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (run / "last.pt").exists():  # appears (atomically) when epoch 1 is done
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_after = read_resume(run / "last.pt")[0]["epoch"]
    assert 1 <= killed_after < 3

    assert main(["-q", "train", "--resume", str(run), "--epochs", "3"]) == 0
    assert load_checkpoint(run / "last.pt").extra["epoch"] == 3
    assert_same_weights(ref / "last.pt", run / "last.pt")
    assert_same_weights(ref / "best.pt", run / "best.pt")
    assert metric_rows(run) == metric_rows(ref)
    # the resumed state carries everything the next epoch draws from
    ts = read_resume(run / "last.pt")[0]
    assert {"optimizer", "scheduler", "rng", "epoch", "best", "rows"} <= set(ts)
    assert {"torch", "numpy", "python", "data"} <= set(ts["rng"])
    assert len(ts["optimizer"]["state"]) > 0 and len(ts["rows"]) == 3


def test_resume_of_a_finished_run_changes_nothing(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["-q", *train_args(synthetic_data, run, 1), "--image-size", "32"]) == 0
    before = (run / "last.pt").read_bytes()
    assert main(["-q", "train", "--resume", str(run)]) == 0
    assert (run / "last.pt").read_bytes() == before


def test_nan_loss_names_epoch_and_batch_and_keeps_the_last_good_epoch(
    synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real_loss, calls = biounet.train.bce_dice_loss, []

    def loss_nan_from_epoch_2(logits, target, *args):
        loss = real_loss(logits, target, *args)
        if torch.is_grad_enabled():  # training, not validation
            calls.append(1)
            if len(calls) > 1:  # 5 training images at batch size 4: one batch an epoch
                return loss * float("nan")
        return loss

    monkeypatch.setattr(biounet.train, "bce_dice_loss", loss_nan_from_epoch_2)
    run = tmp_path / "run"
    assert main(["-q", *train_args(synthetic_data, run, 3), "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("biounet: error: epoch 2/3: loss is nan at batch 0; stopping")
    assert err.count("\n") == 1 and "Traceback" not in err
    last = load_checkpoint(run / "last.pt")
    assert last.extra["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last.state_dict.values() if t.is_floating_point())
    assert [r["epoch"] for r in metric_rows(run)] == ["1"]
    assert read_resume(run / "last.pt")[0]["epoch"] == 1  # and it can be resumed from


def test_disk_full_mid_run_keeps_the_last_good_checkpoint(
    synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The disk fills while epoch 2 is saved: one error line, and last.pt still holds epoch 1
    (the write goes to a temporary file that never replaces it)."""
    real_save, saves = torch.save, []

    def save_until_full(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) > 2:  # epoch 1 wrote best.pt and last.pt
            raise OSError(errno.ENOSPC, "No space left on device", str(f.name))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(biounet.checkpoint.torch, "save", save_until_full)
    run = tmp_path / "run"
    assert main(["-q", *train_args(synthetic_data, run, 3), "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("biounet: error: ") and "No space left on device" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    monkeypatch.undo()
    assert load_checkpoint(run / "last.pt").extra["epoch"] == 1


def test_full_disk_is_refused_before_training(
    synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        biounet.train_state.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6)
    )
    run = tmp_path / "run"
    assert main(["-q", *train_args(synthetic_data, run, 1)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"biounet: error: {run}: only 1.0 MB free on its disk")
    assert re.search(r"checkpoints of about \d+\.\d MB .* needs \d+\.\d MB$", err)
    assert err.count("\n") == 1
    assert not (run / "last.pt").exists() and not (run / "metrics.csv").exists()


def test_unwritable_run_folder_is_refused_before_training(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["-q", *train_args(synthetic_data, blocker / "run", 1)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"biounet: error: {blocker / 'run'}: cannot write the run folder")
    if os.geteuid() != 0:  # root writes through permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["-q", *train_args(synthetic_data, locked / "run", 1)]) == 2
        assert "cannot write the run folder" in capsys.readouterr().err
