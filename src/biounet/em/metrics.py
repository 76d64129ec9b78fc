"""ISBI 2012 challenge metrics for EM membrane segmentation, per image.

Segmentations are (H, W) integer label maps: 0 = membrane/boundary, 1..K = cells (see ``segment``).

Definitions follow Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation
algorithms for connectomics", Front. Neuroanat. 9:142, as implemented in Fiji's Trainable Weka
Segmentation (``RandError.foregroundRestrictedStatsN2``, ``VariationOfInformation.
foregroundRestrictedFscore``). With p_ij the joint distribution of (predicted label i, true label j)
over the scored pixels, s_i = sum_j p_ij and t_j = sum_i p_ij:

- V_rand_split = sum p_ij^2 / sum t_j^2, V_rand_merge = sum p_ij^2 / sum s_i^2,
  V_rand = 2 sum p_ij^2 / (sum s_i^2 + sum t_j^2) (their harmonic mean).
- V_info_split = I(S;T) / H(S), V_info_merge = I(S;T) / H(T),
  V_info = 2 I(S;T) / (H(S) + H(T)) (their harmonic mean).

Scored pixels are those whose TRUE label is > 0; among them, pixels with predicted label 0 are
each their own singleton segment. ``v_rand`` / ``v_info`` score the segmentations as given; the
challenge's final ranking thinned the borders of both to 1 px first (``thin_borders``; the
``*_thinned`` keys of ``em_scores``) and kept the best of a threshold sweep.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SEGMENT_KINDS = ("interior", "membrane")


def pixel_error(
    pred_boundary: np.ndarray, true_boundary: np.ndarray, threshold: float = 0.5
) -> float:
    """Fraction of pixels where ``pred_boundary > threshold`` and ``true_boundary > threshold`` differ.
    Same-shaped arrays (any shape): probabilities or {0,1} masks. Symmetric in its arguments."""
    if pred_boundary.shape != true_boundary.shape:
        raise ValueError(
            f"pred_boundary shape {pred_boundary.shape} != true_boundary shape {true_boundary.shape}"
        )
    if pred_boundary.size == 0:
        raise ValueError("pred_boundary is empty")
    return float(np.mean((pred_boundary > threshold) != (true_boundary > threshold)))


def interior_counts(
    prob_membrane: np.ndarray, true_membrane: np.ndarray, threshold: float = 0.5
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of CELL INTERIOR pixels, the positive
    class of the challenge's pixel error: predicted interior = ``prob_membrane <= threshold`` (as
    ``segment``), true interior = ``true_membrane <= 0.5``. Same-shaped arrays, any shape."""
    if prob_membrane.shape != true_membrane.shape:
        raise ValueError(
            f"prob_membrane shape {prob_membrane.shape} != true_membrane shape {true_membrane.shape}"
        )
    pred, true = prob_membrane <= threshold, true_membrane <= 0.5
    tp = int(np.count_nonzero(pred & true))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(true)) - tp


def fscore_error(tp: int, fp: int, fn: int) -> float:
    """1 - F1 = 1 - 2 tp / (2 tp + fp + fn): the ISBI 2012 challenge's "pixel error" (Fiji's
    ``PixelError``, with cell interior as the positive class and the counts pooled over the scored
    slices; the leaderboard took its minimum over a threshold sweep). 0 where there is nothing to
    find and nothing found."""
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 1.0 - 2 * tp / denom


def segment(x: np.ndarray, kind: str = "interior", threshold: float = 0.5) -> np.ndarray:
    """(H, W) map -> (H, W) int32 labels: 0 = membrane, 1..K = 4-connected cells (raster order).

    ``kind="interior"``: x is cell-interior evidence, as ISBI 2012 label images (1 or 255 = cell,
    0 = membrane) and challenge submissions (1 = certainly not membrane); cell = x > threshold.
    ``kind="membrane"``: x is a membrane probability or {0,1} membrane mask; cell = x <= threshold,
    so a pixel at exactly the threshold counts as cell.
    4-connectivity as in the challenge's Fiji script: cells touching only diagonally stay apart.
    """
    if kind not in SEGMENT_KINDS:
        raise ValueError(f"kind must be one of {SEGMENT_KINDS}, got {kind!r}")
    if x.ndim != 2:
        raise ValueError(f"x must be (H, W), got shape {x.shape}")
    cell = x > threshold if kind == "interior" else ~(x > threshold)
    labels, _ = ndimage.label(cell)  # default structure = 4-connectivity in 2D
    return labels.astype(np.int32)


