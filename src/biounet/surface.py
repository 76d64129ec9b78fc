"""Boundary (surface) distances between two (H, W) masks: HD95 and the average symmetric surface
distance (ASSD), per image.

The boundary of a mask is ``mask & ~binary_erosion(mask)`` with a 4-connected (cross) erosion and
nothing outside the image, so foreground pixels touching the image edge are boundary pixels.
Distances are Euclidean between pixel centres, scaled by ``spacing`` = (row, col) pixel size
(default 1, i.e. pixels).

Conventions for empty masks: both empty -> 0.0 (perfect agreement, as Dice = 1 in
``biounet.metrics``); exactly one empty -> ``inf`` (there is no boundary to measure to).
``biounet.metrics.summarize`` skips non-finite values, so a summary of these rows averages only the
images where both masks are present; count the ``inf`` rows separately if misses matter.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from biounet.errors import BiounetError


def _check(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, float] | None
) -> tuple[float, float]:
    if a.ndim != 2 or a.shape != b.shape:
        raise BiounetError(
            f"a and b must be (H, W) masks of one shape, got {a.shape} and {b.shape}"
        )
    sp = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != 2 or not all(s > 0 and math.isfinite(s) for s in sp):
        raise BiounetError(f"spacing must be two positive (row, col) pixel sizes, got {spacing}")
    return sp[0], sp[1]


def boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (H, W) bool of its foreground pixels with a 4-neighbour that is background or
    outside the image."""
    m = np.asarray(mask).astype(bool)
    return m & ~ndimage.binary_erosion(m, border_value=0)


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) masks a, b -> (distances from each boundary pixel of a to the nearest boundary pixel
    of b, and from b's to a's): 1-D float arrays of lengths |boundary(a)| and |boundary(b)|.

    Both empty when either mask is empty (the callers apply the empty-mask conventions)."""
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    sp = _check(a, b, spacing)
    ba, bb = boundary(a), boundary(b)
    if not ba.any() or not bb.any():
        return np.zeros(0), np.zeros(0)
    # EDT of the complement: each pixel's distance to the nearest boundary pixel of the other mask.
    d_ab = ndimage.distance_transform_edt(~bb, sampling=sp)[ba]
    d_ba = ndimage.distance_transform_edt(~ba, sampling=sp)[bb]
    return d_ab, d_ba


def _empty_convention(a: np.ndarray, b: np.ndarray) -> float | None:
    ea, eb = not np.any(a), not np.any(b)
    if ea and eb:
        return 0.0
    if ea or eb:
        return math.inf
    return None


def hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    """(H, W) masks a, b -> 95th-percentile Hausdorff distance.

    The larger of the two directed 95th percentiles (a's boundary to b's, b's to a's), each with
    linear interpolation, as MONAI's ``compute_hausdorff_distance(percentile=95)`` does. medpy's
    ``hd95`` instead takes the 95th percentile of both directions pooled, which differs (typically it is
    smaller when the far-off distances all lie in the shorter boundary's direction). 0.0 if both masks are empty,
    inf if exactly one is."""
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    _check(a, b, spacing)
    empty = _empty_convention(a, b)
    if empty is not None:
        return empty
    d_ab, d_ba = surface_distances(a, b, spacing)
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def average_surface_distance(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, float] | None = None
) -> float:
    """(H, W) masks a, b -> average symmetric surface distance (ASSD).

    The mean of the two directions' distances pooled, sum(d_ab) + sum(d_ba) over
    |boundary(a)| + |boundary(b)|, as MONAI's ``compute_average_surface_distance(symmetric=True)``;
    medpy's ``assd`` instead averages the two directed means, which differs when the boundaries have
    different lengths. 0.0 if both masks are empty, inf if exactly one is."""
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    _check(a, b, spacing)
    empty = _empty_convention(a, b)
    if empty is not None:
        return empty
    d_ab, d_ba = surface_distances(a, b, spacing)
    return float(np.concatenate([d_ab, d_ba]).mean())
