"""nnU-Net v2 raw datasets, read and written, so data moves between nnU-Net and biounet unchanged.

An nnU-Net v2 raw dataset (2D)::

    DatasetXXX_Name/
      dataset.json     channel_names, labels, file_ending, numTraining (+ regions_class_order)
      imagesTr/<case>_0000.png (+ _0001 ... one file per channel; an RGB PNG is 3 channels)
      labelsTr/<case>.png          one integer label map per case
      imagesTs/<case>_0000.png     test images (labelsTs/ too where a dataset ships them)

Labels are either plain (``{"background": 0, "vessel": 1}``: the mask is the pixels of that
value) or regions (``{"background": 0, "disc": [1, 2], "cup": [2]}``: the mask is the pixels of
any listed value). biounet's masks are independent binary images per label, so nested structures
(the cup inside the disc) are written as regions: 1 = disc rim, 2 = cup, disc = [1, 2], with
``regions_class_order`` telling nnU-Net how to paint its region predictions back into one map.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biounet import __version__
from biounet.data.folder import Sample, discover, read_splits, resolve_labels
from biounet.data.io import _read_array, image_from_array, read_image, read_mask, save_png
from biounet.data.transforms import match_channels
from biounet.errors import BiounetError

log = logging.getLogger(__name__)
SKIPPED_LABELS = ("background", "ignore")


@dataclass(frozen=True)
class NnunetDataset:
    """What dataset.json and the file names say. ``labels``: name -> label-map values of its mask
    (background and the ignore label left out); ``cases``: split ("train", "test") -> case ids."""

    root: Path
    channel_names: dict[str, str]
    labels: dict[str, tuple[int, ...]]
    file_ending: str
    regions_class_order: tuple[int, ...] | None
    cases: dict[str, list[str]]

    def folders(self, split: str) -> tuple[Path, Path]:
        """(images folder, labels folder) of ``split``."""
        suffix = "Tr" if split == "train" else "Ts"
        return self.root / f"images{suffix}", self.root / f"labels{suffix}"


def read_nnunet(root: Path) -> NnunetDataset:
    """Parse ``root/dataset.json`` and list the cases of imagesTr/ and imagesTs/."""
    root = Path(root)
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text())
        channels = {str(k): str(v) for k, v in meta["channel_names"].items()}
        raw_labels, ending = meta["labels"], str(meta["file_ending"])
    except FileNotFoundError:
        raise BiounetError(f"{path}: not found (is {root} an nnU-Net raw dataset?)") from None
    except (OSError, json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
        raise BiounetError(
            f"{path}: not an nnU-Net v2 dataset.json ({type(e).__name__}: {e})"
        ) from e
    labels = {}
    for name, v in raw_labels.items():
        if name in SKIPPED_LABELS:
            continue
        values = tuple(int(x) for x in (v if isinstance(v, list) else [v]))
        if not values or 0 in values:
            raise BiounetError(f"{path}: label {name!r} must list values > 0, got {v!r}")
        labels[name] = values
    order = meta.get("regions_class_order")
    cases = {
        split: _cases(root / folder, ending)
        for split, folder in (("train", "imagesTr"), ("test", "imagesTs"))
    }
    if not cases["train"] and not cases["test"]:
        raise BiounetError(f"{root}: no images named <case>_0000{ending} in imagesTr/ or imagesTs/")
    return NnunetDataset(root, channels, labels, ending, tuple(order) if order else None, cases)


def _cases(folder: Path, ending: str) -> list[str]:
    if not folder.is_dir():
        return []
    suffix = "_0000" + ending
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))


def read_case(
    ds: NnunetDataset, case: str, split: str = "train"
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """(H, W, C) uint8 image (channel files side by side, each read like any biounet image) and
    {label: (H, W) bool}, or None where the case has no label map."""
    images, labels = ds.folders(split)
    files = sorted(images.glob(f"{case}_[0-9][0-9][0-9][0-9]{ds.file_ending}"))
    img = np.concatenate([read_image(f) for f in files], axis=-1)
    if img.shape[-1] != len(ds.channel_names):
        raise BiounetError(
            f"{images}/{case}_*{ds.file_ending}: {img.shape[-1]} channels, but dataset.json "
            f"names {len(ds.channel_names)}: {ds.channel_names}"
        )
    path = labels / f"{case}{ds.file_ending}"
    if not path.is_file():
        return img, None
    lab = _read_array(path)
    if lab.ndim == 3:
        lab = lab[..., 0]
    if lab.shape != img.shape[:2]:
        raise BiounetError(f"{path}: label map is {lab.shape}, its image {img.shape[:2]} (H, W)")
    return img, {name: np.isin(lab, values) for name, values in ds.labels.items()}


def nnunet_to_folder(src: Path, out: Path) -> Path:
    """Write an nnU-Net raw dataset as a biounet folder: images/<case>.png, masks/<label>/<case>.png
    (0/255) and splits.json {"train": imagesTr cases, "test": imagesTs cases}; ``out`` new or empty."""
    ds = read_nnunet(src)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BiounetError(f"{out}: exists and is not an empty folder; choose a new --out")
    clash = set(ds.cases["train"]) & set(ds.cases["test"])
    if clash:
        raise BiounetError(f"{src}: cases {sorted(clash)[:5]} are in both imagesTr and imagesTs")
    for sub in ["images", *(f"masks/{lb}" for lb in ds.labels)]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    for split, cases in ds.cases.items():
        for case in cases:
            img, masks = read_case(ds, case, split)
            if img.shape[-1] not in (1, 3):
                raise BiounetError(
                    f"{src}: case {case} has {img.shape[-1]} channels; biounet reads 1 or 3"
                )
            save_png(out / "images" / f"{case}.png", img[..., 0] if img.shape[-1] == 1 else img)
            for lb, m in (masks or {}).items():
                save_png(out / "masks" / lb / f"{case}.png", m.astype(np.uint8) * 255)
    (out / "splits.json").write_text(json.dumps(ds.cases, indent=1))
    return out


def nesting(
    masks: Iterable[dict[str, np.ndarray]], labels: tuple[str, ...]
) -> dict[str, str | None]:
    """label -> its parent: the smallest other label containing it in every image, or None.
    ``masks``: {label: (H, W) bool} per image (read once, so a generator will do). Every pair must
    be nested or disjoint in every image: nnU-Net's regions express nothing else."""
    inside = {(a, b): True for a in labels for b in labels if a != b}
    apart = dict(inside)
    area = dict.fromkeys(labels, 0)
    for per_image in masks:
        for lb in labels:
            area[lb] += int(per_image[lb].sum())
        for a, b in inside:
            inside[a, b] &= not (per_image[a] & ~per_image[b]).any()
            apart[a, b] &= not (per_image[a] & per_image[b]).any()
    for a, b in inside:
        if not (inside[a, b] or inside[b, a] or apart[a, b]):
            raise BiounetError(
                f"labels {a!r} and {b!r} overlap without one always containing the other; "
                "nnU-Net's labels and regions cannot express that"
            )
    parent: dict[str, str | None] = {}
    for i, a in enumerate(labels):
        # of two identical masks, the label listed first contains the other
        holders = [
            b
            for j, b in enumerate(labels)
            if b != a and inside[a, b] and not (inside[b, a] and j > i)
        ]
        parent[a] = min(holders, key=lambda b: (area[b], labels.index(b))) if holders else None
    return parent


