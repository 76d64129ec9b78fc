"""The U-Net paper's elastic deformation (Ronneberger et al. 2015, section 3.1): random
displacement vectors on a coarse grid, drawn from N(0, std_px^2) pixels, upsampled to per-pixel
displacements by bicubic interpolation and applied to image (bilinear) and masks (nearest), so the
masks stay binary and aligned with the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING_MODES = ("reflection", "border", "zeros")


def elastic_displacement(
    b: int, h: int, w: int, gen: torch.Generator, grid: int = 3, std_px: float = 10.0
) -> torch.Tensor:
    """-> (B, 2, H, W) float32 displacements in pixels, channel 0 along x (width), 1 along y.

    A (B, 2, grid, grid) N(0, std_px^2) field, bicubic-upsampled with align_corners=True: the coarse
    vectors sit exactly on the image corners and edges' evenly spaced points. Random numbers come
    from ``gen`` on the CPU, so a seed gives the same field on any device.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2 control points per side, got {grid}")
    if std_px < 0:
        raise ValueError(f"std_px must be >= 0, got {std_px}")
    coarse = torch.randn(b, 2, grid, grid, generator=gen) * std_px
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)


def elastic_deform(
    img: torch.Tensor,
    mask: torch.Tensor,
    gen: torch.Generator,
    grid: int = 3,
    std_px: float = 10.0,
    padding_mode: str = "reflection",
) -> tuple[torch.Tensor, torch.Tensor]:
    """img (B, C, H, W) float, mask (B, L, H, W) float {0,1} -> the same shapes, warped by one
    random smooth field per sample (shared by image and mask).

    Output pixel x reads the input at x + displacement(x). Image: bilinear; mask: nearest, so its
    values stay in the input's set. Outside the image ``padding_mode`` applies to both (reflection
    by default, matching the paper's mirrored tiles). std_px = 0 is the identity.
    """
    if img.ndim != 4 or mask.ndim != 4:
        raise ValueError(
            f"img and mask must be 4-D, got {tuple(img.shape)} and {tuple(mask.shape)}"
        )
    if img.shape[0] != mask.shape[0] or img.shape[2:] != mask.shape[2:]:
        raise ValueError(
            f"img (B, C, H, W) {tuple(img.shape)} and mask (B, L, H, W) {tuple(mask.shape)} differ in B, H or W"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    b, _, h, w = img.shape
    disp = elastic_displacement(b, h, w, gen, grid, std_px).to(img.device)  # (B, 2, H, W) px
    # align_corners=True: normalised -1 and 1 are the centres of the first and last pixels.
    ys = torch.linspace(-1.0, 1.0, h, device=img.device)
    xs = torch.linspace(-1.0, 1.0, w, device=img.device)
    base_y, base_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    gx = base_x + disp[:, 0] * (2.0 / max(w - 1, 1))
    gy = base_y + disp[:, 1] * (2.0 / max(h - 1, 1))
    field = torch.stack((gx, gy), dim=-1)  # (B, H, W, 2) as grid_sample wants: x then y
    x = F.grid_sample(
        img.float(), field, mode="bilinear", padding_mode=padding_mode, align_corners=True
    )
    y = F.grid_sample(
        mask.float(), field, mode="nearest", padding_mode=padding_mode, align_corners=True
    )
    return x, y
