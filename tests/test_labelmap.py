"""Label-map datasets (one integer image per case) imported as dataset folders, then trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biounet.data.folder import discover, resolve_labels
from biounet.data.io import read_image, read_mask
from biounet.data.labelmap import labelmap_to_folder, parse_label_specs
from biounet.errors import BiounetError
from input_files import run_cli

# REFUGE's own mask convention: background 255, disc rim 128, cup 0 (so 0 is a class here)
REFUGE_MAP = np.full((10, 12), 255, np.uint8)
REFUGE_MAP[2:8, 3:10] = 128
REFUGE_MAP[4:6, 5:8] = 0
DISC = (REFUGE_MAP < 255).astype(np.uint8)  # rim + cup: 6 x 7 pixels
CUP = (REFUGE_MAP == 0).astype(np.uint8)  # 2 x 3 pixels


def labelmap_dataset(root: Path, maps: dict[str, np.ndarray], suffix: str = "") -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, lab in maps.items():
        img = rng.integers(0, 256, (*lab.shape, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{stem}.jpg", quality=90)
        Image.fromarray(lab).save(root / "masks" / f"{stem}{suffix}.png")
    return root


def test_nested_labels_from_a_refuge_style_map(tmp_path: Path) -> None:
    src = labelmap_dataset(tmp_path / "src", {"g1": REFUGE_MAP, "g2": REFUGE_MAP[::-1]})
    (src / "splits.json").write_text(json.dumps({"train": ["g1"], "test": ["g2"]}))
    out = labelmap_to_folder(src, tmp_path / "out", {"disc": (0, 128), "cup": (0,)})
    np.testing.assert_array_equal(read_mask(out / "masks/disc/g1.png"), DISC)
    np.testing.assert_array_equal(read_mask(out / "masks/cup/g1.png"), CUP)
    np.testing.assert_array_equal(read_mask(out / "masks/cup/g2.png"), CUP[::-1])
    # images copied byte for byte (a JPEG stays the JPEG it was), splits kept
    assert (out / "images/g1.jpg").read_bytes() == (src / "images/g1.jpg").read_bytes()
    assert json.loads((out / "splits.json").read_text()) == {"train": ["g1"], "test": ["g2"]}
    samples = discover(out)
    assert resolve_labels(samples, (), out) == ("cup", "disc")


def test_default_labels_one_per_nonzero_value_and_suffix_named_maps(tmp_path: Path) -> None:
    lab = np.zeros((8, 8), np.uint8)
    lab[1:3, 1:3], lab[5:7, 4:8] = 1, 2
    src = labelmap_dataset(tmp_path / "src", {"a": lab, "b": lab.T}, suffix="_label")
    out = labelmap_to_folder(src, tmp_path / "out")
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["class_1", "class_2"]
    assert read_mask(out / "masks/class_1/a.png").sum() == 4
    assert read_mask(out / "masks/class_2/b.png").sum() == 8
    np.testing.assert_array_equal(read_mask(out / "masks/class_2/b.png"), (lab.T == 2))


def test_images_without_a_map_are_copied_without_masks(tmp_path: Path) -> None:
    src = labelmap_dataset(tmp_path / "src", {"a": REFUGE_MAP})
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(src / "images/unlabelled.png")
    out = labelmap_to_folder(src, tmp_path / "out", {"disc": (0, 128)})
    assert (out / "images/unlabelled.png").is_file()
    assert not (out / "masks/disc/unlabelled.png").exists()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("disc", "NAME=VALUE"), ("disc=", "NAME=VALUE"), ("disc=a", "NAME=VALUE"),
     ("=1", "NAME=VALUE"), ("d/isc=1", "NAME=VALUE"), ("disc=-1", "values >= 0")],
)  # fmt: skip
def test_bad_label_specs(spec: str, needle: str) -> None:
    with pytest.raises(BiounetError, match=needle):
        parse_label_specs([spec])


def test_label_spec_parsing() -> None:
    assert parse_label_specs(["disc=0,128", "cup= 0"]) == {"disc": (0, 128), "cup": (0,)}
    with pytest.raises(BiounetError, match="given twice"):
        parse_label_specs(["a=1", "a=2"])


def test_errors_name_the_file(tmp_path: Path) -> None:
    src = labelmap_dataset(tmp_path / "src", {"a": REFUGE_MAP})
    with pytest.raises(BiounetError, match="not an empty folder"):
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "keep.txt").write_text("someone's work")
        labelmap_to_folder(src, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "someone's work"
    Image.fromarray(REFUGE_MAP).save(src / "masks/a.jpg")
    (src / "masks/a.png").unlink()
    with pytest.raises(BiounetError, match=r"a\.jpg: a label map must be stored losslessly"):
        labelmap_to_folder(src, tmp_path / "o1")
    (src / "masks/a.jpg").unlink()
    Image.fromarray(REFUGE_MAP[:5]).save(src / "masks/a.png")
    with pytest.raises(BiounetError, match=r"a\.png: label map is 12x5 but its image .* 12x10"):
        labelmap_to_folder(src, tmp_path / "o2")
    noise = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(src / "images/a.jpg")
    Image.fromarray(noise).save(src / "masks/a.png")
    with pytest.raises(BiounetError, match="not a label map"):
        labelmap_to_folder(src, tmp_path / "o3")


@pytest.mark.slow
def test_import_labelmap_then_train_from_the_cli(tmp_path: Path, capsys) -> None:
    maps = {f"g{i}": np.roll(REFUGE_MAP, i, axis=1) for i in range(4)}
    src = labelmap_dataset(tmp_path / "src", maps)
    argv = ["import-dataset", "--format", "labelmap", "--data", str(src)]
    code, err = run_cli([*argv, "--out", str(tmp_path / "ds"), "--label", "disc=0,128"], capsys)
    assert code == 0, err
    assert read_image(tmp_path / "ds/images/g0.jpg").shape == (10, 12, 3)
    code, err = run_cli(
        ["train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--epochs", "1",
         "--image-size", "32", "--batch-size", "2", "--precision", "fp32"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    code, err = run_cli([*argv, "--out", str(tmp_path / "ds2"), "--label", "disc"], capsys)
    assert code == 2 and "NAME=VALUE" in err
