"""Evaluate a checkpoint on a dataset split at the masks' own resolution."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from biounet.checkpoint import load_checkpoint
from biounet.data.dataset import load_masks
from biounet.data.folder import discover, read_splits, resolve_labels, select_split
from biounet.data.io import read_image
from biounet.data.transforms import Geometry, square_geometry, to_network
from biounet.errors import BiounetError
from biounet.infer import pick_device, predict_images, resolve_precision
from biounet.losses import article_dice_loss_pooled, article_iou_pooled
from biounet.metrics import METRICS, image_metrics, summarize


def evaluate_checkpoint(
    checkpoint: Path,
    data_root: Path,
    split: str | None,
    out_dir: Path,
    threshold: float = 0.5,
    precision: str = "auto",
    batch_size: int = 4,
    invert_masks: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Writes per_image.csv and summary.json into ``out_dir``; returns the summary.

    Per image and label: Dice, IoU, BCE, precision, recall of the thresholded probabilities, resized
    back to the mask's resolution. Also the article's own numbers ("article_*"): BCE, 1 - soft Dice
    and IoU pooled over batches of ``batch_size`` and all labels, at the network resolution."""
    ck = load_checkpoint(checkpoint)
    model = ck.build()
    device = pick_device()
    model.to(device)
    prec = resolve_precision(precision, device)
    root = Path(data_root)
    if split is None:
        split = "test" if read_splits(root) else "all"
    samples = select_split(root, discover(root), split)
    if not samples:
        raise BiounetError(f"{root}: split {split!r} is empty")
    invert = tuple(invert_masks) or tuple(
        ck.extra.get("run_config", {}).get("data", {}).get("invert_masks", [])
    )
    resolve_labels(samples, ck.labels, root)
    rows: list[dict[str, Any]] = []
    art = {"bce": [], "dice_loss": [], "iou": []}
    size = int(ck.preprocess["image_size"])
    chunk = batch_size
    for i in range(0, len(samples), chunk):
        group = samples[i : i + chunk]
        images = [read_image(s.image) for s in group]
        targets = [
            load_masks(s, ck.labels, invert, im.shape[:2])
            for s, im in zip(group, images, strict=True)
        ]
        probs = list(predict_images(model, images, ck.preprocess, device, prec, batch_size))
        for s, p, t in zip(group, probs, targets, strict=True):
            for r in image_metrics(p, t, ck.labels, threshold):
                rows.append({"stem": s.stem, **r})
        _article_batch(images, targets, probs, size, art)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["stem", "label", *METRICS])
        w.writeheader()
        w.writerows(rows)
    summary = {
        "checkpoint": str(checkpoint),
        "data": str(root),
        "split": split,
        "n_images": len(samples),
        "threshold": threshold,
        "resolution": "each mask's own resolution (predictions resized back)",
        "labels": summarize(rows),
        "article_metrics": {
            "note": "the article's definitions: pooled over batches of "
            f"{batch_size} images and all labels, at {size}x{size}; 'dice_loss' is 1 - soft Dice (lower is better)",
            "bce": float(np.mean(art["bce"])),
            "dice_loss_pooled": float(np.mean(art["dice_loss"])),
            "iou_pooled": float(np.mean(art["iou"])),
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _article_batch(
    images: list[np.ndarray],
    targets: list[np.ndarray],
    probs: list[np.ndarray],
    size: int,
    acc: dict[str, list[float]],
) -> None:
    """The article's batch-pooled numbers at network resolution, from probabilities already computed."""
    ts, ps = [], []
    for im, t, p in zip(images, targets, probs, strict=True):
        geo = square_geometry(im.shape[0], im.shape[1], size)
        ts.append(to_network(t, geo, is_mask=True))
        ps.append(_to_square(p, geo))
    t = torch.stack(ts).float()
    p = torch.stack(ps).clamp(1e-6, 1 - 1e-6)
    logits = torch.log(p) - torch.log1p(-p)
    acc["bce"].append(F.binary_cross_entropy(p, t).item())
    acc["dice_loss"].append(article_dice_loss_pooled(logits, t).item())
    acc["iou"].append(article_iou_pooled(logits, t).item())


def _to_square(p: np.ndarray, geo: Geometry) -> torch.Tensor:
    """(L, h, w) probabilities -> (L, size, size) as the network saw them (padded square, resized)."""
    sq = torch.zeros((p.shape[0], geo.side, geo.side))
    sq[:, geo.top : geo.top + geo.h, geo.left : geo.left + geo.w] = torch.from_numpy(p)
    if geo.side == geo.size:
        return sq
    mode = "area" if geo.side > geo.size else "bilinear"
    return F.interpolate(sq[None], size=(geo.size, geo.size), mode=mode)[0]
