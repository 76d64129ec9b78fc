"""``biounet cv``: fold rule, every held-out image evaluated exactly once and never trained on,
folds as separate processes, the pooled summary, skipping and resuming folds."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from biounet.cli import main
from biounet.config import DataConfig, RunConfig
from biounet.cv import fold_stems
from biounet.data.synthetic import write_synthetic_dataset
from biounet.errors import BiounetError
from biounet.train_data import split_samples

pytestmark = pytest.mark.slow

FOLDS = 2
OPTIONS = ["--epochs", "1", "--image-size", "32", "--precision", "fp32", "--batch-size", "2"]


def cv(data: Path, out: Path, *extra: str) -> int:
    return main(["-q", "cv", "--data", str(data), "--out", str(out), *OPTIONS, *extra])


def per_image(fold_dir: Path) -> list[dict[str, str]]:
    with open(fold_dir / "eval" / "per_image.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cvdata")
    return write_synthetic_dataset(root, n_train=6, n_test=2, h=48, w=56)


@pytest.fixture(scope="module")
def splits(data: Path) -> dict[str, list[str]]:
    return json.loads((data / "splits.json").read_text())


@pytest.fixture(scope="module")
def out(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two folds run as two separate commands, as cluster jobs would."""
    out = tmp_path_factory.mktemp("cv") / "cv"
    assert cv(data, out, "--folds", str(FOLDS), "--fold", "0") == 0
    assert not (out / "cv_summary.json").exists()  # fold 1 is still missing
    assert cv(data, out, "--folds", str(FOLDS), "--fold", "1") == 0
    return out


def test_fold_rule_is_every_kth_sorted_stem() -> None:
    stems = [f"s{i}" for i in (6, 0, 3, 1, 5, 2, 4)]
    assert fold_stems(stems, 3, 0) == ["s0", "s3", "s6"]
    assert fold_stems(stems, 3, 1) == ["s1", "s4"]
    assert fold_stems(stems, 3, 2) == ["s2", "s5"]
    with pytest.raises(BiounetError, match="--fold must be in 0..2"):
        fold_stems(stems, 3, 3)
    with pytest.raises(BiounetError, match="--folds must be at least 2"):
        fold_stems(stems, 1, 0)
    with pytest.raises(BiounetError, match="only 7 image"):
        fold_stems(stems, 8, 0)


def test_train_stems_restrict_the_training_pool(data: Path, splits: dict) -> None:
    pool = tuple(splits["train"][:4])
    cfg = RunConfig(data=DataConfig(root=str(data), train_stems=pool, val_fraction=0.25))
    tr, val, _ = split_samples(cfg)
    assert sorted(s.stem for s in tr + val) == sorted(pool) and len(val) == 1
    bad = RunConfig(data=DataConfig(root=str(data), train_stems=("nope",)))
    with pytest.raises(BiounetError, match=r"no image for stem\(s\) \['nope'\]"):
        split_samples(bad)


def test_each_held_out_image_is_evaluated_exactly_once(out: Path, splits: dict) -> None:
    evaluated = []
    for k in range(FOLDS):
        rows = per_image(out / f"fold_{k}")
        stems = sorted({r["stem"] for r in rows})
        assert stems == sorted(splits["train"])[k::FOLDS]
        assert len(rows) == len(stems) * 2  # one row per image and label (disc, cup)
        evaluated += stems
    # the training split exactly, each image once; the test split never
    assert sorted(evaluated) == sorted(splits["train"])
    assert not set(evaluated) & set(splits["test"])


def test_held_out_images_are_never_trained_on(out: Path, splits: dict) -> None:
    for k in range(FOLDS):
        held = set(json.loads((out / f"fold_{k}" / "fold.json").read_text())["held_out"])
        assert held == set(sorted(splits["train"])[k::FOLDS])
        cfg = RunConfig.load_yaml(out / f"fold_{k}" / "run" / "config.yaml")
        assert set(cfg.data.train_stems) == set(splits["train"]) - held
        # the images training actually loads (train and model-selection val) are the fold's others
        tr, val, _ = split_samples(cfg)
        used = {s.stem for s in tr + val}
        assert used == set(splits["train"]) - held and len(val) == 1


def test_summary_pools_every_held_out_image(out: Path) -> None:
    s = json.loads((out / "cv_summary.json").read_text())
    assert s["folds"] == FOLDS and s["n_images"] == 6
    rows = [r for k in range(FOLDS) for r in per_image(out / f"fold_{k}")]
    for lb in ("disc", "cup"):
        dice = [float(r["dice"]) for r in rows if r["label"] == lb]
        iou = [float(r["iou"]) for r in rows if r["label"] == lb]
        assert s["labels"][lb]["dice_mean"] == pytest.approx(np.mean(dice))
        assert s["labels"][lb]["iou_std"] == pytest.approx(np.std(iou))
    for k, f in enumerate(s["per_fold"]):
        fold_eval = json.loads((out / f"fold_{k}" / "eval" / "summary.json").read_text())
        assert f["fold"] == k and f["n_images"] == 3 and f["best_epoch"] == 1
        assert f["labels"]["cup"]["dice"] == pytest.approx(fold_eval["labels"]["cup"]["dice_mean"])


def test_rerun_skips_done_folds_and_summarize_repeats(data: Path, out: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in out.glob("fold_*/run/best.pt")}
    summary = (out / "cv_summary.json").read_text()
    assert cv(data, out, "--folds", str(FOLDS)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("fold_*/run/best.pt")} == before
    assert main(["-q", "cv", "--out", str(out), "--summarize"]) == 0
    assert (out / "cv_summary.json").read_text() == summary


def test_an_interrupted_fold_resumes(data: Path, out: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(out, tmp_path / "cv")
    # killed after training, before its evaluation: the next run resumes the fold from last.pt
    shutil.rmtree(copy / "fold_1" / "eval")
    (copy / "fold_1" / "fold.json").unlink()
    (copy / "cv_summary.json").unlink()
    last = (copy / "fold_1" / "run" / "last.pt").stat().st_mtime_ns
    with pytest.raises(BiounetError, match=r"fold\(s\) \[1\] of 2 not done yet"):
        main(["--debug", "cv", "--out", str(copy), "--summarize"])
    assert cv(data, copy) == 0  # --folds from cv.json
    assert (copy / "fold_1" / "run" / "last.pt").stat().st_mtime_ns == last  # no epoch retrained
    assert json.loads((copy / "cv_summary.json").read_text())["n_images"] == 6


def test_other_options_are_refused(data: Path, out: Path, capsys: pytest.CaptureFixture) -> None:
    assert cv(data, out, "--folds", str(FOLDS), "--seed", "3") == 2
    assert "started with other options (train.seed 0 -> 3)" in capsys.readouterr().err
