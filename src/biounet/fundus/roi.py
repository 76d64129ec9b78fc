"""Regions of interest around the optic disc: where the disc is, square crops around it (with
augmentation for training), and pasting ROI predictions back into the full image.

Coordinates are pixel centres: pixel (r, c) of an (H, W) image sits at y = r, x = c. A ROI is a
square of side ``side`` pixels centred on (cy, cx), sampled onto an (R, R) grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from biounet.fundus.polar import pad_angle, polar_coords


@dataclass(frozen=True)
class Roi:
    cy: float
    cx: float
    side: float


def disc_roi(
    disc: np.ndarray, scale: float = 2.0, min_side: float = 32.0, score: np.ndarray | None = None
) -> Roi | None:
    """(H, W) bool disc mask -> square ROI centred on one component's bounding-box centre, side =
    ``scale`` x that component's larger extent. The component is the largest, or with ``score``
    ((H, W) float) the one of highest ``disc_component_score``. None when the mask is empty."""
    lab, n = ndimage.label(disc)
    if n == 0:
        return None
    idx = np.arange(1, n + 1)
    if score is None:
        values = ndimage.sum_labels(np.ones_like(lab), lab, index=idx)
    else:
        values = np.array([disc_component_score(lab == i, score) for i in idx])
    rows, cols = np.nonzero(lab == int(np.argmax(values)) + 1)
    cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    return Roi(float(cy), float(cx), max(min_side, float(extent) * scale))


def disc_component_score(comp: np.ndarray, score: np.ndarray) -> float:
    """How disc-like a candidate component is: its ``score`` mass (e.g. disc probability plus cup
    probability, since a real disc holds a cup) times its roundness, area / (larger extent)^2
    (pi/4 for a disc), so a compact blob beats a long bright streak along the edge of the field of
    view of the same area."""
    rows, cols = np.nonzero(comp)
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    return float(score[comp].sum()) * float(comp.sum()) / float(extent) ** 2


def roi_theta(
    rois: list[Roi],
    hw: list[tuple[int, int]],
    angle: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 2, 3) affine matrices for ``F.affine_grid(..., align_corners=False)`` that sample each ROI
    (optionally rotated by ``angle`` radians and flipped: ``flip`` (B, 2) of +-1 for x, y) out of an
    image whose valid part is (h, w) but which may sit padded at the top-left of a larger tensor
    (H_t, W_t given in ``hw`` as the tensor size, since grid coordinates refer to the tensor)."""
    b = len(rois)
    angle = torch.zeros(b) if angle is None else angle
    flip = torch.ones(b, 2) if flip is None else flip
    theta = torch.zeros(b, 2, 3)
    for i, (r, (h, w)) in enumerate(zip(rois, hw, strict=True)):
        c, s = math.cos(float(angle[i])), math.sin(float(angle[i]))
        half = r.side / 2
        # offset in pixels = R @ diag(half * flip) @ (u, v); normalised = 2 * offset / size
        theta[i, 0, 0] = 2 / w * c * half * flip[i, 0]
        theta[i, 0, 1] = 2 / w * -s * half * flip[i, 1]
        theta[i, 1, 0] = 2 / h * s * half * flip[i, 0]
        theta[i, 1, 1] = 2 / h * c * half * flip[i, 1]
        theta[i, 0, 2] = (2 * r.cx + 1) / w - 1
        theta[i, 1, 2] = (2 * r.cy + 1) / h - 1
    return theta


