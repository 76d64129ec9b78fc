"""nnU-Net v2 raw datasets: a round trip biounet -> nnU-Net -> biounet with identical data, region
labels for nested structures, reading hand-made datasets, errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from biounet.cli import main
from biounet.data.folder import discover
from biounet.data.io import read_image, read_mask
from biounet.data.nnunet import (
    folder_to_nnunet,
    label_encoding,
    nesting,
    nnunet_to_folder,
    read_case,
    read_nnunet,
)
from biounet.errors import BiounetError

Png = Callable[[Path, np.ndarray], Path]


def test_round_trip_keeps_images_masks_and_splits(synthetic_data: Path, tmp_path: Path) -> None:
    ds = folder_to_nnunet(synthetic_data, tmp_path / "nn", dataset_id=7, name="Fundus")
    assert ds.name == "Dataset007_Fundus"
    meta = json.loads((ds / "dataset.json").read_text())
    # cup inside disc: 1 = rim, 2 = cup; disc is the region {1, 2}
    assert meta["labels"] == {"background": 0, "disc": [1, 2], "cup": [2]}
    assert meta["regions_class_order"] == [1, 2]
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert (meta["numTraining"], meta["file_ending"]) == (6, ".png")
    assert (
        len(list((ds / "imagesTr").iterdir())) == 6 and len(list((ds / "imagesTs").iterdir())) == 3
    )
    lab = read_image(ds / "labelsTr" / "synth_000.png")[..., 0]
    disc = read_mask(synthetic_data / "masks" / "disc" / "synth_000.png") > 0
    cup = read_mask(synthetic_data / "masks" / "cup" / "synth_000.png") > 0
    np.testing.assert_array_equal(lab, np.where(cup, 2, np.where(disc, 1, 0)))

    back = nnunet_to_folder(ds, tmp_path / "back")
    assert json.loads((back / "splits.json").read_text()) == json.loads(
        (synthetic_data / "splits.json").read_text()
    )
    before, after = discover(synthetic_data), discover(back)
    assert [s.stem for s in before] == [s.stem for s in after]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(read_image(a.image), read_image(b.image))
        assert set(a.masks) == set(b.masks) == {"disc", "cup"}
        for lb in a.masks:
            np.testing.assert_array_equal(read_mask(a.masks[lb]), read_mask(b.masks[lb]))


def test_cli_export_and_import(synthetic_data: Path, tmp_path: Path) -> None:
    args = ["export-dataset", "--data", str(synthetic_data), "--format", "nnunet"]
    assert main(["-q", *args, "--out", str(tmp_path), "--dataset-id", "12", "--name", "F"]) == 0
    ds = tmp_path / "Dataset012_F"
    assert (ds / "dataset.json").is_file()
    args = ["import-dataset", "--data", str(ds), "--format", "nnunet", "--out", str(tmp_path / "b")]
    assert main(["-q", *args]) == 0
    assert len(discover(tmp_path / "b")) == 9


def test_disjoint_labels_are_plain_and_partial_overlap_is_refused() -> None:
    a = np.zeros((4, 6), bool)
    a[:, :2] = True
    b, c = np.roll(a, 2, axis=1), np.roll(a, 1, axis=1)
    assert label_encoding(nesting([{"a": a, "b": b}], ("a", "b"))) == (
        ["a", "b"],
        {"a": [1], "b": [2]},
    )
    with pytest.raises(BiounetError, match="'a' and 'c' overlap without one always containing"):
        nesting([{"a": a, "c": c}], ("a", "c"))


def test_three_levels_of_nesting() -> None:
    outer = np.ones((5, 5), bool)
    mid = np.zeros((5, 5), bool)
    mid[1:4, 1:4] = True
    inner = np.zeros((5, 5), bool)
    inner[2, 2] = True
    parent = nesting([{"in": inner, "mid": mid, "out": outer}], ("in", "mid", "out"))
    assert parent == {"in": "mid", "mid": "out", "out": None}
    order, regions = label_encoding(parent)
    assert order == ["out", "mid", "in"]
    assert regions == {"out": [1, 2, 3], "mid": [2, 3], "in": [3]}


def test_read_hand_made_dataset_with_channel_files(tmp_path: Path, png: Png) -> None:
    root = tmp_path / "Dataset002_X"
    rng = np.random.default_rng(0)
    chans = rng.integers(0, 256, (3, 6, 8), dtype=np.uint8)
    for k in range(3):  # one grey file per channel: _0000, _0001, _0002
        png(root / "imagesTr" / f"c1_{k:04d}.png", chans[k])
        png(root / "imagesTs" / f"t1_{k:04d}.png", chans[k])
    lab = np.zeros((6, 8), np.uint8)
    lab[1:3, 1:3], lab[4:, 5:] = 1, 2
    png(root / "labelsTr" / "c1.png", lab)
    meta = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "vessel": 1, "lesion": 2, "ignore": 3},
        "numTraining": 1,
        "file_ending": ".png",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = read_nnunet(root)
    assert ds.cases == {"train": ["c1"], "test": ["t1"]}
    assert ds.labels == {"vessel": (1,), "lesion": (2,)}  # background and ignore left out
    img, masks = read_case(ds, "c1")
    np.testing.assert_array_equal(img, np.moveaxis(chans, 0, -1))
    np.testing.assert_array_equal(masks["vessel"], lab == 1)
    np.testing.assert_array_equal(masks["lesion"], lab == 2)
    assert read_case(ds, "t1", "test")[1] is None  # imagesTs without labelsTs
    out = nnunet_to_folder(root, tmp_path / "b")
    assert not (out / "masks" / "vessel" / "t1.png").exists()
    assert json.loads((out / "splits.json").read_text()) == {"train": ["c1"], "test": ["t1"]}

    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(BiounetError, match="3 channels, but dataset.json names 2"):
        read_case(read_nnunet(root), "c1")


def test_missing_dataset_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match=r"dataset.json: not found"):
        read_nnunet(tmp_path)


def test_export_says_when_images_are_not_8_bit(tmp_path: Path, png: Png, caplog) -> None:
    root = tmp_path / "d16"
    (root / "images").mkdir(parents=True)
    for i in range(2):
        tifffile.imwrite(root / "images" / f"s{i}.tif", np.full((6, 8), 4400 + 1000 * i, np.uint16))
        m = np.zeros((6, 8), np.uint8)
        m[2:4, 2:5] = 255
        png(root / "masks" / f"s{i}.png", m)
    with caplog.at_level(logging.WARNING, logger="biounet"):
        ds = folder_to_nnunet(root, tmp_path / "nn")
    assert "2 image(s) are not 8-bit (s0.tif (uint16), s1.tif (uint16))" in caplog.text
    assert read_image(ds / "imagesTr" / "s0_0000.png").dtype == np.uint8