def label_encoding(parent: dict[str, str | None]) -> tuple[list[str], dict[str, list[int]]]:
    """Paint order (containers first) and each label's region: class k + 1 is "inside the k-th
    painted label and none painted after it", so a region is its own class and its descendants'."""
    depth = {}
    for lb in parent:
        d, p = 0, parent[lb]
        while p is not None:
            d, p = d + 1, parent[p]
        depth[lb] = d
    order = sorted(parent, key=lambda lb: depth[lb])  # stable: the given order within a depth
    cls = {lb: i + 1 for i, lb in enumerate(order)}

    def region(lb: str) -> list[int]:
        return [cls[lb], *(c for child in order if parent[child] == lb for c in region(child))]

    return order, {lb: sorted(region(lb)) for lb in order}


def folder_to_nnunet(
    data: Path,
    out: Path,
    dataset_id: int = 1,
    name: str = "Dataset",
    labels: tuple[str, ...] = (),
) -> Path:
    """Write a biounet dataset folder as ``out/Dataset<id:03d>_<name>`` (nnU-Net v2 raw format,
    PNG): the test split of splits.json goes to imagesTs/ (+ labelsTs/ where it has masks),
    everything else to imagesTr/ + labelsTr/. Returns the dataset folder."""
    root = Path(data)
    if not 1 <= dataset_id <= 999:
        raise BiounetError(
            f"--dataset-id: must be 1..999 (nnU-Net's three digits), got {dataset_id}"
        )
    samples = discover(root)
    test = set((read_splits(root) or {}).get("test", []))
    train = [s for s in samples if s.stem not in test]
    if not train:
        raise BiounetError(f"{root}: no training images (nnU-Net needs imagesTr)")
    labels = resolve_labels(train, labels, root)
    labelled = {s.stem for s in samples if all(lb in s.masks for lb in labels)}

    def read(s: Sample) -> dict[str, np.ndarray]:
        return {lb: read_mask(s.masks[lb]) > 0 for lb in labels}

    # two passes over the masks (structure, then writing) rather than all of them in memory
    order, regions = label_encoding(
        nesting((read(s) for s in samples if s.stem in labelled), labels)
    )
    nested = any(len(r) > 1 for r in regions.values())
    ds = Path(out) / f"Dataset{dataset_id:03d}_{name}"
    channels = read_image(train[0].image).shape[-1]
    rescaled: list[str] = []
    for s in samples:
        split = "Ts" if s.stem in test else "Tr"
        raw = _read_array(s.image)
        if raw.dtype != np.uint8:
            rescaled.append(f"{s.image.name} ({raw.dtype})")
        img = match_channels(image_from_array(raw, s.image), channels)
        (ds / f"images{split}").mkdir(parents=True, exist_ok=True)
        save_png(
            ds / f"images{split}" / f"{s.stem}_0000.png", img[..., 0] if channels == 1 else img
        )
        if s.stem in labelled:
            m = read(s)
            lab = np.zeros(img.shape[:2], dtype=np.uint8)
            for i, lb in enumerate(order):
                lab[m[lb]] = i + 1  # containers first, so each pixel ends with its innermost label
            (ds / f"labels{split}").mkdir(exist_ok=True)
            save_png(ds / f"labels{split}" / f"{s.stem}.png", lab)
    if rescaled:  # said, not silent: nnU-Net gets what biounet itself trains on
        log.warning(
            "%d image(s) are not 8-bit (%s%s): written as 8-bit PNG, percentile-scaled per image "
            "as biounet reads them",
            len(rescaled),
            ", ".join(rescaled[:3]),
            ", ..." if len(rescaled) > 3 else "",
        )
    meta: dict = {
        "name": name,
        "description": f"written by biounet {__version__} from {root.name}",
        "channel_names": {"0": "R", "1": "G", "2": "B"} if channels == 3 else {"0": "grey"},
        "labels": {
            "background": 0,
            **{lb: regions[lb] if nested else regions[lb][0] for lb in order},
        },
        "numTraining": len(train),
        "file_ending": ".png",
    }
    if nested:
        meta["regions_class_order"] = list(range(1, len(order) + 1))
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    return ds
