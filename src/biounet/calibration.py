"""Can the probabilities and the uncertainty score be trusted? Pure functions, no torch.

Calibration: the expected calibration error (ECE) of the per-pixel foreground probability of each
label, with equal-width bins of that probability. Pixels of all images are pooled (each image at its
mask's resolution, so a large image weighs more), and only per-bin counts and sums are kept while
images are added, so memory does not grow with the dataset. In bin k, "confidence" is the mean
predicted probability and "accuracy" the fraction of those pixels inside the ground-truth mask;
ECE = sum_k n_k / N * |accuracy_k - confidence_k| = sum_k |positives_k - probability sum_k| / N.
(The per-label, class-wise form: bins span 0..1, so over- and under-segmentation show on
either side of the diagonal.)

Ranking: ``auroc`` of a per-image score for finding the images with Dice below a level, and
``spearman`` between score and Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

N_BINS = 15
DICE_BELOW = 0.8  # an image "fails" a label when its Dice is below this


def bin_sums(
    prob: np.ndarray, target: np.ndarray, n_bins: int = N_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Any-shaped probabilities in [0, 1] and a same-shaped {0, 1} mask -> per bin (``n_bins``
    equal-width bins [k/n, (k+1)/n), the last one closed) the pixel count (int64), the sum of the
    probabilities and the count of mask pixels (float64)."""
    if prob.shape != target.shape:
        raise ValueError(f"prob shape {prob.shape} != target shape {target.shape}")
    p = prob.astype(np.float64, copy=False).ravel()
    k = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(k, minlength=n_bins)
    prob_sum = np.bincount(k, weights=p, minlength=n_bins)
    pos = np.bincount(k, weights=(target.ravel() > 0).astype(np.float64), minlength=n_bins)
    return count, prob_sum, pos


def ece_from_sums(count: np.ndarray, prob_sum: np.ndarray, pos: np.ndarray) -> float:
    """ECE from per-bin sums (see the module docstring); NaN when there are no pixels."""
    n = int(count.sum())
    return float(np.abs(pos - prob_sum).sum() / n) if n else math.nan


class ReliabilityBins:
    """Dataset-level accumulator of per-bin sums, one set per label; ``add`` one image at a time."""

    def __init__(self, labels: Sequence[str], n_bins: int = N_BINS) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins: must be >= 1, got {n_bins}")
        self.labels, self.n_bins = tuple(labels), n_bins
        self.count = np.zeros((len(self.labels), n_bins), np.int64)
        self.prob_sum = np.zeros((len(self.labels), n_bins))
        self.pos = np.zeros((len(self.labels), n_bins))

    def add(self, prob: np.ndarray, target: np.ndarray) -> None:
        """prob (L, H, W) float in [0, 1], target (L, H, W) {0, 1}, L = len(labels)."""
        if prob.shape[0] != len(self.labels):
            raise ValueError(f"prob has {prob.shape[0]} channels, labels are {self.labels}")
        for i in range(len(self.labels)):
            c, s, t = bin_sums(prob[i], target[i], self.n_bins)
            self.count[i] += c
            self.prob_sum[i] += s
            self.pos[i] += t

    def ece(self) -> dict[str, float]:
        return {
            lb: ece_from_sums(self.count[i], self.prob_sum[i], self.pos[i])
            for i, lb in enumerate(self.labels)
        }

    def table(self) -> dict[str, dict[str, Any]]:
        """{label: {"ece", "count", "confidence", "accuracy"}}: per-bin lists, None for empty bins."""
        return {
            lb: {
                "ece": e,
                "count": self.count[i].tolist(),
                "confidence": _ratios(self.prob_sum[i], self.count[i]),
                "accuracy": _ratios(self.pos[i], self.count[i]),
            }
            for i, (lb, e) in enumerate(self.ece().items())
        }


def _ratios(sums: np.ndarray, counts: np.ndarray) -> list[float | None]:
    return [float(s / n) if n else None for s, n in zip(sums, counts, strict=True)]


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for ``positives``:
    the probability that a random positive scores above a random negative, ties counting one half
    (Mann-Whitney U from average ranks). None when either class is empty."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and positives {y.shape}: expected two equal 1-D shapes")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    u = rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties) over the pairs where both are finite;
    None with fewer than 3 such pairs or a constant side."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def score_vs_dice(
    scores: dict[str, dict[str, float]],
    dice: dict[str, dict[str, float]],
    labels: Sequence[str],
    below: float = DICE_BELOW,
) -> dict[str, Any]:
    """How well per-image uncertainty scores find the images with low Dice.

    ``scores``: stem -> {"uncertainty": image score, "uncertainty_<label>": label score};
    ``dice``: stem -> {label: Dice}. Returns, for the mean Dice over labels (with the image score)
    and for each label (with its own score): n_images, n_below (Dice < ``below``), the AUROC of the
    score for finding those (None when none or all are below) and the Spearman correlation of
    score and Dice (negative when uncertain images have lower Dice)."""
    stems = list(scores)
    cases = {
        "mean_over_labels": ("uncertainty", lambda d: float(np.mean([d[lb] for lb in labels])))
    }
    cases |= {lb: (f"uncertainty_{lb}", lambda d, lb=lb: d[lb]) for lb in labels}
    out: dict[str, Any] = {}
    for name, (key, dice_of) in cases.items():
        s = [scores[st][key] for st in stems]
        d = [dice_of(dice[st]) for st in stems]
        low = [v < below for v in d]
        out[name] = {
            "score": key,
            "n_images": len(stems),
            "n_below": int(sum(low)),
            "auroc": auroc(s, low),
            "spearman_vs_dice": spearman(s, d),
        }
    return out
