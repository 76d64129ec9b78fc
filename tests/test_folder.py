"""Dataset folders: discovery, label resolution, splits, and errors that name the folder or file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from biounet.data.dataset import load_arrays
from biounet.data.folder import discover, list_images, resolve_labels, select_split
from biounet.errors import BiounetError

Png = Callable[[Path, np.ndarray], Path]
IMG = np.full((6, 8, 3), 100, np.uint8)
MASK = np.zeros((6, 8), np.uint8)
MASK[2:4, 3:6] = 255


def multi_label(root: Path, png: Png, stems=("a", "b", "c"), labels=("disc", "cup")) -> Path:
    for s in stems:
        png(root / "images" / f"{s}.png", IMG)
        for lb in labels:
            png(root / "masks" / lb / f"{s}.png", MASK)
    return root


def single_label(root: Path, png: Png, stems=("a", "b")) -> Path:
    for s in stems:
        png(root / "images" / f"{s}.png", IMG)
        png(root / "masks" / f"{s}.png", MASK)
    return root


def test_discover_multi_label(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png)
    samples = discover(root)
    assert [s.stem for s in samples] == ["a", "b", "c"]
    assert samples[1].image == root / "images" / "b.png"
    assert samples[1].masks == {"cup": root / "masks/cup/b.png", "disc": root / "masks/disc/b.png"}
    assert resolve_labels(samples, (), root) == ("cup", "disc")  # all, sorted
    assert resolve_labels(samples, ("disc",), root) == ("disc",)
    assert resolve_labels(samples, ["disc", "cup"], root) == ("disc", "cup")  # order as asked


def test_discover_finds_masks_with_other_extensions(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png, stems=("a",), labels=("vessel",))
    (root / "masks/vessel/a.png").rename(root / "masks/vessel/a.tif")
    png(root / "images" / "b.jpg", IMG)
    png(root / "masks" / "vessel" / "b.gif", MASK)
    samples = discover(root)
    assert {s.stem: s.masks["vessel"].name for s in samples} == {"a": "a.tif", "b": "b.gif"}


def test_single_mask_folder_is_label_foreground(tmp_path: Path, png: Png) -> None:
    root = single_label(tmp_path, png)
    samples = discover(root)
    assert all(set(s.masks) == {"foreground"} for s in samples)
    assert resolve_labels(samples, (), root) == ("foreground",)


def test_single_mask_folder_takes_the_one_requested_name(tmp_path: Path, png: Png) -> None:
    root = single_label(tmp_path, png)
    samples = discover(root)
    assert resolve_labels(samples, ("membrane",), root) == ("membrane",)
    assert samples[0].masks == {"membrane": root / "masks" / "a.png"}


def test_missing_mask_names_the_folder_and_image(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png)
    (root / "masks/cup/b.png").unlink()
    samples = discover(root)
    assert "cup" not in samples[1].masks
    with pytest.raises(BiounetError, match=rf"{root}/masks/cup: no mask for image\(s\) \['b'\]"):
        resolve_labels(samples, ("disc", "cup"), root)
    # with no labels requested, a label some images lack is an error, not silently dropped
    with pytest.raises(BiounetError, match=r"masks/cup: no mask for image\(s\) \['b'\]; add them, "
                       r"or train without 'cup' with --labels disc"):  # fmt: skip
        resolve_labels(samples, (), root)
    assert resolve_labels(samples, ("disc",), root) == ("disc",)


@pytest.mark.parametrize(("layout", "label"), [("multi", "cup"), ("single", "membrane")])
def test_missing_mask_error_names_an_existing_folder(
    tmp_path: Path, png: Png, layout: str, label: str
) -> None:
    """The folder in the message is where the user must add the mask: it has to exist."""
    if layout == "multi":
        root = multi_label(tmp_path, png)
        (root / "masks/cup/b.png").unlink()
    else:
        root = single_label(tmp_path, png)
        (root / "masks/b.png").unlink()
    with pytest.raises(BiounetError, match=r"no mask for image\(s\) \['b'\]") as e:
        resolve_labels(discover(root), (label,), root)
    folder = Path(str(e.value).split(": no mask")[0])
    assert folder.is_dir(), f"the error names {folder}, which does not exist"


def test_no_label_common_to_all_images(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png, stems=("a", "b"))
    (root / "masks/cup/a.png").unlink()
    (root / "masks/disc/b.png").unlink()
    with pytest.raises(
        BiounetError, match=r"no label has a mask for every image \(found \['cup', 'disc'\]\)"
    ):
        resolve_labels(discover(root), (), root)


def test_unknown_label_lists_the_available_ones(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png)
    with pytest.raises(BiounetError, match=r"unknown label 'vessel'.*\['cup', 'disc'\]"):
        resolve_labels(discover(root), ("disc", "vessel"), root)


def test_duplicate_stems_are_an_error(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png)
    png(root / "images" / "a.jpg", IMG)
    with pytest.raises(BiounetError, match=r"images: several images share the stem\(s\) \['a'\]"):
        discover(root)


def test_non_images_are_ignored_and_no_images_is_an_error(tmp_path: Path, png: Png) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("x")
    with pytest.raises(BiounetError, match=r"images: no images found \(extensions \.png"):
        discover(tmp_path)
    with pytest.raises(BiounetError, match="nowhere: dataset folder not found"):
        discover(tmp_path / "nowhere")
    with pytest.raises(BiounetError, match="folder not found"):
        list_images(tmp_path / "masks")


def test_images_without_masks_folder(tmp_path: Path, png: Png) -> None:
    png(tmp_path / "images" / "a.png", IMG)
    samples = discover(tmp_path)
    assert samples[0].masks == {}
    with pytest.raises(BiounetError, match="no label has a mask for every image"):
        resolve_labels(samples, (), tmp_path)


def test_splits_json_selects_in_listed_order(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png, stems=("a", "b", "c", "d"))
    (root / "splits.json").write_text(json.dumps({"train": ["d", "a"], "test": ["c"], "x": 3}))
    samples = discover(root)
    assert [s.stem for s in select_split(root, samples, "train")] == ["d", "a"]
    assert [s.stem for s in select_split(root, samples, "test")] == ["c"]
    assert select_split(root, samples, "all") == samples
    assert select_split(root, samples, None) == samples


def test_unknown_split_lists_the_splits(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png)
    (root / "splits.json").write_text(json.dumps({"train": ["a"], "test": ["b"]}))
    with pytest.raises(
        BiounetError, match=r"splits\.json: no split 'val'; it has \['test', 'train'\]"
    ):
        select_split(root, discover(root), "val")


def test_split_without_splits_json_is_refused(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png)
    with pytest.raises(
        BiounetError, match="no splits.json, so split 'test' is unknown; use --split all"
    ):
        select_split(root, discover(root), "test")


def test_split_naming_a_missing_image(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png)
    (root / "splits.json").write_text(json.dumps({"test": ["a", "zz"]}))
    with pytest.raises(BiounetError, match=r"split 'test' names stems with no image: \['zz'\]"):
        select_split(root, discover(root), "test")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_unreadable_splits_json(tmp_path: Path, png: Png, content: str) -> None:
    root = multi_label(tmp_path, png)
    (root / "splits.json").write_text(content)
    with pytest.raises(BiounetError, match="splits.json"):
        select_split(root, discover(root), "train")


def test_load_arrays_shapes_and_values(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png, stems=("a", "b"))
    data = load_arrays(discover(root), ("disc", "cup"), size=16, channels=1)
    assert data.stems == ["a", "b"]
    assert data.images.shape == (2, 1, 16, 16) and data.images.dtype == torch.uint8
    assert data.masks.shape == (2, 2, 16, 16) and data.masks.dtype == torch.uint8
    assert set(data.masks.unique().tolist()) == {0, 1}
    # 8x6 image padded to 8x8 then doubled: the 3x2 mask block becomes 6x4 = 24 pixels
    assert data.masks[0, 0].sum() == 24
    assert data.geometries[0].top == 1 and data.geometries[0].side == 8
    sub = data.subset([1])
    assert sub.stems == ["b"] and sub.images.shape == (1, 1, 16, 16) and len(sub) == 1


def test_mask_size_mismatch_names_the_mask_file(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png, stems=("a", "b"))
    png(root / "masks" / "cup" / "b.png", np.zeros((6, 9), np.uint8))
    samples = discover(root)
    with pytest.raises(BiounetError, match=r"masks/cup/b\.png: mask is 9x6 but its image is 8x6"):
        load_arrays(samples, ("disc", "cup"), size=16, channels=3)


def test_load_arrays_inverts_the_named_labels_only(tmp_path: Path, png: Png) -> None:
    root = multi_label(tmp_path, png, stems=("a",))
    data = load_arrays(discover(root), ("disc", "cup"), size=8, channels=3, invert=("cup",))
    disc, cup = data.masks[0, 0, 1:7], data.masks[0, 1, 1:7]  # the image rows of the 8x8 square
    assert disc.sum() == 6 and torch.equal(cup, 1 - disc)


def test_masks_in_any_case_and_as_jpeg_are_found_lossless_first(tmp_path: Path, png: Png) -> None:
    from PIL import Image

    for s in ("a", "b", "c", "d"):
        png(tmp_path / "images" / f"{s}.png", IMG)
    png(tmp_path / "masks" / "a.PNG", MASK)  # upper-case extension (cameras, Windows tools)
    Image.fromarray(MASK).save(tmp_path / "masks" / "b.jpg", quality=60)  # e.g. Kvasir-SEG
    Image.fromarray(MASK).save(tmp_path / "masks" / "c.JPEG", quality=60)
    png(tmp_path / "masks" / "d.png", MASK)
    Image.fromarray(255 - MASK).save(tmp_path / "masks" / "d.jpg")  # a stale JPEG beside it
    found = {s.stem: s.masks["foreground"].name for s in discover(tmp_path)}
    assert found == {"a": "a.PNG", "b": "b.jpg", "c": "c.JPEG", "d": "d.png"}
    ds = load_arrays(discover(tmp_path), ("foreground",), 8, 3)
    assert ds.masks.shape == (4, 1, 8, 8)
    assert all((m == ds.masks[0]).all() for m in ds.masks)  # the JPEG masks cut back to MASK


@pytest.mark.parametrize("suffix", ["_segmentation", "_mask", "-label"])
def test_masks_named_image_stem_plus_one_suffix_are_paired(
    tmp_path: Path, png: Png, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ISIC names its masks ISIC_0000000_segmentation.png; others <stem>_mask.png."""
    stems = ("ISIC_0000000", "ISIC_0000001", "ISIC_0000001_b")  # one stem begins another
    for s in stems:
        png(tmp_path / "images" / f"{s}.jpg", IMG)
        png(tmp_path / "masks" / f"{s}{suffix}.png", MASK)
    with caplog.at_level("INFO"):
        samples = discover(tmp_path)
    assert {s.stem: s.masks["foreground"].name for s in samples} == {
        s: f"{s}{suffix}.png" for s in stems
    }
    assert f"<image stem>{suffix}" in caplog.text


