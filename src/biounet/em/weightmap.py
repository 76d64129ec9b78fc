"""The U-Net paper's pixel weight map (Ronneberger et al. 2015, eq. 2):

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

d1 and d2 are the distances to the nearest and the second-nearest cell. The border term makes the
network learn the thin membrane separating touching cells; w_c balances the class frequencies.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def class_balance_weights(interior: np.ndarray) -> tuple[float, float]:
    """(H, W) bool cell-interior mask -> (w_membrane, w_interior).

    Each class weighs 1 / its pixel frequency, scaled so the larger weight (the rarer class) is 1:
    w_k = f_min / f_k. A class absent from the mask gets weight 1 (it weighs nothing anyway)."""
    f_in = float(np.count_nonzero(interior)) / interior.size
    return _balance(1.0 - f_in, f_in)


def _balance(f_bg: float, f_in: float) -> tuple[float, float]:
    if f_bg <= 0 or f_in <= 0:
        return 1.0, 1.0
    f_min = min(f_bg, f_in)
    return f_min / f_bg, f_min / f_in


def two_nearest_cell_distances(
    labels: np.ndarray, n_cells: int, margin: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) int labels (0 = background, 1..n_cells) -> d1, d2: (H, W) float64 Euclidean distances
    from each pixel to the nearest pixel of its nearest and second-nearest cell (0 inside a cell
    for d1; inf where fewer cells are known).

    margin: distances to a cell are computed only inside its bounding box grown by ``margin`` px
    (any pixel outside it is more than ``margin`` from that cell), and stay inf elsewhere.
    None computes every cell on the whole image.
    """
    h, w = labels.shape
    d1 = np.full((h, w), np.inf)
    d2 = np.full((h, w), np.inf)
    boxes = ndimage.find_objects(labels, max_label=n_cells)
    pad = 0 if margin is None else math.ceil(margin)
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        if margin is None:
            win: tuple[slice, slice] = (slice(0, h), slice(0, w))
        else:
            win = (
                slice(max(box[0].start - pad, 0), min(box[0].stop + pad, h)),
                slice(max(box[1].start - pad, 0), min(box[1].stop + pad, w)),
            )
        # The window holds the whole cell, so the transform is exact inside it.
        d = ndimage.distance_transform_edt(labels[win] != k)
        a, b = d1[win], d2[win]
        d2[win] = np.minimum(b, np.maximum(a, d))
        d1[win] = np.minimum(a, d)
    return d1, d2


def unet_weight_map(
    interior: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_freq: tuple[float, float] | None = None,
    truncate: float | None = 4.0,
) -> np.ndarray:
    """(H, W) bool cell-interior mask -> (H, W) float32 weight map of the U-Net paper.

    Cells are the 4-connected components of ``interior`` (as in ``biounet.em.metrics.segment``).
    Membrane (background) pixels get w_c(membrane) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)); cell
    pixels get w_c(interior). Where there are fewer than two cells the border term is 0.

    w_c: 1 / class frequency scaled so the rarer class weighs 1 (``class_balance_weights``); the
    paper only says "to balance the class frequencies". Frequencies come from this mask, or from
    ``class_freq`` = (f_membrane, f_interior), e.g. measured over the whole training set.

    truncate: each cell's distances are computed within truncate * sigma px of it (like
    scipy.ndimage.gaussian_filter's truncate). A pixel whose d2 lies beyond that loses a border
    term smaller than w0 * exp(-truncate^2 / 2) (0.0034 for the defaults). None = exact, slower.
    """
    if interior.ndim != 2:
        raise ValueError(f"interior must be (H, W), got shape {interior.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    interior = interior.astype(bool)
    w_bg, w_in = class_balance_weights(interior) if class_freq is None else _balance(*class_freq)
    labels, n_cells = ndimage.label(interior)  # default structure = 4-connectivity
    out = np.where(interior, w_in, w_bg).astype(np.float64)
    if n_cells >= 2:
        margin = None if truncate is None else truncate * sigma
        d1, d2 = two_nearest_cell_distances(labels, n_cells, margin)
        bg = ~interior & np.isfinite(d2)
        out[bg] += w0 * np.exp(-((d1[bg] + d2[bg]) ** 2) / (2 * sigma**2))
    return out.astype(np.float32)
