"""Clinical measures of the optic disc and cup: cup-to-disc ratios and ISNT rim widths.

All functions take (H, W) masks (non-zero is foreground) of one image, in pixels. They measure the
masks as given: clean predictions first with ``biounet.fundus.postprocess.clean_disc_cup`` (one
component each, no holes, cup inside disc). An empty disc gives NaN ratios and rim widths, which
``biounet.metrics.summarize`` skips; an empty cup with a non-empty disc gives ratios of 0.
"""

from __future__ import annotations

import math

import numpy as np

from biounet.errors import BiounetError
from biounet.fundus.postprocess import as_mask_pair

EYES = ("OD", "OS", "unknown", "crop")
# Image-frame sector axes, as angles in degrees with 0 = +col (right) and 90 = +row (down).
_AXES = {"right": 0, "inferior": 90, "left": 180, "superior": 270}
_HALF_SECTOR = 45  # rays within +/-45 degrees of an axis, so the four sectors tile the circle
_STEP = 0.1  # px between samples along a ray; rim widths are exact to about this


def _extent(mask: np.ndarray, axis: int) -> int:
    """(H, W) bool -> rows (axis=0) or columns (axis=1) spanned, first to last inclusive; 0 if empty."""
    idx = np.flatnonzero(mask.any(axis=1 - axis))
    return int(idx[-1] - idx[0] + 1) if idx.size else 0


def _ratio(cup: float, disc: float) -> float:
    return cup / disc if disc else float("nan")


def vertical_cdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """(H, W) disc, (H, W) cup -> cup rows spanned / disc rows spanned (max_row - min_row + 1).
    NaN if the disc is empty."""
    d, c = as_mask_pair(disc, cup)
    return _ratio(_extent(c, 0), _extent(d, 0))


def horizontal_cdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """(H, W) disc, (H, W) cup -> cup columns spanned / disc columns spanned. NaN if the disc is empty."""
    d, c = as_mask_pair(disc, cup)
    return _ratio(_extent(c, 1), _extent(d, 1))


def area_cdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """(H, W) disc, (H, W) cup -> cup pixel count / disc pixel count. NaN if the disc is empty."""
    d, c = as_mask_pair(disc, cup)
    return _ratio(int(c.sum()), int(d.sum()))


