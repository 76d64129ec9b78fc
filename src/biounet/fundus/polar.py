"""Polar resampling of disc-centred crops (as in M-Net, Fu et al. 2018): in polar coordinates
around the crop's centre the cup, the rim and the background become horizontal bands stacked from
top to bottom, the cup fills a larger share of the image, and the cup-inside-disc layout is the same
in every image.

Polar image (R, R) of a square crop (R, R): row i holds radius r_i = (i + 0.5) / R (x the crop's half
side, centre at the top, the inscribed circle's edge at the bottom), column j the angle
theta_j = 2 pi (j + 0.5) / R, counter-clockwise from the +x axis (image x right, y down). Coordinates
follow ``F.grid_sample(align_corners=False)``: -1 and 1 are the crop's outer pixel edges.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=8)
def polar_grid(size: int) -> torch.Tensor:
    """(1, size, size, 2) grid_sample coordinates (x, y) in the Cartesian crop of each polar pixel
    (made once per size: every training batch and every crop read uses it; never modify it)."""
    r = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    theta = 2 * math.pi * (torch.arange(size, dtype=torch.float32) + 0.5) / size
    rr, tt = torch.meshgrid(r, theta, indexing="ij")
    return torch.stack([rr * torch.cos(tt), rr * torch.sin(tt)], dim=-1)[None]


@lru_cache(maxsize=8)
def cartesian_grid(size: int) -> torch.Tensor:
    """(1, size, size, 2) grid_sample coordinates (x, y) in the circularly padded polar image
    ((size, size + 2): its last column before the first and its first after the last) of each
    Cartesian crop pixel: the inverse of ``polar_grid``. Beyond the inscribed circle (the crop's
    corners) it points past the last row. Made once per size, like ``polar_grid``."""
    c = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1  # pixel centres in [-1, 1]
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return polar_coords(xx, yy, size)[None]


def polar_coords(x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Points (x, y) of a crop in grid_sample coordinates (any equal shapes S) -> (*S, 2) their
    coordinates in the circularly padded (size, size + 2) polar image (see ``cartesian_grid``)."""
    r = torch.sqrt(x**2 + y**2)
    theta = torch.atan2(y, x) % (2 * math.pi)
    row = r * size - 0.5  # polar pixel index (float) of radius r
    col = theta / (2 * math.pi) * size - 0.5 + 1  # +1: the padded column in front
    v = (2 * row + 1) / size - 1
    u = (2 * col + 1) / (size + 2) - 1
    return torch.stack([u, v], dim=-1)


def pad_angle(p: torch.Tensor) -> torch.Tensor:
    """(..., S, S) polar images -> (..., S, S + 2) float: the last column copied before the first
    and the first after the last, so bilinear sampling wraps around the angle."""
    return torch.cat([p[..., -1:], p, p[..., :1]], dim=-1).float()


def to_polar(x: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """(B, C, S, S) Cartesian crops -> (B, C, S, S) polar images (see the module docstring);
    ``mode="nearest"`` for masks."""
    b, _, h, w = x.shape
    if h != w:
        raise ValueError(f"polar resampling needs square crops; got {w}x{h}")
    grid = polar_grid(h).to(x.device).expand(b, -1, -1, -1)
    return F.grid_sample(x.float(), grid, mode=mode, padding_mode="border", align_corners=False)


def from_polar(p: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) polar images -> (B, C, S, S) Cartesian crops, bilinear; the angle wraps around
    (no seam at theta = 0), the crop's corners beyond the inscribed circle take the outermost ring."""
    b, _, h, w = p.shape
    if h != w:
        raise ValueError(f"polar images must be square; got {w}x{h}")
    grid = cartesian_grid(h).to(p.device).expand(b, -1, -1, -1)
    return F.grid_sample(
        pad_angle(p), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
