"""Training: ``train_one_epoch``, ``validate`` and ``fit(cfg, out_dir)`` which writes a run folder."""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from biounet.checkpoint import save_checkpoint
from biounet.config import RunConfig
from biounet.data.dataset import ArrayDataset, load_arrays
from biounet.data.folder import discover, read_splits, resolve_labels, select_split
from biounet.data.io import read_image
from biounet.data.transforms import AugmentParams, augment_batch, normalize
from biounet.errors import BiounetError
from biounet.infer import autocast, pick_device, preprocess_spec, resolve_precision
from biounet.losses import bce_dice_loss
from biounet.metrics import binary_scores
from biounet.models import build_model, count_parameters

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seeds python, numpy and torch in one place; returns the generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class Prepared:
    train: ArrayDataset
    val: ArrayDataset
    labels: tuple[str, ...]
    in_channels: int


def prepare_data(cfg: RunConfig) -> Prepared:
    """Training split of cfg.data.root, divided into train / val (splits.json "val" if present,
    else a seeded ``val_fraction`` of the training split). Never touches the test split."""
    root = Path(cfg.data.root)
    samples = select_split(
        root, discover(root), cfg.data.train_split if read_splits(root) else None
    )
    labels = resolve_labels(samples, cfg.data.labels, root)
    splits = read_splits(root) or {}
    if "val" in splits and cfg.data.train_split == "train":
        val_stems = set(splits["val"])
        val_s = [s for s in select_split(root, discover(root), "val")]
        tr_s = [s for s in samples if s.stem not in val_stems]
        resolve_labels(val_s, labels, root)
    else:
        order = torch.randperm(
            len(samples), generator=torch.Generator().manual_seed(cfg.train.seed)
        ).tolist()
        n_val = (
            max(1, round(len(samples) * cfg.data.val_fraction)) if cfg.data.val_fraction > 0 else 0
        )
        if len(samples) - n_val < 1:
            raise BiounetError(
                f"{root}: {len(samples)} training images are too few to hold out {n_val} for validation"
            )
        val_s = [samples[i] for i in sorted(order[:n_val])]
        tr_s = [samples[i] for i in sorted(order[n_val:])]
    channels = cfg.model.in_channels or read_image(tr_s[0].image).shape[-1]
    load = lambda ss: load_arrays(ss, labels, cfg.data.image_size, channels, cfg.data.invert_masks)  # noqa: E731
    return Prepared(load(tr_s), load(val_s) if val_s else load(tr_s[:1]), labels, channels)