def _outer_distance(mask: np.ndarray, cy: float, cx: float, angles: np.ndarray) -> np.ndarray:
    """Distance from (cy, cx) along each ray to where it last leaves ``mask`` (0 if it never meets it).

    mask (H, W) bool; angles (R,) radians -> (R,) float px. Pixels are unit squares (a sample at
    (y, x) reads pixel (floor(y + 0.5), floor(x + 0.5))), so a radius-r raster disc measures about
    r + 0.5; taking differences of two such distances cancels that half pixel."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return np.zeros(angles.shape)
    t_max = float(np.hypot(rows - cy, cols - cx).max()) + 1.0  # no pixel lies farther out
    t = np.arange(0.0, t_max + _STEP, _STEP)  # (T,)
    ys = np.floor(cy + np.sin(angles)[:, None] * t + 0.5).astype(np.int64)  # (R, T)
    xs = np.floor(cx + np.cos(angles)[:, None] * t + 0.5).astype(np.int64)
    valid = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    inside = np.zeros(ys.shape, dtype=bool)
    inside[valid] = mask[ys[valid], xs[valid]]
    hit = inside.any(axis=1)
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)  # last inside sample per ray
    return np.where(hit, t[last] + _STEP / 2, 0.0)


def _nasal_side(eye: str, disc_cx: float, width: int) -> str | None:
    """'left' or 'right' side of the image that is nasal, or None when it cannot be told."""
    if eye == "OD":
        return "right"
    if eye == "OS":
        return "left"
    if eye == "crop":  # disc-centred: no macula in view to tell the sides apart
        return None
    centre = (width - 1) / 2
    if disc_cx == centre:
        return None
    # In a macula-centred photograph the disc sits nasally, so its nasal side faces away from the
    # image centre.
    return "right" if disc_cx > centre else "left"


def isnt_rim_widths(
    disc: np.ndarray, cup: np.ndarray, eye: str = "unknown"
) -> dict[str, float | bool]:
    """(H, W) disc, (H, W) cup -> mean neuroretinal rim width (px) in the four ISNT sectors.

    From the disc centroid, one ray per degree; a ray's rim width is the distance to where it last
    leaves the disc minus the distance to where it last leaves the cup (0 if it misses the cup, so an
    empty cup gives the full disc radius). A sector's width is the mean over the 91 rays within +/-45
    degrees of its axis: inferior = +row (down in the image), superior = -row (up). A cup reaching
    outside the disc can give negative widths; clean the masks first.

    Nasal and temporal: ``eye`` "OD" (right eye) puts nasal on the right of the image, "OS" (left
    eye) on the left, as in a standard (non-inverted) fundus photograph. With "unknown", nasal is
    the side of the disc farther from the image centre, since the disc lies nasal to the macula in a
    macula-centred photograph; this guess is wrong for disc-centred images, so pass the eye when it
    is known; "crop" (a disc-centred image, eye unknown) leaves nasal and temporal NaN, as does a
    disc centroid exactly on the image's middle column.

    Returns {"inferior", "superior", "nasal", "temporal", "left", "right": float px,
    "isnt_rule": bool, True iff inferior >= superior >= nasal >= temporal}. All widths are NaN (and
    isnt_rule False) if the disc is empty."""
    if eye not in EYES:
        raise BiounetError(f"eye must be one of {EYES}, got {eye!r}")
    d, c = as_mask_pair(disc, cup)
    out: dict[str, float | bool] = {}
    if not d.any():
        out = dict.fromkeys(
            ("inferior", "superior", "nasal", "temporal", "left", "right"), math.nan
        )
        out["isnt_rule"] = False
        return out
    rows, cols = np.nonzero(d)
    cy, cx = float(rows.mean()), float(cols.mean())
    angles = np.deg2rad(np.arange(360))
    rim = _outer_distance(d, cy, cx, angles) - _outer_distance(c, cy, cx, angles)  # (360,)
    offsets = np.arange(-_HALF_SECTOR, _HALF_SECTOR + 1)
    sectors = {name: float(rim[(axis + offsets) % 360].mean()) for name, axis in _AXES.items()}
    nasal = _nasal_side(eye, cx, d.shape[1])
    temporal = {"left": "right", "right": "left"}.get(nasal or "")
    out["inferior"], out["superior"] = sectors["inferior"], sectors["superior"]
    out["nasal"] = sectors[nasal] if nasal else math.nan
    out["temporal"] = sectors[temporal] if temporal else math.nan
    out["left"], out["right"] = sectors["left"], sectors["right"]
    i, s, n, t = (float(out[k]) for k in ("inferior", "superior", "nasal", "temporal"))
    out["isnt_rule"] = bool(i >= s >= n >= t)  # False when nasal/temporal are NaN
    return out


def clinical_measures(
    disc: np.ndarray, cup: np.ndarray, eye: str = "unknown"
) -> dict[str, float | int | bool]:
    """(H, W) disc, (H, W) cup -> one flat row of measures for one image, in pixels.

    Keys: vcdr, hcdr, acdr; disc_area_px, cup_area_px; disc_height_px, cup_height_px,
    disc_width_px, cup_width_px (rows / columns spanned); rim_inferior, rim_superior, rim_nasal,
    rim_temporal, rim_left, rim_right (see ``isnt_rim_widths``); isnt_rule."""
    d, c = as_mask_pair(disc, cup)
    row: dict[str, float | int | bool] = {
        "vcdr": vertical_cdr(d, c),
        "hcdr": horizontal_cdr(d, c),
        "acdr": area_cdr(d, c),
        "disc_area_px": int(d.sum()),
        "cup_area_px": int(c.sum()),
        "disc_height_px": _extent(d, 0),
        "cup_height_px": _extent(c, 0),
        "disc_width_px": _extent(d, 1),
        "cup_width_px": _extent(c, 1),
    }
    rims = isnt_rim_widths(d, c, eye)
    for k in ("inferior", "superior", "nasal", "temporal", "left", "right"):
        row[f"rim_{k}"] = rims[k]
    row["isnt_rule"] = rims["isnt_rule"]
    return row