def test_masks_with_mixed_suffixes_or_a_match_are_not_re_paired(tmp_path: Path, png: Png) -> None:
    for s in ("a", "b"):
        png(tmp_path / "images" / f"{s}.png", IMG)
    png(tmp_path / "masks" / "a_mask.png", MASK)
    png(tmp_path / "masks" / "b_seg.png", MASK)  # two suffixes: no pairing guessed
    assert all(not s.masks for s in discover(tmp_path))
    png(tmp_path / "masks" / "b.png", MASK)  # one mask shares its stem: stems pair, nothing else
    assert {s.stem: sorted(s.masks.values()) for s in discover(tmp_path)} == {
        "a": [],
        "b": [tmp_path / "masks" / "b.png"],
    }


def test_masks_named_another_way_get_an_error_that_shows_both_names(
    tmp_path: Path, png: Png
) -> None:
    """DRIVE names images 21_training.tif and masks 21_manual1.gif: no stem or suffix pairs them."""
    for i in (21, 22):
        png(tmp_path / "images" / f"{i}_training.png", IMG)
        png(tmp_path / "masks" / "vessel" / f"{i}_manual1.png", MASK)
    with pytest.raises(BiounetError) as e:
        resolve_labels(discover(tmp_path), (), tmp_path)
    msg = str(e.value)
    assert "no label has a mask for every image" in msg and "pair with images by stem" in msg
    assert "'21_manual1.png'" in msg and "'21_training.png'" in msg


def test_a_flat_folder_of_images_is_told_the_layout(tmp_path: Path, png: Png) -> None:
    for i in range(2):
        png(tmp_path / f"img{i}.png", IMG)
        png(tmp_path / f"img{i}_mask.png", MASK)
    with pytest.raises(BiounetError) as e:
        discover(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'images'}: folder not found; a dataset folder holds")
    assert "holds 4 image files directly (e.g. img0.png)" in msg
    (tmp_path / "sub").mkdir()
    with pytest.raises(BiounetError) as e:
        discover(tmp_path / "sub")
    assert "directly" not in str(e.value) and "masks/<label>/<stem>.png" in str(e.value)
