"""From a cell-interior probability map to cells by a seeded watershed, instead of thresholding.

Thresholding splits the image into cells only where the predicted membrane is closed: one faint gap
merges two cells, which the ISBI 2012 scores (V_rand, V_info) punish far more than a slightly
misplaced border. A watershed grows cells from confident seeds (the cores of the interior map) and
stops where growing cells meet, on the ridge of membrane probability between them, so a membrane
with a gap still separates two seeds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def watershed_cells(
    interior: np.ndarray, seed_threshold: float = 0.9, min_seed_px: int = 20, sigma: float = 1.0
) -> np.ndarray:
    """(H, W) P(cell interior) -> (H, W) int32 labels, 0 = 1-px borders between cells, 1..K cells.

    The map is smoothed (Gaussian, ``sigma`` px; 0 = not); seeds are the 4-connected components of
    it above ``seed_threshold`` with at least ``min_seed_px`` pixels; every pixel is flooded from the
    seeds in increasing membrane probability (``scipy.ndimage.watershed_ift``), and where two cells
    meet the pixel on the upper / left side becomes border, so no two cells stay 4-adjacent.
    Without any seed the whole image is one cell."""
    if interior.ndim != 2:
        raise ValueError(f"interior must be (H, W), got shape {interior.shape}")
    if not 0.0 < seed_threshold < 1.0:
        raise ValueError(f"seed_threshold must lie in (0, 1), got {seed_threshold}")
    p = np.clip(interior.astype(np.float64), 0.0, 1.0)
    if sigma > 0:
        p = ndimage.gaussian_filter(p, sigma)
    seeds, n = ndimage.label(p > seed_threshold)
    if n and min_seed_px > 1:
        sizes = ndimage.sum_labels(np.ones_like(seeds), seeds, index=np.arange(1, n + 1))
        keep = np.concatenate([[0], np.cumsum(sizes >= min_seed_px) * (sizes >= min_seed_px)])
        seeds, n = keep[seeds], int((sizes >= min_seed_px).sum())
    if n == 0:
        return np.ones(interior.shape, dtype=np.int32)
    height = np.round((1.0 - p) * 65535).astype(np.uint16)
    cells = ndimage.watershed_ift(height, seeds.astype(np.int32)).astype(np.int32)
    border = np.zeros(cells.shape, dtype=bool)
    border[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    border[:-1, :] |= cells[:-1, :] != cells[1:, :]
    cells[border] = 0
    return cells
