"""``biounet train-em``: the paper's unpadded U-Net trained on a folder of grey EM slices
(``images/`` + ``masks/`` with one mask per image, foreground = cell interior as in ISBI 2012, or
membranes with ``membrane_masks``), the membrane threshold chosen on held-out slices, one
self-describing checkpoint that ``biounet predict`` runs by overlap-tile."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from biounet.data.folder import discover, read_splits, resolve_labels, select_split
from biounet.data.io import note_turned_image, orientation_note, read_image, read_mask
from biounet.em.tiles import make_slices
from biounet.em.train_em import (
    EmTrainConfig,
    best_threshold,
    make_em_model,
    mean_scores,
    predict_interior,
    save_em_checkpoint,
    threshold_sweep,
    train_em,
)
from biounet.errors import BiounetError
from biounet.models import count_parameters, preset

log = logging.getLogger(__name__)

SLICE_OUT_TILE = 516  # output side of a prediction tile (700 px input for depth 4)


@dataclass(frozen=True)
class EmFitConfig:
    root: str
    split: str = "train"
    val_fraction: float = 0.2
    membrane_masks: bool = False
    base_width: int = 16
    weight_map: bool = True
    train: EmTrainConfig = EmTrainConfig()


def read_folder_slices(
    root: Path, split: str, membrane_masks: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """stems, images (N, H, W) uint8, interior (N, H, W) bool; every slice must be grey and of one size."""
    root = Path(root)
    samples = discover(root)
    samples = select_split(root, samples, split if read_splits(root) else None)
    labels = resolve_labels(samples, (), root, drop_partial=True)  # train-em has no --labels
    if len(labels) != 1:
        raise BiounetError(
            f"{root}/masks: train-em takes one mask per image (cell interior); found {labels}"
        )
    label = labels[0]
    images, interiors = [], []
    for s in samples:
        img = read_image(s.image)
        if img.shape[-1] != 1:
            raise BiounetError(f"{s.image}: {img.shape[-1]} channels; EM slices must be grey")
        m = read_mask(s.masks[label]).astype(bool)
        if m.shape != img.shape[:2]:
            raise BiounetError(
                f"{s.masks[label]}: mask size {m.shape} != image size {img.shape[:2]}"
                + orientation_note(s.image, s.masks[label])
            )
        note_turned_image(s.image, [s.masks[label]])
        if images and img.shape[:2] != images[0].shape:
            raise BiounetError(
                f"{s.image}: {img.shape[1]}x{img.shape[0]}, but the first slice is "
                f"{images[0].shape[1]}x{images[0].shape[0]}; train-em needs slices of one size"
            )
        images.append(img[..., 0])
        interiors.append(~m if membrane_masks else m)
    return [s.stem for s in samples], np.stack(images), np.stack(interiors)


def fit_em(cfg: EmFitConfig, out_dir: Path) -> dict:
    """Train on the split's slices minus a seeded ``val_fraction``, choose the threshold on those,
    write ``out_dir/model.pt`` and ``out_dir/summary.json``; returns the summary."""
    stems, images, interior = read_folder_slices(Path(cfg.root), cfg.split, cfg.membrane_masks)
    n_val = max(1, round(len(stems) * cfg.val_fraction))
    if len(stems) - n_val < 1:
        raise BiounetError(f"{cfg.root}: {len(stems)} slices are too few to hold out {n_val}")
    order = torch.randperm(len(stems), generator=torch.Generator().manual_seed(cfg.train.seed))
    val_idx, tr_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fit = train_and_calibrate(
        (images[tr_idx], interior[tr_idx]),
        (images[val_idx], interior[val_idx]),
        cfg.weight_map,
        cfg.base_width,
        cfg.train,
        out_dir / "model.pt",
        {"fit": asdict(cfg)},
    )
    rows, thr, sweep, scores = fit.rows, fit.threshold, fit.sweep, fit.scores
    summary = {
        "train_stems": [stems[i] for i in tr_idx],
        "val_stems": [stems[i] for i in val_idx],
        "iterations": len(rows),
        "train_seconds": rows[-1]["seconds"] if rows else 0.0,
        "membrane_threshold": thr,
        "tta": fit.tta,
        "pixel_error_threshold": fit.pixel_threshold,
        "pixel_error_at_pixel_threshold": fit.pixel_error,
        "pixel_fscore_threshold": fit.fscore_threshold,
        "pixel_error_fscore_at_its_threshold": fit.pixel_error_fscore,
        "threshold_sweep_v_rand_thinned": sweep,
        "val": scores,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class EmFit:
    """What ``train_and_calibrate`` gives: the per-iteration rows of ``train_em``, the membrane
    threshold chosen on the held-out slices, the thinned V-Rand of each threshold tried, the mean
    scores at the chosen one, whether test-time augmentation was chosen, and the threshold with the
    lowest pixel error on the same predictions (the V-Rand one favours thick borders) with that
    error, and likewise for the challenge's pixel error (1 - F1 of cell interior)."""

    rows: list[dict[str, float]]
    threshold: float
    sweep: dict[float, float]
    scores: dict[str, float]
    tta: bool = False
    pixel_threshold: float = 0.5
    pixel_error: float = float("nan")  # mean pixel error at pixel_threshold
    fscore_threshold: float = 0.5  # the lowest mean challenge pixel error (1 - interior F1)
    pixel_error_fscore: float = float("nan")  # its value there