def crop_rois(
    images: torch.Tensor,
    theta: torch.Tensor,
    size: int,
    mode: str = "bilinear",
    padding: str = "zeros",
) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, size, size) sampled through ``theta``; outside the image is 0
    (``padding="zeros"``) or the image mirrored at its edges (``"reflection"``)."""
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=False)


def crop_roi_windows(
    images: torch.Tensor | Sequence[torch.Tensor],
    rois: list[Roi],
    size: int,
    mode: str = "bilinear",
    angle: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
    scale: float = 1.0,
    padding: str = "zeros",
) -> torch.Tensor:
    """Like ``crop_rois(images.float() * scale, roi_theta(rois, ...), size)`` for (B, C, H, W) images of
    any dtype, but each sample converts to float only the window its (rotated) ROI can reach, not the
    whole image: the same result at a fraction of the cost on full-resolution photographs.
    ``images`` may also be a sequence of B (C, H_k, W_k) images of different sizes.
    Returns (B, C, size, size) float."""
    b = len(rois)
    angle = torch.zeros(b) if angle is None else angle
    flip = torch.ones(b, 2) if flip is None else flip
    out = []
    for k, r in enumerate(rois):
        h, w = images[k].shape[-2:]
        half = r.side / math.sqrt(2) + 2  # a rotated square's corners, plus the bilinear neighbours
        y0, y1 = max(0, math.floor(r.cy - half)), min(h, math.ceil(r.cy + half) + 1)
        x0, x1 = max(0, math.floor(r.cx - half)), min(w, math.ceil(r.cx + half) + 1)
        if y1 <= y0 or x1 <= x0:  # the ROI lies wholly outside the image
            out.append(torch.zeros((images[k].shape[0], size, size)))
            continue
        win = images[k][:, y0:y1, x0:x1].float()[None]
        if scale != 1.0:
            win = win * scale
        theta = roi_theta(
            [Roi(r.cy - y0, r.cx - x0, r.side)],
            [(y1 - y0, x1 - x0)],
            angle[k : k + 1],
            flip[k : k + 1],
        )
        out.append(crop_rois(win, theta, size, mode, padding)[0])
    return torch.stack(out)


def roi_window(
    roi: Roi, h: int, w: int
) -> tuple[tuple[slice, slice], torch.Tensor, torch.Tensor] | None:
    """The window of an (h, w) image that ``roi`` covers, and the ROI-normalised coordinates
    (grid_sample's, align_corners=False: -1 and 1 are the ROI's outer edges) x and y, each
    (wh, ww), of the window's pixel centres; None when the ROI lies wholly outside the image."""
    half = roi.side / 2
    y0, y1 = max(0, math.floor(roi.cy - half)), min(h, math.ceil(roi.cy + half) + 1)
    x0, x1 = max(0, math.floor(roi.cx - half)), min(w, math.ceil(roi.cx + half) + 1)
    if y1 <= y0 or x1 <= x0:
        return None
    v = (torch.arange(y0, y1, dtype=torch.float32) - roi.cy) / half
    u = (torch.arange(x0, x1, dtype=torch.float32) - roi.cx) / half
    yy, xx = torch.meshgrid(v, u, indexing="ij")
    return (slice(y0, y1), slice(x0, x1)), xx, yy


def paste_roi(prob: torch.Tensor, roi: Roi, h: int, w: int) -> np.ndarray:
    """(L, R, R) ROI probabilities -> (L, h, w) full-image probabilities (0 outside the ROI), bilinear."""
    out = np.zeros((prob.shape[0], h, w), dtype=np.float32)
    win = roi_window(roi, h, w)
    if win is None:
        return out
    where, xx, yy = win
    grid = torch.stack([xx, yy], dim=-1)[None]
    sampled = F.grid_sample(
        prob[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    out[:, where[0], where[1]] = sampled[0].numpy()
    return out


def paste_polar(
    polar: torch.Tensor, flips: Sequence[tuple[int, ...]], roi: Roi, h: int, w: int
) -> np.ndarray:
    """(F, L, S, S) polar probabilities of the ROI's crop flipped by each of ``flips`` (dims -1: x,
    -2: y; () none) -> (L, h, w) their mean in the full image, each full-image pixel read straight
    from the polar maps (one bilinear resampling; going through the (S, S) Cartesian crop would add
    a second one, blurring the disc's edge, which the polar map resolves 4x finer radially than
    the crop does). 0 outside the ROI's square; its corners beyond the inscribed circle take the
    outermost ring, as ``from_polar`` does."""
    out = np.zeros((polar.shape[1], h, w), dtype=np.float32)
    win = roi_window(roi, h, w)
    if win is None:
        return out
    where, xx, yy = win
    size = polar.shape[-1]
    grids = []
    for f in flips:  # a pixel at (x, y) of the crop sits at (-x, y) of the crop flipped in x
        gx, gy = (-xx if -1 in f else xx), (-yy if -2 in f else yy)
        grids.append(polar_coords(gx, gy, size))
    sampled = F.grid_sample(
        pad_angle(polar),
        torch.stack(grids),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    ).mean(0)
    inside = (xx.abs() <= 1) & (yy.abs() <= 1)
    out[:, where[0], where[1]] = (sampled * inside).numpy()
    return out
