"""The real datasets in ../shared/data, when this machine has them (skipped otherwise).

Nothing is copied: a temporary dataset folder holds symbolic links to a handful of real files."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biounet.cli import main
from biounet.data.dataset import load_arrays
from biounet.data.folder import discover, resolve_labels
from biounet.data.io import read_mask

pytestmark = pytest.mark.slow


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def drishti_subset(src: Path, dst: Path, n_train: int = 2, n_test: int = 2) -> dict[str, list[str]]:
    """dst/images, dst/masks/{disc,cup} as links to ``n_train`` + ``n_test`` Drishti-GS1 images."""
    official = json.loads((src / "splits.json").read_text())
    splits = {"train": official["train"][:n_train], "test": official["test"][:n_test]}
    for stem in splits["train"] + splits["test"]:
        link(src / "images" / f"{stem}.jpg", dst / "images" / f"{stem}.jpg")
        for lb in ("disc", "cup"):
            link(src / "masks" / lb / f"{stem}.png", dst / "masks" / lb / f"{stem}.png")
    (dst / "splits.json").write_text(json.dumps(splits))
    return splits


def test_drishti_train_evaluate_predict(
    real_dataset: Callable[[str], Path], tmp_path: Path
) -> None:
    data = tmp_path / "drishti4"
    splits = drishti_subset(real_dataset("drishti_gs1"), data)
    assert all(p.is_symlink() for p in (data / "images").iterdir())
    run, ev, pred = tmp_path / "run", tmp_path / "eval", tmp_path / "pred"
    fast = ["--image-size", "64", "--batch-size", "2", "--precision", "fp32"]
    assert (
        main(["-q", "train", "--data", str(data), "--out", str(run), "--epochs", "1", *fast]) == 0
    )
    assert (run / "best.pt").is_file() and (run / "curves.png").is_file()

    ck = ["--checkpoint", str(run / "best.pt")]
    assert (
        main(["-q", "evaluate", *ck, "--data", str(data), "--out", str(ev), "--precision", "fp32"])
        == 0
    )
    with open(ev / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 2 test images x 2 labels
    assert {r["stem"] for r in rows} == set(splits["test"])
    assert json.loads((ev / "summary.json").read_text())["n_images"] == 2

    stem = splits["test"][0]
    image = data / "images" / f"{stem}.jpg"
    assert main(["-q", "predict", *ck, "--out", str(pred), str(image), "--precision", "fp32"]) == 0
    with Image.open(image) as im:
        size = im.size
    for kind in ("disc", "cup", "prob_disc", "overlay"):
        with Image.open(pred / f"{stem}_{kind}.png") as out:
            assert out.size == size, kind


def one_sample(root: Path, stem: str):
    return [s for s in discover(root) if s.stem == stem]


def test_drive_image_and_vessel_mask(real_dataset: Callable[[str], Path]) -> None:
    root = real_dataset("drive")
    samples = one_sample(root, "21_training")
    assert resolve_labels(samples, ("vessel",), root) == ("vessel",)
    data = load_arrays(samples, ("vessel",), size=64, channels=3)
    assert data.images.shape == (1, 3, 64, 64) and data.masks.shape == (1, 1, 64, 64)
    g = data.geometries[0]
    assert (g.h, g.w, g.side) == (584, 565, 584)
    assert set(data.masks.unique().tolist()) == {0, 1}
    # vessels cover 9-17 % of the field of view, which is ~69 % of the image
    full = read_mask(samples[0].masks["vessel"])
    assert full.shape == (584, 565) and 0.05 < full.mean() < 0.15


def test_isbi2012_membranes_with_invert(real_dataset: Callable[[str], Path]) -> None:
    root = real_dataset("isbi2012_em")
    samples = one_sample(root, "train_00")
    assert set(samples[0].masks) == {"foreground"}  # masks/<stem>.png: one label
    assert resolve_labels(samples, ("membrane",), root) == ("membrane",)
    stored = read_mask(samples[0].masks["membrane"])  # 1 = cell interior as stored
    data = load_arrays(samples, ("membrane",), size=512, channels=1, invert=("membrane",))
    assert data.images.shape == (1, 1, 512, 512)
    membrane = data.masks[0, 0].numpy()
    np.testing.assert_array_equal(membrane, 1 - stored)  # 512 px: no resize, exact
    assert 0.1 < membrane.mean() < 0.4  # membranes are the thin minority