def train_one_epoch(
    model: nn.Module,
    data: ArrayDataset,
    opt: torch.optim.Optimizer,
    cfg: RunConfig,
    gen: torch.Generator,
    device: torch.device,
    precision: str,
    desc: str,
) -> float:
    """One pass over ``data`` in a seeded random order; returns the mean training loss."""
    model.train()
    n, bs = len(data), cfg.train.batch_size
    order = torch.randperm(n, generator=gen)
    if n % bs == 1 and n > bs:  # a batch of one breaks batch norm
        order = order[:-1]
    aug = AugmentParams() if cfg.data.augment else None
    total, count, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(range(0, len(order), bs), desc=desc, leave=False, unit="batch", disable=None)
    for i in bar:
        idx = order[i : i + bs]
        img, mask = data.images[idx], data.masks[idx]
        if aug is not None:
            x, y = augment_batch(img, mask, aug, gen)
        else:
            x, y = img.float() / 255.0, mask.float()
        x = normalize(x).to(device)
        y = y.to(device)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        loss = bce_dice_loss(logits, y, cfg.train.bce_weight, cfg.train.dice_weight)
        if not torch.isfinite(loss):
            raise BiounetError(
                f"{desc}: loss is {loss.item()} at batch {i // bs}; stopping (last.pt is the last good state)"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        count += len(idx)
        bar.set_postfix(
            loss=f"{total / count:.4f}", img_s=f"{count / (time.perf_counter() - t0):.1f}"
        )
    return total / max(count, 1)


@torch.inference_mode()
def validate(
    model: nn.Module,
    data: ArrayDataset,
    cfg: RunConfig,
    labels: tuple[str, ...],
    device: torch.device,
    precision: str,
) -> dict[str, float]:
    """Loss and per-image Dice/IoU per label at the network's resolution (fast; the final evaluation
    at the masks' own resolution is ``biounet evaluate``)."""
    model.eval()
    losses, dice, iou = [], {lb: [] for lb in labels}, {lb: [] for lb in labels}
    for i in range(0, len(data), cfg.train.batch_size):
        x = normalize(data.images[i : i + cfg.train.batch_size]).to(device)
        y = data.masks[i : i + cfg.train.batch_size].float().to(device)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float()
        losses.append(
            bce_dice_loss(logits, y, cfg.train.bce_weight, cfg.train.dice_weight).item() * len(x)
        )
        pred = (torch.sigmoid(logits) > cfg.train.threshold).cpu().numpy()
        tgt = y.cpu().numpy() > 0.5
        for b in range(len(x)):
            for j, lb in enumerate(labels):
                s = binary_scores(pred[b, j], tgt[b, j])
                dice[lb].append(s["dice"])
                iou[lb].append(s["iou"])
    out = {"val_loss": sum(losses) / len(data)}
    for lb in labels:
        out[f"val_dice_{lb}"] = float(np.mean(dice[lb]))
        out[f"val_iou_{lb}"] = float(np.mean(iou[lb]))
    out["val_dice_mean"] = float(np.mean([out[f"val_dice_{lb}"] for lb in labels]))
    return out


def fit(cfg: RunConfig, out_dir: Path) -> Path:
    """Train per ``cfg``; writes config.yaml, metrics.csv, curves.png, best.pt, last.pt into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = seed_everything(cfg.train.seed)
    data = prepare_data(cfg)
    mcfg = cfg.model.__class__(
        **{**cfg.model.__dict__, "in_channels": data.in_channels, "out_channels": len(data.labels)}
    )
    cfg = RunConfig(
        data=cfg.data.__class__(**{**cfg.data.__dict__, "labels": data.labels}),
        model=mcfg,
        train=cfg.train,
        preset=cfg.preset,
    )
    cfg.save_yaml(out_dir / "config.yaml")
    device = pick_device()
    precision = resolve_precision(cfg.train.precision, device)
    model = build_model(mcfg).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info(
        "model %s: %s parameters; %d train / %d val images; labels %s; %s on %s",
        cfg.preset,
        f"{count_parameters(model):,}",
        len(data.train),
        len(data.val),
        data.labels,
        precision,
        device,
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = (
        torch.optim.lr_scheduler.StepLR(opt, cfg.train.lr_step, cfg.train.lr_gamma)
        if cfg.train.lr_step > 0
        else None
    )
    prep = preprocess_spec(cfg.data.image_size, data.in_channels)
    rows: list[dict[str, float]] = []
    best, t_start = -math.inf, time.perf_counter()
    for epoch in range(1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        train_loss = train_one_epoch(
            model, data.train, opt, cfg, gen, device, precision, f"epoch {epoch}/{cfg.train.epochs}"
        )
        if sched is not None:
            sched.step()
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **validate(model, data.val, cfg, data.labels, device, precision),
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        write_metrics_csv(out_dir / "metrics.csv", rows)
        extra = {"epoch": epoch, "metrics": row, "run_config": cfg.to_dict()}
        save_checkpoint(out_dir / "last.pt", model, mcfg, data.labels, prep, extra)
        if row["val_dice_mean"] > best:
            best = row["val_dice_mean"]
            save_checkpoint(out_dir / "best.pt", model, mcfg, data.labels, prep, extra)
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, val dice %s, %.1fs",
            epoch,
            train_loss,
            row["val_loss"],
            " ".join(f"{lb}={row[f'val_dice_{lb}']:.4f}" for lb in data.labels),
            row["seconds"],
        )
        if cfg.train.max_minutes and time.perf_counter() - t_start > cfg.train.max_minutes * 60:
            log.info("time budget of %.1f min reached after epoch %d", cfg.train.max_minutes, epoch)
            break
    from biounet.viz import plot_curves

    plot_curves(rows, data.labels, out_dir / "curves.png")
    return out_dir


def write_metrics_csv(path: Path, rows: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
