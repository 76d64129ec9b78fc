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

_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-neighbourhood


def flood(height: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(H, W) int levels 0..L-1 and (H, W) int seed labels (0 = none) -> (H, W) int32 labels.

    Meyer's flooding: level by level from the lowest, every labelled region grows one pixel per
    step into the unlabelled 4-neighbours at or below the current level, all regions at once, until
    none can; so on a plateau (a saturated, thick membrane) regions meet half way instead of the
    first one to arrive taking all of it (as ``scipy.ndimage.watershed_ift`` does). Where two
    regions reach a pixel in the same step the larger label takes it. Pixels no seed can reach
    stay 0."""
    if height.shape != seeds.shape or height.ndim != 2:
        raise ValueError(f"height {height.shape} and seeds {seeds.shape} must be one (H, W) shape")
    h, w = height.shape
    lab = seeds.astype(np.int32).ravel()  # flat: a pixel is one index
    height = height.ravel()
    for level in range(int(height.max()) + 1):
        open_ = (height <= level) & (lab == 0)
        if not open_.any():
            continue
        # first wave: the labelled pixels next to an open one; after it, only the pixels labelled
        # in the previous step can reach new ones (an open pixel next to an older one would
        # already have been taken), so each step touches its frontier alone
        near_open = ndimage.binary_dilation(open_.reshape(h, w), structure=_CROSS).ravel()
        front = np.flatnonzero(near_open & (lab > 0))
        while front.size:
            r, c = np.divmod(front, w)
            nbs, labs = [], []
            for ok, step in ((r > 0, -w), (r < h - 1, w), (c > 0, -1), (c < w - 1, 1)):
                nbs.append(front[ok] + step)
                labs.append(lab[front[ok]])
            nb, lb = np.concatenate(nbs), np.concatenate(labs)
            keep = open_[nb]
            nb, lb = nb[keep], lb[keep]
            if not nb.size:
                break
            order = np.lexsort((lb, nb))  # by pixel, then label: the last of a pixel is its largest
            nb, lb = nb[order], lb[order]
            last = np.append(nb[1:] != nb[:-1], True)
            front = nb[last]
            lab[front] = lb[last]
            open_[front] = False
    return lab.reshape(h, w)


def watershed_cells(
    interior: np.ndarray,
    seed_threshold: float = 0.9,
    min_seed_px: int = 20,
    sigma: float = 1.0,
    levels: int = 64,
) -> np.ndarray:
    """(H, W) P(cell interior) -> (H, W) int32 labels, 0 = 1-px borders between cells, 1..K cells.

    The map is smoothed (Gaussian, ``sigma`` px; 0 = not); seeds are the 4-connected components of
    it above ``seed_threshold`` with at least ``min_seed_px`` pixels; every pixel is flooded from the
    seeds (``flood``) in increasing membrane probability, quantised to ``levels`` levels, and where
    two cells meet the pixel on the upper / left side becomes border, so no two cells stay
    4-adjacent. Without any seed the whole image is one cell."""
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
    height = np.minimum((1.0 - p) * levels, levels - 1).astype(np.int32)
    cells = flood(height, seeds)
    border = np.zeros(cells.shape, dtype=bool)
    border[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    border[:-1, :] |= cells[:-1, :] != cells[1:, :]
    cells[border] = 0
    return cells