SELECT = "v_rand_thinned"  # the challenge's final metric: picks the threshold and TTA


def calibrate(
    model: torch.nn.Module,
    held: tuple[np.ndarray, np.ndarray],
    precision: str,
    thresholds: tuple[float, ...] | None = None,
) -> EmFit:
    """Membrane threshold and test-time augmentation (8 views, ``predict_interior(tta=True)``)
    chosen together by the best mean thinned V-Rand on ``held`` (images (N, H, W) uint8, interior
    (N, H, W) bool); TTA only where it scores strictly higher. Each reading of the held-out slices
    is scored once per threshold. -> EmFit without training rows."""
    best: EmFit | None = None
    for tta in (False, True):
        probs = [predict_interior(model, im, SLICE_OUT_TILE, precision, tta=tta) for im in held[0]]
        sweep = threshold_sweep(probs, held[1], *([thresholds] if thresholds else []))
        means = {t: mean_scores(rows) for t, rows in sweep.items()}
        thr = best_threshold(means, SELECT)
        if best is None or means[thr][SELECT] > best.scores[SELECT]:
            table = {t: m[SELECT] for t, m in means.items()}
            px_thr = best_threshold(means, "pixel_error", lower=True)
            f_thr = best_threshold(means, "pixel_error_fscore", lower=True)
            best = EmFit(
                [],
                thr,
                table,
                means[thr],
                tta,
                px_thr,
                means[px_thr]["pixel_error"],
                f_thr,
                means[f_thr]["pixel_error_fscore"],
            )
    assert best is not None
    return best


def em_extra(fit: EmFit, extra: dict | None = None) -> dict:
    """What a checkpoint records of a calibration, besides the membrane threshold."""
    return {
        **(extra or {}),
        "tta": fit.tta,
        "pixel_error_threshold": fit.pixel_threshold,
        "pixel_fscore_threshold": fit.fscore_threshold,
    }


def train_fresh(
    train: tuple[np.ndarray, np.ndarray], weight_map: bool, base_width: int, cfg: EmTrainConfig
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """A new ``paper_valid_small`` at ``base_width`` (the paper's initialisation) trained on
    (images (N, H, W) uint8, interior (N, H, W) bool) ``train``, with the border weight map
    (w0 = 10) or class balance only: (model, ``train_em``'s rows)."""
    slices = make_slices(*train, w0=10.0 if weight_map else 0.0)
    model = make_em_model(
        preset("paper_valid_small", in_channels=1, base_width=base_width), cfg.seed
    )
    log.info("%d train slices; %s parameters", len(train[0]), f"{count_parameters(model):,}")
    return model, train_em(model, slices, cfg)


def train_and_calibrate(
    train: tuple[np.ndarray, np.ndarray],
    held: tuple[np.ndarray, np.ndarray],
    weight_map: bool,
    base_width: int,
    cfg: EmTrainConfig,
    checkpoint: Path,
    extra: dict | None = None,
    thresholds: tuple[float, ...] | None = None,
) -> EmFit:
    """Train ``paper_valid_small`` at ``base_width`` on (images (N, H, W) uint8, interior (N, H, W)
    bool) ``train``, choose the membrane threshold and TTA on ``held`` (``calibrate``), write
    ``checkpoint``."""
    log.info("%d train / %d held-out slices", len(train[0]), len(held[0]))
    model, rows = train_fresh(train, weight_map, base_width, cfg)
    fit = calibrate(model, held, cfg.precision, thresholds)
    fit.rows = rows
    save_em_checkpoint(checkpoint, model, SLICE_OUT_TILE, fit.threshold, em_extra(fit, extra))
    return fit
