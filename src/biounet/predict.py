"""``biounet predict``: masks, probability maps and overlays for images or folders of images."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from biounet.checkpoint import load_checkpoint
from biounet.data.folder import list_images
from biounet.data.io import IMAGE_EXTENSIONS, read_image, save_png
from biounet.errors import BiounetError
from biounet.infer import pick_device, predict_images, resolve_precision
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
) -> tuple[list[Path], list[str]]:
    """Per image ``<stem>_<label>.png`` (0/255), ``<stem>_prob_<label>.png`` (probability x 255) and
    ``<stem>_overlay.png``, at the input's size. Returns (images done, one error line per unreadable file)."""
    ck = load_checkpoint(checkpoint)
    model = ck.build()
    device = pick_device()
    model.to(device)
    prec = resolve_precision(precision, device)
    paths = expand_inputs(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, errors = [], []
    for path in paths:
        try:
            img = read_image(path)
        except BiounetError as e:
            errors.append(str(e))
            continue
        prob = next(predict_images(model, [img], ck.preprocess, device, prec, 1))
        write_outputs(out_dir, path.stem, img, prob, ck.labels, threshold)
        done.append(path)
        log.debug("%s: done", path)
    return done, errors


def write_outputs(
    out_dir: Path,
    stem: str,
    img: np.ndarray,
    prob: np.ndarray,
    labels: tuple[str, ...],
    threshold: float,
) -> None:
    """prob (L, H, W) float in [0, 1] -> mask, probability and overlay PNGs."""
    masks = {}
    for i, lb in enumerate(labels):
        m = prob[i] > threshold
        masks[lb] = m
        save_png(out_dir / f"{stem}_{lb}.png", m.astype(np.uint8) * 255)
        save_png(
            out_dir / f"{stem}_prob_{lb}.png", np.clip(prob[i] * 255 + 0.5, 0, 255).astype(np.uint8)
        )
    save_png(out_dir / f"{stem}_overlay.png", overlay(img, masks))
