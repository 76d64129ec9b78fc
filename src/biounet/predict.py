"""``biounet predict``: masks, probability maps, overlays and (fundus) measures for images or folders."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from biounet.data.folder import list_images
from biounet.data.io import IMAGE_EXTENSIONS, read_image, save_png
from biounet.errors import BiounetError
from biounet.predictor import Prediction, make_predictor
from biounet.uncertainty import image_uncertainty
from biounet.viz import overlay

log = logging.getLogger(__name__)


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given; folders expanded to the image files directly inside them (sorted)."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            out.extend(list_images(p).values())
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise BiounetError(
                    f"{p}: not an image file (extensions {', '.join(IMAGE_EXTENSIONS)})"
                )
            out.append(p)
        else:
            raise BiounetError(f"{p}: no such file or folder")
    if not out:
        raise BiounetError("no input images found")
    return out


def predict_paths(
    checkpoint: Path,
    inputs: Iterable[Path],
    out_dir: Path,
    threshold: float = 0.5,
    precision: str = "auto",
    tta: bool = False,
    postprocess: bool = True,
    fit_ellipse: bool = False,
    input_kind: str = "auto",
    backend: str = "torch",
    fast: bool = True,
    uncertainty: bool = False,
) -> tuple[list[Path], list[str]]:
    """Per image ``<stem>_<label>.png`` (0/255), ``<stem>_prob_<label>.png`` (probability x 255) and
    ``<stem>_overlay.png``, at the input's size; ``measures.csv`` (one row per image) when the model
    segments a disc and a cup. Unreadable files are skipped and reported at the end.
    ``backend``/``fast``: see ``biounet.predictor.make_predictor``. ``uncertainty``: also
    ``<stem>_uncertainty.png`` and ``uncertainty.csv`` (see ``biounet.uncertainty``).
    Returns (images done, one error line per unreadable file)."""
    pred = make_predictor(
        checkpoint, precision, threshold, tta, postprocess, fit_ellipse, input_kind, backend, fast
    )
    paths = expand_inputs(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, errors, rows = [], [], []
    unc_rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            img = read_image(path)
        except BiounetError as e:
            errors.append(str(e))
            continue
        p = pred.predict(img)
        write_outputs(out_dir, path.stem, img, p, pred.labels)
        if uncertainty:
            umap, scores = image_uncertainty(pred, img, p)
            save_png(out_dir / f"{path.stem}_uncertainty.png", umap)
            unc_rows.append({"stem": path.stem, "file": str(path), **scores})
        if p.measures:
            rows.append(
                {"stem": path.stem, "file": str(path), **p.measures, "flags": ";".join(p.flags)}
            )
        done.append(path)
        log.debug("%s: done", path)
    if rows:
        write_measures(out_dir / "measures.csv", rows)
    if unc_rows:
        write_measures(out_dir / "uncertainty.csv", unc_rows)
    return done, errors


def write_outputs(
    out_dir: Path, stem: str, img: np.ndarray, p: Prediction, labels: tuple[str, ...]
) -> None:
    """Mask, probability and overlay PNGs of one image."""
    for i, lb in enumerate(labels):
        save_png(out_dir / f"{stem}_{lb}.png", p.masks[lb].astype(np.uint8) * 255)
        save_png(
            out_dir / f"{stem}_prob_{lb}.png",
            np.clip(p.prob[i] * 255 + 0.5, 0, 255).astype(np.uint8),
        )
    ov = overlay(img, p.masks)
    text = overlay_text(p)
    if text:
        ov = draw_text(ov, text)
    save_png(out_dir / f"{stem}_overlay.png", ov)


def overlay_text(p: Prediction) -> str:
    parts = []
    m = p.measures
    if "vcdr" in m:
        parts.append(f"vCDR {m['vcdr']:.2f}  hCDR {m['hcdr']:.2f}  aCDR {m['acdr']:.2f}")
    if p.flags:
        parts.append("DOUBTFUL: " + ", ".join(p.flags))
    return "\n".join(parts)


def draw_text(img: np.ndarray, text: str) -> np.ndarray:
    """Text in the top-left corner on a dark box, sized to the image."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    size = max(12, img.shape[0] // 30)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    box = draw.multiline_textbbox((8, 8), text, font=font)
    draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.multiline_text((8, 8), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def write_measures(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