def thin_borders(seg: np.ndarray) -> np.ndarray:
    """(H, W) int labels, 0 = border -> (H, W) int32 labels with borders at most 1 px wide.

    Every border pixel joins its nearest cell (Euclidean distance), then stays border where a
    4-neighbour belongs to another cell and is either a cell pixel of the input or a border pixel
    that joined a cell with a larger label: a 1 px border stays, and of two cells meeting across a
    thicker one, one row of pixels stays, on the side of the smaller label. Cells that already
    touch keep touching (labels, not connectivity, tell them apart). Border pixels with no cell at
    all stay 0. The challenge's Fiji scoring thins with a watershed instead; both leave 1 px
    borders between the cells that had one.
    """
    if seg.ndim != 2:
        raise ValueError(f"seg must be (H, W), got shape {seg.shape}")
    seg = seg.astype(np.int32)
    border = seg == 0
    if not border.any() or border.all():
        return seg
    idx = ndimage.distance_transform_edt(border, return_distances=False, return_indices=True)
    grown = seg[idx[0], idx[1]]  # (H, W) every pixel's nearest cell
    g, b = np.pad(grown, 1, mode="edge"), np.pad(border, 1, mode="edge")
    keep = np.zeros_like(border)
    for sl in ((slice(0, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
               (slice(1, -1), slice(0, -2)), (slice(1, -1), slice(2, None))):  # fmt: skip
        gq, bq = g[sl], b[sl]  # the up / down / left / right neighbour of every pixel
        keep |= (gq != grown) & (~bq | (gq > grown))
    return np.where(border & keep, 0, grown).astype(np.int32)


def _contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat label arrays (N,) -> (n_ij over non-empty cells, a segment sizes, b segment sizes), int64.
    Sparse: only pairs that occur, so it is O(N log N) whatever the number of labels."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    nb = int(ib.max()) + 1
    key = ia.astype(np.int64) * nb + ib
    n_ij = np.unique(key, return_counts=True)[1]
    return n_ij, np.bincount(ia), np.bincount(ib)


def _check_pair(seg_a: np.ndarray, seg_b: np.ndarray, name_a: str, name_b: str) -> None:
    if seg_a.shape != seg_b.shape:
        raise ValueError(f"{name_a} shape {seg_a.shape} != {name_b} shape {seg_b.shape}")
    for name, s in ((name_a, seg_a), (name_b, seg_b)):
        if not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label map, got dtype {s.dtype}")


def _sum_sq(counts: np.ndarray) -> float:
    return float(np.sum(counts.astype(np.float64) ** 2))


def rand_error(seg_a: np.ndarray, seg_b: np.ndarray) -> float:
    """1 - Rand index over all unordered pixel pairs; label 0 is an ordinary segment here.

    Same-shaped integer label maps (any shape) -> float in [0, 1], symmetric. With n_ij the
    contingency table, a_i, b_j its margins and N pixels, the disagreeing pairs number
    (sum a_i^2 + sum b_j^2) / 2 - sum n_ij^2, out of N (N - 1) / 2. 0 for fewer than two pixels.
    Note: the ISBI 2012 leaderboard's "Rand error" is 1 - V_rand (see ``em_scores``), not this.
    """
    _check_pair(seg_a, seg_b, "seg_a", "seg_b")
    n = seg_a.size
    if n < 2:
        return 0.0
    n_ij, a, b = _contingency(seg_a.ravel(), seg_b.ravel())
    disagree = 0.5 * (_sum_sq(a) + _sum_sq(b)) - _sum_sq(n_ij)
    return disagree / (n * (n - 1) / 2)


def _restricted(seg_pred: np.ndarray, seg_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels with true label > 0, predicted label 0 replaced by fresh singleton labels. -> (M,), (M,)"""
    _check_pair(seg_pred, seg_true, "seg_pred", "seg_true")
    fg = seg_true > 0
    if not fg.any():
        raise ValueError("seg_true has no foreground (label > 0) pixels: V-scores are undefined")
    pred = seg_pred[fg].astype(np.int64)
    true = seg_true[fg].astype(np.int64)
    bg = pred == 0
    # Unlabelled predicted pixels join nothing: every one is its own segment (Fiji's p_i0 / n term).
    pred[bg] = pred.max() + 1 + np.arange(int(bg.sum()), dtype=np.int64)
    return pred, true


def v_rand(seg_pred: np.ndarray, seg_true: np.ndarray) -> dict[str, float]:
    """Foreground-restricted Rand scores of the ISBI 2012 challenge (before border thinning).

    Same-shaped integer label maps (0 = boundary) -> {"v_rand", "v_rand_split", "v_rand_merge"},
    each in (0, 1], 1 = perfect. Split < 1 when true cells are cut apart (or predicted membrane
    falls inside them); merge < 1 when true cells are joined. Asymmetric: seg_true decides which
    pixels count. The leaderboard's V_rand(thinned) also thins predicted borders with a watershed
    and keeps the best threshold; this function scores the segmentation as given.
    """
    pred, true = _restricted(seg_pred, seg_true)
    n_ij, s, t = _contingency(pred, true)
    # Counts instead of probabilities: the 1/N^2 factors cancel in every ratio.
    p2, s2, t2 = _sum_sq(n_ij), _sum_sq(s), _sum_sq(t)
    return {"v_rand": 2 * p2 / (s2 + t2), "v_rand_split": p2 / t2, "v_rand_merge": p2 / s2}


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts.astype(np.float64) / n
    return float(-np.sum(p * np.log(p)))


def v_info(seg_pred: np.ndarray, seg_true: np.ndarray) -> dict[str, float]:
    """Foreground-restricted information-theoretic scores of the ISBI 2012 challenge.

    Same-shaped integer label maps (0 = boundary) -> {"v_info", "v_info_split", "v_info_merge"}
    in [0, 1], 1 = perfect; pixels restricted as in ``v_rand``. With S the prediction, T the truth
    and natural logs (the base cancels): split = I(S;T) / H(S), merge = I(S;T) / H(T),
    v_info = harmonic mean = 2 I / (H(S) + H(T)). A ratio 0/0 (that segmentation is one segment,
    so it cannot make that kind of error) is 1; Fiji instead swaps the two in that corner case,
    which gives the same v_info.
    """
    pred, true = _restricted(seg_pred, seg_true)
    n_ij, s, t = _contingency(pred, true)
    n = pred.size
    h_s, h_t, h_st = _entropy(s, n), _entropy(t, n), _entropy(n_ij, n)
    mi = max(h_s + h_t - h_st, 0.0)  # >= 0 in exact arithmetic; clamp rounding
    split = min(mi / h_s, 1.0) if h_s > 0 else 1.0
    merge = min(mi / h_t, 1.0) if h_t > 0 else 1.0
    f = 2 * split * merge / (split + merge) if split + merge > 0 else 0.0
    return {"v_info": f, "v_info_split": split, "v_info_merge": merge}


def em_scores(
    prob_membrane: np.ndarray, true_membrane: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """All ISBI 2012 scores of one image.

    prob_membrane (H, W) float membrane probability, true_membrane (H, W) {0,1} membrane mask
    (1 = membrane). Membrane = prob > threshold; cells are the 4-connected components of the rest.
    -> {"pixel_error", "rand_error", "adapted_rand_error", "v_rand", "v_rand_split",
    "v_rand_merge", "v_info", "v_info_split", "v_info_merge", "v_rand_thinned",
    "v_info_thinned", "pixel_error_fscore", "interior_tp", "interior_fp", "interior_fn"}.
    "pixel_error" is the fraction of pixels mislabelled; "pixel_error_fscore" the challenge's pixel
    error of this one image (``fscore_error`` of ``interior_counts``, which are given too: a stack's
    is that of the summed counts, see ``biounet.em.train_em.mean_scores``). "rand_error" is the classic all-pairs 1 - Rand index with membrane as one
    more segment; "adapted_rand_error" = 1 - v_rand, the challenge's foreground-restricted version
    (without thinning, at this one threshold).
    ``"v_rand_thinned"`` and ``"v_info_thinned"``: the same after ``thin_borders`` of both label
    maps, the challenge's final metrics at this one threshold.
    """
    if prob_membrane.shape != true_membrane.shape:
        raise ValueError(
            f"prob_membrane shape {prob_membrane.shape} != true_membrane shape {true_membrane.shape}"
        )
    seg_pred = segment(prob_membrane, kind="membrane", threshold=threshold)
    seg_true = segment(true_membrane, kind="membrane", threshold=0.5)
    tp, fp, fn = interior_counts(prob_membrane, true_membrane, threshold)
    return {
        "pixel_error": pixel_error(prob_membrane > threshold, true_membrane > 0.5),
        "pixel_error_fscore": fscore_error(tp, fp, fn),
        "interior_tp": tp,
        "interior_fp": fp,
        "interior_fn": fn,
        **segmentation_scores(seg_pred, seg_true),
    }


def segmentation_scores(seg_pred: np.ndarray, seg_true: np.ndarray) -> dict[str, float]:
    """The label-map scores of ``em_scores`` for a segmentation made any way (e.g. a watershed):
    (H, W) int label maps, 0 = border -> {"rand_error", "v_rand", "v_rand_split", "v_rand_merge",
    "adapted_rand_error", "v_info", "v_info_split", "v_info_merge", "v_rand_thinned",
    "v_info_thinned"}."""
    out = {"rand_error": rand_error(seg_pred, seg_true)}
    out.update(v_rand(seg_pred, seg_true))
    out["adapted_rand_error"] = 1.0 - out["v_rand"]
    out.update(v_info(seg_pred, seg_true))
    thin_pred, thin_true = thin_borders(seg_pred), thin_borders(seg_true)
    out["v_rand_thinned"] = v_rand(thin_pred, thin_true)["v_rand"]
    out["v_info_thinned"] = v_info(thin_pred, thin_true)["v_info"]
    return out
