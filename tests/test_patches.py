"""Patch training (--patch-size): crops per image and epoch, crops that keep image and masks
aligned, the checks on the size, and a run end to end whose checkpoint predicts whole images."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from biounet.cli import main
from biounet.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from biounet.data.dataset import ArrayDataset
from biounet.errors import BiounetError
from biounet.predictor import PredictOptions, make_predictor
from biounet.train_data import (
    array_batches,
    check_patch_size,
    n_batches,
    patches_per_image,
    random_crops,
)


@pytest.mark.parametrize(
    ("size", "patch", "k"), [(256, 0, 1), (256, 256, 1), (576, 192, 9), (100, 64, 3), (64, 48, 2)]
)
def test_patches_per_image_cover_the_image_area(size: int, patch: int, k: int) -> None:
    assert patches_per_image(size, patch) == k


def test_crops_keep_image_and_masks_aligned() -> None:
    """Each pixel's value encodes its position (row * 16 + col) in the image's channels and in
    the masks' labels: a crop's image and masks hold the same positions, a contiguous window."""
    pos = torch.arange(256, dtype=torch.int64).reshape(16, 16)
    img = (
        torch.stack([pos, pos + 1]).expand(7, 2, 16, 16)
        + 1000 * torch.arange(7)[:, None, None, None]
    )
    mask = (
        torch.stack([pos, pos, pos]).expand(7, 3, 16, 16)
        + 1000 * torch.arange(7)[:, None, None, None]
    )
    idx = torch.tensor([4, 0, 6, 4, 2])
    x, y = random_crops(img, mask, idx, 6, torch.Generator().manual_seed(0))
    assert x.shape == (5, 2, 6, 6) and y.shape == (5, 3, 6, 6)
    assert (x[:, 0, 0, 0] // 1000).tolist() == idx.tolist()  # the indexed images, in order
    x, y = x % 1000, y % 1000
    for b in range(5):
        torch.testing.assert_close(x[b, 0], y[b, 2])
        torch.testing.assert_close(x[b, 1], y[b, 0] + 1)
        r0, c0 = divmod(int(x[b, 0, 0, 0]), 16)
        torch.testing.assert_close(x[b, 0], pos[r0 : r0 + 6, c0 : c0 + 6])


def config(patch: int, size: int = 64, batch: int = 4) -> RunConfig:
    return RunConfig(
        data=DataConfig(image_size=size, patch_size=patch),
        model=ModelConfig(depth=4),
        train=TrainConfig(batch_size=batch),
    )


def test_patch_size_checks() -> None:
    check_patch_size(config(32))
    with pytest.raises(BiounetError, match="multiple of 16"):
        check_patch_size(config(40))
    with pytest.raises(BiounetError, match="at most --image-size"):
        check_patch_size(config(96))


def test_an_epoch_of_patches_sees_as_many_pixels() -> None:
    """6 images of 64 px, patches of 32: 4 crops per image, 24 per epoch, 6 batches of 4."""
    data = ArrayDataset(
        [f"s{i}" for i in range(6)],
        torch.randint(0, 255, (6, 3, 64, 64), dtype=torch.uint8),
        torch.randint(0, 2, (6, 2, 64, 64), dtype=torch.uint8),
        [None] * 6,
    )
    cfg = config(32)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment=False))
    batches = list(array_batches(data, cfg, torch.Generator().manual_seed(0)))
    assert len(batches) == n_batches(data, cfg) == 6
    assert all(x.shape == (4, 3, 32, 32) and y.shape == (4, 2, 32, 32) for x, y in batches)
    whole = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, patch_size=0))
    assert n_batches(data, whole) == 2


@pytest.mark.slow
def test_a_patch_run_trains_and_predicts_whole_images(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "r"
    args = ["train", "--data", str(synthetic_data), "--out", str(out), "--epochs", "1"]
    args += ["--image-size", "64", "--patch-size", "32", "--batch-size", "4", "--precision", "fp32"]
    assert main(["-q", *args]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["patch_size"] == 32
    img = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    p = make_predictor(out / "best.pt", PredictOptions(precision="fp32")).predict(img)
    assert p.prob.shape == (2, 50, 70)
    assert json.loads((out / "val" / "summary.json").read_text())["n_images"] >= 1
    fundus = ["train", "--pipeline", "fundus", "--data", str(synthetic_data), "--patch-size", "32"]
    assert main([*fundus, "--out", str(tmp_path / "f")]) == 2
    assert "--patch-size: not with --pipeline fundus" in capsys.readouterr().err
