"""Per-pixel uncertainty from test-time augmentation, and a per-image score that flags doubtful cases.

The image is predicted as it is and flipped (horizontally, vertically, both); each prediction is
flipped back and the four probabilities averaged. The uncertainty of a pixel is the binary entropy
(in bits, 0..1) of that mean probability: 0 where all four predictions agree on 0 or 1, 1 where
the mean is 0.5. It measures the total predictive uncertainty (what the model cannot decide, and
where the flipped views disagree), not a calibrated error probability.

The image's score is the mean entropy over the predicted structures dilated by a band (their
boundary region, where segmentations go wrong): a sharp, confident outline scores near 0, a vague
or disputed one higher. Where nothing is predicted, the whole image counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

# numpy axes of an (H, W, C) image to flip: identity, left-right, up-down, both
FLIPS: tuple[tuple[int, ...], ...] = ((), (1,), (0,), (0, 1))


def tta_probabilities(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    identity: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W, C) image -> (4, L, H, W) probabilities of ``predict`` ((H, W, C) -> (L, H, W)) on the
    image and its flips, flipped back. ``identity``: the unflipped prediction if already known."""
    out = []
    for axes in FLIPS:
        if not axes and identity is not None:
            out.append(identity)
            continue
        flipped = np.ascontiguousarray(np.flip(image, axes)) if axes else image
        p = predict(flipped)
        out.append(np.flip(p, tuple(a + 1 for a in axes)) if axes else p)
    return np.stack(out).astype(np.float32)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli(p), elementwise: 0 at p in {0, 1}, 1 at p = 0.5."""
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """(T, L, H, W) probabilities of T views -> (L, H, W) entropy of their mean, in bits."""
    return binary_entropy(probs.mean(axis=0))


def band_width(shape: tuple[int, int]) -> int:
    """Pixels added around the structures: 2 % of the larger image side, at least 2."""
    return max(2, round(0.02 * max(shape)))


def uncertainty_scores(
    entropy: np.ndarray, masks: dict[str, np.ndarray], labels: tuple[str, ...]
) -> dict[str, float]:
    """(L, H, W) entropy + {label: (H, W) bool} -> {"uncertainty": over all labels (each label's
    entropy in its own band, pooled), "uncertainty_<label>": per label}."""
    width = band_width(entropy.shape[1:])
    out: dict[str, float] = {}
    total, count = 0.0, 0
    for i, lb in enumerate(labels):
        m = masks[lb].astype(bool)
        region = ndimage.binary_dilation(m, iterations=width) if m.any() else np.ones_like(m)
        vals = entropy[i][region]
        out[f"uncertainty_{lb}"] = float(vals.mean())
        total, count = total + float(vals.sum()), count + vals.size
    return {"uncertainty": total / count, **out}


def uncertainty_image(entropy: np.ndarray) -> np.ndarray:
    """(L, H, W) entropy in bits -> (H, W) uint8: the largest over labels, x 255."""
    return np.clip(entropy.max(axis=0) * 255 + 0.5, 0, 255).astype(np.uint8)


def image_uncertainty(
    predictor: Any, image: np.ndarray, prediction: Any
) -> tuple[np.ndarray, dict[str, float]]:
    """For a predictor (``biounet.predictor``), an (H, W, C) uint8 image and its prediction: the
    (H, W) uint8 uncertainty picture and the scores (see ``uncertainty_scores``)."""
    probs = tta_probabilities(lambda im: predictor.predict(im).prob, image, prediction.prob)
    ent = entropy_map(probs)
    scores = uncertainty_scores(ent, prediction.masks, tuple(predictor.labels))
    return uncertainty_image(ent), scores
