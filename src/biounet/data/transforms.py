"""Geometry (pad to square, resize, undo), normalisation and paired augmentation.

Augmentation works on whole batches with torch ops: one affine warp (flip, rotation, scale,
shift) is applied to image (bilinear) and masks (nearest), so masks stay binary and aligned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Geometry:
    """How an (h, w) image was padded to a ``side`` square (offsets ``top``, ``left``) and resized to
    ``size``: enough to map network outputs back to the original pixels."""

    h: int
    w: int
    top: int
    left: int
    side: int
    size: int


def square_geometry(h: int, w: int, size: int) -> Geometry:
    side = max(h, w)
    return Geometry(h, w, (side - h) // 2, (side - w) // 2, side, size)


def to_network(arr: np.ndarray, geo: Geometry, is_mask: bool) -> torch.Tensor:
    """(H, W, C) uint8 image or (L, H, W) uint8 mask -> (C|L, size, size) uint8, centred on a zero square.
    Images use area/bilinear resampling, masks nearest so they stay binary."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if not is_mask:
        t = t.permute(2, 0, 1)
    c = t.shape[0]
    sq = torch.zeros((c, geo.side, geo.side), dtype=torch.uint8)
    sq[:, geo.top : geo.top + geo.h, geo.left : geo.left + geo.w] = t
    if geo.side == geo.size:
        return sq
    x = sq[None].float()
    if is_mask:
        y = F.interpolate(x, size=(geo.size, geo.size), mode="nearest")
    else:
        mode = "area" if geo.side > geo.size else "bilinear"
        y = F.interpolate(x, size=(geo.size, geo.size), mode=mode)
    return y[0].round().clamp(0, 255).to(torch.uint8)


def from_network(prob: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """(L, size, size) float probabilities -> (L, h, w) at the original resolution (bilinear)."""
    x = prob[None].float()
    if geo.side != geo.size:
        x = F.interpolate(x, size=(geo.side, geo.side), mode="bilinear", align_corners=False)
    return x[0, :, geo.top : geo.top + geo.h, geo.left : geo.left + geo.w]


def normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per image, per channel z-score. (B, C, H, W) uint8 or float -> (B, C, H, W) float32.
    Per-image statistics make the input independent of camera gain and exposure. A one-pixel
    image (no spread to measure) becomes 0."""
    x = x.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, correction=1 if x.shape[2] * x.shape[3] > 1 else 0)
    return (x - mean) / (std + eps)


# ITU-R BT.601 luminance weights of R, G, B: grey images from RGB ones, here and in augmentation
LUMA = (0.299, 0.587, 0.114)


def match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) -> (H, W, channels): grey is repeated to RGB, RGB becomes luminance for 1 channel."""
    c = img.shape[-1]
    if c == channels:
        return img
    if c == 1 and channels == 3:
        return np.repeat(img, 3, axis=-1)
    if c == 3 and channels == 1:
        lum = img.astype(np.float32) @ np.array(LUMA, dtype=np.float32)
        return np.clip(lum + 0.5, 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"cannot map {c} image channels to {channels}")


@dataclass(frozen=True)
class AugmentParams:
    flip: bool = True
    rotate_deg: float = 20.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.05
    brightness: float = 0.15
    contrast: float = 0.15
    gamma: float = 0.2


def random_affine(b: int, p: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) affine matrices in normalised coordinates: flips, rotation, isotropic scale, shift."""

    def uni(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    ang = uni(-p.rotate_deg, p.rotate_deg) * math.pi / 180
    s = uni(*p.scale)
    fx = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if p.flip else torch.ones(b)
    fy = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if p.flip else torch.ones(b)
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * fx, -sin * fy
    theta[:, 1, 0], theta[:, 1, 1] = sin * fx, cos * fy
    theta[:, :, 2] = uni(-p.shift, p.shift)[:, None] * 2
    return theta


def augment_batch(
    img: torch.Tensor, mask: torch.Tensor, p: AugmentParams, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """img (B, C, S, S) uint8, mask (B, L, S, S) uint8 {0,1} -> float img in [0, 1], float mask in {0, 1}."""
    b = img.shape[0]
    theta = random_affine(b, p, gen)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    x = F.grid_sample(
        img.float() / 255.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    y = F.grid_sample(mask.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return photometric(x, p, gen), y


def photometric(x: torch.Tensor, p: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Random gamma, contrast and brightness per image. (B, C, H, W) float in [0, 1] -> same."""
    b = x.shape[0]
    gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * p.gamma)
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * p.contrast
    bright = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * p.brightness
    return (x.clamp(0, 1) ** gamma * contrast + bright).clamp(0, 1)
