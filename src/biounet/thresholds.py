"""Per-label probability thresholds chosen on labelled images (``biounet choose-thresholds``).

A model trained on one site's images often draws a structure a little larger or smaller than the
annotators of another site do (REFUGE-trained cups inside Drishti-GS1's experts' cups, say); its
probabilities still rank the pixels well, so cutting them at another threshold recovers much of
the overlap. This module predicts each labelled image once, scores every threshold of a grid per
label (mean per-image Dice at the mask's own resolution, masks cleaned as predict cleans them),
and picks the best; the result is a ``--threshold`` value for predict and evaluate.

Fundus pipelines with post-processing: the disc's cleaning does not depend on the cup, the cup's
does on the disc (clipped to it), so the disc threshold is chosen first and the cup's with the
disc at it. Choose on images the model did not learn from (a held-out split, or labelled images
of the site it will be used at): on its own training images a model is confident and the choice
tells little.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biounet.data.dataset import load_masks
from biounet.data.folder import read_splits
from biounet.data.io import read_image
from biounet.errors import BiounetError
from biounet.evaluate import labelled_samples
from biounet.metrics import binary_scores
from biounet.predictor import PredictOptions, make_predictor

# 0.05 .. 0.95 in steps of 0.05, and finer towards both ends: a model carried to another site's
# annotations may need a cut far from 0.5 (REFUGE-trained cups on Drishti-GS1: the lowest)
GRID = (0.01, 0.02, 0.03, *(round(0.05 * k, 2) for k in range(1, 20)), 0.97, 0.98, 0.99)
MARGIN = 2  # px of background kept around the cropped region (holes stay holes)


def grid_key(t: float) -> str:
    return f"{t:g}"


def crop_box(prob: np.ndarray, target: np.ndarray, low: float) -> tuple[slice, slice]:
    """(L, H, W) probabilities and masks -> the rows/columns that hold every pixel above ``low``
    or in a mask, with ``MARGIN`` px around (the whole image where there is none)."""
    any_ = (prob > low).any(0) | (target > 0).any(0)
    if not any_.any():
        return slice(0, 1), slice(0, 1)
    rows, cols = np.nonzero(any_.any(1))[0], np.nonzero(any_.any(0))[0]
    h, w = any_.shape
    return (
        slice(max(rows[0] - MARGIN, 0), min(rows[-1] + MARGIN + 1, h)),
        slice(max(cols[0] - MARGIN, 0), min(cols[-1] + MARGIN + 1, w)),
    )


def image_dice_table(
    prob: np.ndarray,
    target: np.ndarray,
    labels: Sequence[str],
    grid: Sequence[float] = GRID,
    disc_cup: bool = False,
    fit_ellipse: bool = False,
) -> dict[str, Any]:
    """One image's Dice at every threshold of ``grid``: {label: {t: dice}}; with ``disc_cup``
    (masks cleaned as the fundus pipeline cleans them) the cup's as {t_disc: {t_cup: dice}}.

    prob: (L, H, W) float in [0, 1]; target: (L, H, W) masks (> 0 is foreground)."""
    out: dict[str, Any] = {}
    if disc_cup:
        from biounet.fundus.postprocess import clean_cup, clean_disc

        d, c = labels.index("disc"), labels.index("cup")
        td, tc = target[d] > 0, target[c] > 0
        cups = [prob[c] > t_c for t_c in grid]
        out["disc"], out["cup"] = {}, {}
        for t_d in grid:
            disc_m, final = clean_disc(prob[d] > t_d, fit_ellipse)
            out["disc"][grid_key(t_d)] = binary_scores(final, td)["dice"]
            out["cup"][grid_key(t_d)] = {
                grid_key(t_c): binary_scores(clean_cup(cup, disc_m, final, fit_ellipse), tc)["dice"]
                for t_c, cup in zip(grid, cups, strict=True)
            }
    for i, lb in enumerate(labels):
        if lb not in out:
            t = target[i] > 0
            out[lb] = {grid_key(th): binary_scores(prob[i] > th, t)["dice"] for th in grid}
    return out


def best(table: dict[str, float], default: float) -> float:
    """The threshold of the highest mean Dice in ``table`` ({t: dice}); of equal ones the
    nearest to ``default``."""
    return float(
        max(table, key=lambda k: (round(table[k], 12), -abs(float(k) - default), -float(k)))
    )


def choose(
    tables: list[dict[str, Any]],
    labels: Sequence[str],
    default: float,
    disc_cup: bool,
) -> dict[str, dict[str, Any]]:
    """Per-image tables (``image_dice_table``) -> per label the chosen threshold, the mean Dice
    there and at ``default``, and the mean Dice of every threshold (the cup's with the disc at
    its chosen threshold)."""
    n = len(tables)

    def mean(get: Any) -> dict[str, float]:
        keys = list(get(tables[0]))
        return {k: float(sum(get(t)[k] for t in tables) / n) for k in keys}

    out: dict[str, dict[str, Any]] = {}
    chosen_disc = None
    for lb in labels:
        if disc_cup and lb == "cup":
            continue
        curve = mean(lambda t, lb=lb: t[lb])
        pick = best(curve, default)
        if lb == "disc":
            chosen_disc = pick
        out[lb] = {"threshold": pick, "table": curve}
    if disc_cup:
        # the cup at each of its thresholds, with the disc at the chosen one; its default is
        # scored with the disc at the default too (what predict gives without the option)
        curve = mean(lambda t: t["cup"][grid_key(chosen_disc)])
        d = grid_key(default)
        out["cup"] = {
            "threshold": best(curve, default),
            "table": curve,
            "dice_at_default": sum(t["cup"][d][d] for t in tables) / n,
        }
    for r in out.values():
        r["dice"] = r["table"][grid_key(r["threshold"])]
        r.setdefault("dice_at_default", r["table"].get(grid_key(default)))
    return {lb: out[lb] for lb in labels}


def threshold_flag(chosen: dict[str, dict[str, Any]]) -> str:
    """The ``--threshold`` value that applies ``chosen``."""
    return ",".join(f"{lb}={r['threshold']:g}" for lb, r in chosen.items())


def choose_thresholds(
    checkpoint: Path,
    data_root: Path,
    split: str | None,
    out_dir: Path,
    opts: PredictOptions | None = None,
    grid: Sequence[float] = GRID,
    invert_masks: tuple[str, ...] = (),
    stems: Sequence[str] | None = None,
    save: Path | None = None,
) -> dict[str, Any]:
    """Predict the split's images once and choose each label's threshold (see the module's
    docstring); writes ``thresholds.json`` into ``out_dir`` and returns it. ``opts``: how the
    checkpoint runs (TTA, post-processing, ellipse fit; its ``threshold`` is the default the
    choice is compared with and, for fundus pipelines, the one that places the crop).
    ``invert_masks``: labels whose masks are stored inverted (default: as in training).
    ``stems``: only these images of the split (e.g. the few labelled images a site has).
    ``save``: also write a copy of the checkpoint there that predict and evaluate cut at the
    chosen thresholds unless given others (a new file: an existing one is refused)."""
    opts = opts or PredictOptions()
    if opts.label_thresholds:
        raise BiounetError("choose-thresholds: give --threshold as one number (the default)")
    if not grid or not all(0 < t < 1 for t in grid):
        raise BiounetError(f"grid: thresholds in (0, 1) expected, got {list(grid)}")
    grid = sorted(set(round(float(t), 4) for t in grid) | {opts.threshold})
    root = Path(data_root)
    if root.is_file() or not root.is_dir():
        raise BiounetError(f"{root}: not a dataset folder (images/, masks/)")
    if Path(out_dir).is_file():
        raise BiounetError(f"{out_dir}: is a file; --out names the folder the outputs go to")
    if save is not None and Path(save).exists():
        raise BiounetError(f"{save}: exists; --save writes a new checkpoint file, choose another")
    if split is None:
        split = "train" if read_splits(root) else "all"
    pred = make_predictor(checkpoint, opts)
    from biounet.em.predictor import OverlapTilePredictor

    if isinstance(pred, OverlapTilePredictor):
        raise BiounetError(
            f"{checkpoint}: an unet_valid (EM) model cuts at the membrane threshold that train-em "
            "chose by V-Rand and stored in it; choose-thresholds is for the other models"
        )
    samples, invert = labelled_samples(pred, checkpoint, root, split, stems, invert_masks)
    labels = tuple(pred.labels)
    disc_cup = opts.postprocess and {"disc", "cup"} <= set(labels) and _is_pipeline(pred)
    tables = []
    for s in samples:
        img = read_image(s.image)
        target = load_masks(s, labels, invert, img.shape[:2])
        prob = pred.predict(img).prob
        rows, cols = crop_box(prob, target, min(grid))
        tables.append(
            image_dice_table(
                prob[:, rows, cols], target[:, rows, cols], labels, grid, disc_cup, opts.fit_ellipse
            )
        )
    chosen = choose(tables, labels, opts.threshold, disc_cup)
    result = {
        "checkpoint": str(checkpoint),
        "data": str(root),
        "split": split,
        "n_images": len(samples),
        "default_threshold": opts.threshold,
        "tta": opts.tta,
        "postprocess": opts.postprocess,
        "fit_ellipse": opts.fit_ellipse,
        "disc_then_cup": bool(disc_cup),
        "grid": list(grid),
        "labels": chosen,
        "flag": threshold_flag(chosen),
    }
    if save is not None:
        from biounet.checkpoint import save_with_thresholds

        note = (
            f"choose-thresholds: mean Dice on {len(samples)} images of {root} (split {split}), "
            f"tta {opts.tta}, ellipse {opts.fit_ellipse}"
        )
        cuts = {lb: c["threshold"] for lb, c in chosen.items()}
        save_with_thresholds(Path(checkpoint), Path(save), cuts, note)
        result["saved"] = str(save)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "thresholds.json").write_text(json.dumps(result, indent=1))
    return result


def _is_pipeline(pred: Any) -> bool:
    from biounet.predictor import FundusPipelinePredictor

    return isinstance(pred, FundusPipelinePredictor)


def format_choice(r: dict[str, Any]) -> str:
    """The printed summary of ``choose_thresholds``' result."""
    lines = [
        f"{r['n_images']} images, split {r['split']}: mean Dice per label at the default "
        f"threshold {r['default_threshold']:g} and at the chosen one",
        f"{'label':<12}{'default':>10}{'chosen':>10}{'threshold':>11}",
    ]
    for lb, c in r["labels"].items():
        lines.append(
            f"{lb:<12}{c['dice_at_default']:>10.4f}{c['dice']:>10.4f}{c['threshold']:>11g}"
        )
    lines.append(
        f"saved: {r['saved']} (predict and evaluate cut it at these unless given --threshold)"
        if r.get("saved")
        else f"use: --threshold {r['flag']} (or --save a checkpoint that keeps them)"
    )
    ends = [lb for lb, c in r["labels"].items() if c["threshold"] in (r["grid"][0], r["grid"][-1])]
    if ends:
        lines.append(
            f"note: {', '.join(ends)} chosen at the end of the grid: the model's probabilities "
            "there are far from this data's annotations (another site's convention?); check the "
            "masks before trusting it"
        )
    if r["n_images"] < 10:
        lines.append(
            f"note: chosen on {r['n_images']} images; a threshold chosen on few images may not "
            "carry over"
        )
    return "\n".join(lines)
