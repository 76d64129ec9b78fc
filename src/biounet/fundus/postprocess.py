"""Post-processing of optic disc and cup masks: one component, no holes, cup inside disc, and an
optional ellipse fit.

All functions are pure: they take (H, W) masks (any dtype; non-zero is foreground) and return new
(H, W) bool arrays. Coordinates are (row, col) with pixel centres at integers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from biounet.errors import BiounetError

# 8-connectivity for foreground components; scipy's hole filling uses the dual 4-connected background.
_EIGHT = np.ones((3, 3), dtype=bool)


def as_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Any (H, W) array -> (H, W) bool (non-zero is foreground); BiounetError if not 2-D."""
    a = np.asarray(mask)
    if a.ndim != 2:
        raise BiounetError(f"{name} must be a 2-D (H, W) mask, got shape {a.shape}")
    return a.astype(bool)


def as_mask_pair(disc: np.ndarray, cup: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) disc and cup -> bool copies; BiounetError if either is not 2-D or the shapes differ."""
    d, c = as_mask(disc, "disc"), as_mask(cup, "cup")
    if d.shape != c.shape:
        raise BiounetError(f"disc shape {d.shape} != cup shape {c.shape}")
    return d, c


def largest_component(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (H, W) bool keeping only its largest 8-connected component.

    An empty mask stays empty; on a tie in size the component met first in raster order is kept."""
    m = as_mask(mask)
    labels, n = ndimage.label(m, structure=_EIGHT)
    if n <= 1:
        return m
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (H, W) bool with every background region not 4-connected to the image border
    filled (the dual of 8-connected foreground)."""
    return ndimage.binary_fill_holes(as_mask(mask))


def ellipse_from_moments(mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """(H, W) non-empty mask -> (cy, cx, ry, rx, angle) of the ellipse with the same second moments.

    (cy, cx) is the centroid in pixels. Each semi-axis is 2 * sqrt(variance along that axis), which is
    exact for a filled continuous ellipse. Pixels count as unit squares, so 1/12 is added to each
    variance: a single pixel rasterises back to itself, and a one-pixel-thick line gets a minor
    semi-axis of about 0.58 px rather than a degenerate ellipse. ``angle`` (radians, in (-pi/4, pi/4]) turns the ``rx`` axis from +col towards +row (i.e.
    clockwise on screen, rows pointing down); ``ry`` is the perpendicular semi-axis. So an
    axis-aligned ellipse has angle 0, ``ry`` vertical and ``rx`` horizontal, whichever is longer.
    """
    m = as_mask(mask)
    rows, cols = np.nonzero(m)
    if rows.size == 0:
        raise BiounetError("mask is empty: an ellipse needs at least one foreground pixel")
    cy, cx = float(rows.mean()), float(cols.mean())
    dy, dx = rows - cy, cols - cx
    syy, sxx, sxy = float((dy * dy).mean()), float((dx * dx).mean()), float((dx * dy).mean())
    angle = 0.5 * math.atan2(2.0 * sxy, sxx - syy)  # a principal axis, in (-pi/2, pi/2]
    # Any multiple of pi/2 is also a principal axis: pick the one closest to the image axes.
    if angle > math.pi / 4:
        angle -= math.pi / 2
    elif angle <= -math.pi / 4:
        angle += math.pi / 2
    c, s = math.cos(angle), math.sin(angle)
    var_u = sxx * c * c + 2 * sxy * c * s + syy * s * s + 1.0 / 12.0
    var_v = sxx * s * s - 2 * sxy * c * s + syy * c * c + 1.0 / 12.0
    return cy, cx, 2.0 * math.sqrt(var_v), 2.0 * math.sqrt(var_u), angle


def rasterize_ellipse(
    shape: tuple[int, int],
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Filled ellipse -> (H, W) bool of the pixels whose centres lie inside or on it.

    Parameters as returned by ``ellipse_from_moments``: centre (cy, cx), semi-axes ry and rx > 0,
    ``angle`` in radians turning the ``rx`` axis from +col towards +row."""
    if len(shape) != 2:
        raise BiounetError(f"shape must be (H, W), got {shape}")
    if not (ry > 0 and rx > 0):
        raise BiounetError(f"ellipse semi-axes must be > 0, got ry={ry}, rx={rx}")
    dy = np.arange(shape[0], dtype=np.float64)[:, None] - cy  # (H, 1)
    dx = np.arange(shape[1], dtype=np.float64)[None, :] - cx  # (1, W)
    c, s = math.cos(angle), math.sin(angle)
    u = dx * c + dy * s  # along rx
    v = -dx * s + dy * c  # along ry
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def fit_ellipse_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (H, W) bool filled ellipse with the mask's second moments; empty stays empty."""
    m = as_mask(mask)
    if not m.any():
        return m
    return rasterize_ellipse(m.shape, *ellipse_from_moments(m))


def clean_disc_cup(
    disc: np.ndarray, cup: np.ndarray, fit_ellipse: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) disc and cup masks -> cleaned (H, W) bool (disc, cup).

    Disc: its largest 8-connected component, holes filled. Cup: first clipped to the cleaned disc
    (the cup lies inside the disc by definition, and clipping first means a stray cup blob outside
    the disc cannot win the size contest), then its largest component, holes filled; filling cannot
    leave the disc because the disc has no holes. An empty cup stays empty (a disc without a
    detectable cup is a valid prediction; its cup-to-disc ratio is 0); an empty disc empties the cup.

    With ``fit_ellipse`` each mask is then replaced by the filled ellipse with its second moments
    (``ellipse_from_moments``), rasterised on the same (H, W) grid, and the cup is clipped to the
    disc again."""
    d, c = as_mask_pair(disc, cup)
    cleaned = clean_disc(d, fit_ellipse)
    return cleaned[1], clean_cup(c, *cleaned, fit_ellipse=fit_ellipse)


def clean_disc(disc: np.ndarray, fit_ellipse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The disc half of ``clean_disc_cup``: (H, W) mask -> (its largest component with holes
    filled, the final disc: that, or its fitted ellipse with ``fit_ellipse``)."""
    d = fill_holes(largest_component(disc))
    return d, fit_ellipse_mask(d) if fit_ellipse else d


def clean_cup(
    cup: np.ndarray, disc: np.ndarray, final_disc: np.ndarray, fit_ellipse: bool = False
) -> np.ndarray:
    """The cup half of ``clean_disc_cup``, given ``clean_disc``'s two masks: the cup clipped to
    ``disc``, its largest component with holes filled (with ``fit_ellipse`` its ellipse, clipped
    to ``final_disc``)."""
    c = fill_holes(largest_component(as_mask(cup, "cup") & disc))
    return fit_ellipse_mask(c) & final_disc if fit_ellipse else c
