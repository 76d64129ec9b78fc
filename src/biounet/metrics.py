"""Segmentation metrics per image and per label, and their summary over a dataset.

Conventions for empty masks (so no metric is ever NaN): Dice and IoU are 1 when prediction and
ground truth are both empty; precision is 1 when nothing is predicted and nothing was missed, else 0
when nothing is predicted; recall is 1 when the ground truth is empty and nothing is predicted.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

METRICS = ("dice", "iou", "bce", "precision", "recall")


def binary_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision, recall of two same-shaped boolean masks (any shape)."""
    pred, target = pred.astype(bool), target.astype(bool)
    tp = float(np.count_nonzero(pred & target))
    fp = float(np.count_nonzero(pred & ~target))
    fn = float(np.count_nonzero(~pred & target))
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "precision": tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0),
        "recall": tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0),
    }


def bce(prob: np.ndarray, target: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities vs a {0,1} mask (same shape)."""
    p = np.clip(prob.astype(np.float64), eps, 1 - eps)
    t = target.astype(np.float64)
    return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())


def image_metrics(
    prob: np.ndarray,
    target: np.ndarray,
    labels: tuple[str, ...] | list[str],
    threshold: float = 0.5,
) -> list[dict[str, float | str]]:
    """prob (L, H, W) float in [0, 1], target (L, H, W) {0, 1} -> one row per label with METRICS."""
    if prob.shape != target.shape:
        raise ValueError(f"prob shape {prob.shape} != target shape {target.shape}")
    rows: list[dict[str, float | str]] = []
    for i, lb in enumerate(labels):
        row: dict[str, float | str] = {"label": lb}
        row.update(binary_scores(prob[i] > threshold, target[i] > 0))
        row["bce"] = bce(prob[i], target[i])
        rows.append(row)
    return rows


# metrics whose mean gets a bootstrap confidence interval in ``summarize``
CI_METRICS = ("dice", "iou")
BOOTSTRAP_DRAWS = 2000


def bootstrap_ci(
    values: np.ndarray | list[float],
    level: float = 0.95,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (one per image): the
    images resampled with replacement ``draws`` times, seeded, so the same values always give
    the same interval. (nan, nan) without values; (v, v) for a single one. For paired
    comparisons pass the per-image differences."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            a[rng.integers(0, a.size, (min(200, draws - i), a.size))].mean(axis=1)
            for i in range(0, draws, 200)
        ]
    )
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize(rows: list[dict[str, float | str]]) -> dict[str, dict[str, float]]:
    """Rows with 'label' and numeric metrics -> {label: {<m>_mean, <m>_std, <m>_median, <m>_min}} over images,
    and for Dice and IoU ``<m>_ci95_low`` / ``<m>_ci95_high``, the 95 % bootstrap confidence
    interval of the mean (``bootstrap_ci``: how far the mean could move on other images like
    these). Std is the population standard deviation (ddof=0)."""
    by_label: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for k, v in r.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                by_label[str(r["label"])][k].append(float(v))
    out: dict[str, dict[str, float]] = {}
    for lb, cols in by_label.items():
        s: dict[str, float] = {}
        for k, vals in cols.items():
            a = np.asarray(vals)
            s[f"{k}_mean"] = float(a.mean())
            s[f"{k}_std"] = float(a.std())
            s[f"{k}_median"] = float(np.median(a))
            s[f"{k}_min"] = float(a.min())
            if k in CI_METRICS:
                s[f"{k}_ci95_low"], s[f"{k}_ci95_high"] = bootstrap_ci(a)
        out[lb] = s
    return out


def pixel_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for ``positive`` (same shape, any size): the
    probability that a random positive pixel scores above a random negative one, ties counting
    half (Mann-Whitney U from average ranks, O(n log n)). None when either class is empty."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(rankdata(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def confusion_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity, specificity and F1 of two boolean masks of the same shape, pixels
    pooled (e.g. every field-of-view pixel of a test set): F1 is Dice, sensitivity the recall,
    specificity the recall of the background, with ``binary_scores``' conventions for empty
    masks; accuracy 1 for no pixels."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    fg, bg = binary_scores(p, t), binary_scores(~p, ~t)
    return {
        "accuracy": float(np.count_nonzero(p == t) / p.size) if p.size else 1.0,
        "sensitivity": fg["recall"],
        "specificity": bg["recall"],
        "f1": fg["dice"],
    }
