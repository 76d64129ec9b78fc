"""Datasets whose masks are label maps, written as biounet dataset folders.

A label-map dataset::

    src/
      images/<stem>.png|jpg|tif     any image biounet reads
      masks/<stem>.png|tif          one integer image per case: a value per class (lossless)
      splits.json                   optional, copied

``labelmap_to_folder`` writes ``out/images/`` (the image files copied unchanged),
``out/masks/<label>/<stem>.png`` (0/255: the pixels whose value is one of the label's values) and
``splits.json``. A label names one value (``vessel=1``) or several (``disc=1,2``: nested
structures, the disc being rim + cup); 0 may be a class's value (REFUGE: cup 0, rim 128,
background 255). Without label specs, every value but 0 is a label ``class_<value>``.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np

from biounet.data.folder import list_images, mask_files
from biounet.data.io import JPEG_EXTENSIONS, _read_array, grey_plane, read_image, save_png
from biounet.errors import BiounetError

log = logging.getLogger(__name__)
MAX_CLASSES = 64  # more distinct values than this: a picture or a soft map, not a label map
LABEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_label_specs(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """["disc=1,2", "cup=2"] -> {"disc": (1, 2), "cup": (2,)}; a clear error for anything else."""
    labels: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        try:
            vals = tuple(int(v) for v in values.split(",") if v.strip()) if sep else ()
        except ValueError:
            vals = ()
        if not LABEL_NAME.match(name) or not vals or any(v < 0 for v in vals):
            raise BiounetError(
                f"--label {spec!r}: expected NAME=VALUE[,VALUE...], e.g. disc=1,2 (a name of "
                "letters, digits, '_', '.', '-'; values >= 0)"
            )
        if name in labels:
            raise BiounetError(f"--label {spec!r}: label {name!r} given twice")
        labels[name] = vals
    return labels


def read_label_map(path: Path) -> np.ndarray:
    """(H, W) integer label map; a grey file, or RGB with equal channels. Lossy JPEG refused."""
    if path.suffix.lower() in JPEG_EXTENSIONS:
        raise BiounetError(
            f"{path}: a label map must be stored losslessly (PNG, TIFF): JPEG changes the "
            "values along every boundary into other classes' values"
        )
    arr = grey_plane(_read_array(path))
    if arr is None:
        raise BiounetError(
            f"{path}: a colour image; a label map holds one integer per pixel (grey)"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise BiounetError(f"{path}: pixel type {arr.dtype}; a label map holds integers")
    return arr


def labelmap_to_folder(
    src: Path, out: Path, labels: dict[str, tuple[int, ...]] | None = None
) -> Path:
    """Write the label-map dataset ``src`` as a biounet dataset folder ``out`` (new or empty);
    see the module docstring. Images without a label map are copied without masks (test images);
    the log says how many. -> ``out``."""
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BiounetError(f"{out}: exists and is not an empty folder; choose a new --out")
    images = list_images(src / "images")
    if not images:
        raise BiounetError(f"{src / 'images'}: no images found")
    if not (src / "masks").is_dir():
        raise BiounetError(f"{src / 'masks'}: folder not found (one label map per image)")
    maps = mask_files(src / "masks", set(images))
    paired = {stem: maps[stem] for stem in images if stem in maps}
    if not paired:
        raise BiounetError(
            f"{src / 'masks'}: no label map pairs with an image of {src / 'images'} (same stem, "
            f"or the stem and one suffix); masks e.g. {[p.name for p in list(maps.values())[:3]]}"
        )
    if labels is None:
        labels = _labels_from_values(paired)
    for sub in ["images", *(f"masks/{lb}" for lb in labels)]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    unused: set[int] = set()
    listed = {v for vals in labels.values() for v in vals}
    for stem, image in images.items():
        shutil.copy2(image, out / "images" / image.name)
        if stem not in paired:
            continue
        lab = read_label_map(paired[stem])
        hw = read_image(image).shape[:2]
        if lab.shape != hw:
            raise BiounetError(
                f"{paired[stem]}: label map is {lab.shape[1]}x{lab.shape[0]} but its image "
                f"{image} is {hw[1]}x{hw[0]} (WxH)"
            )
        unused |= set(np.unique(lab).tolist()) - listed
        for lb, vals in labels.items():
            save_png(out / "masks" / lb / f"{stem}.png", np.isin(lab, vals).astype(np.uint8) * 255)
    if (src / "splits.json").is_file():
        shutil.copy2(src / "splits.json", out / "splits.json")
    spec = ", ".join(f"{lb} = {'/'.join(map(str, v))}" for lb, v in labels.items())
    log.info("%d images, %d with label maps; labels %s", len(images), len(paired), spec)
    if unused:
        log.info("values %s are in no label (background)", sorted(unused)[:10])
    if len(paired) < len(images):
        log.info("%d images without a label map copied without masks", len(images) - len(paired))
    return out


def _labels_from_values(maps: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Every value but 0 found in the maps, a label ``class_<value>`` each."""
    values: set[int] = set()
    for path in maps.values():
        values |= set(np.unique(read_label_map(path)).tolist())
        if len(values) > MAX_CLASSES:
            raise BiounetError(
                f"{path}: over {MAX_CLASSES} distinct values in the label maps: not a label map "
                "(a picture or a soft map?)"
            )
    classes = sorted(v for v in values if v != 0)
    if not classes:
        raise BiounetError(f"{next(iter(maps.values())).parent}: every label map is all 0")
    return {f"class_{v}": (v,) for v in classes}
