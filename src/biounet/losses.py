"""Loss maths as pure functions; logits in, sigmoid applied here and nowhere else in training."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def soft_dice_per_image(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Dice of sigmoid(logits) vs target. (B, L, H, W) float logits, (B, L, H, W) {0,1} -> (B, L).
    ``weight``: (H, W) how much each pixel counts (mean 1; None = all alike)."""
    p = torch.sigmoid(logits.float())
    t = target.float()
    w = 1.0 if weight is None else weight.to(p.device, p.dtype)
    inter = (p * t * w).sum(dim=(2, 3))
    denom = (p * w).sum(dim=(2, 3)) + (t * w).sum(dim=(2, 3))
    return (2 * inter + smooth) / (denom + smooth)


def bce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """bce_weight * BCE-with-logits (mean over pixels) + dice_weight * (1 - mean soft Dice per image and label).
    (B, L, H, W) logits and targets -> scalar. ``pixel_weight``: (H, W), mean 1, each pixel's share
    in both terms (``pixel_weights``); None = all alike."""
    w = None if pixel_weight is None else pixel_weight.to(logits.device, torch.float32)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), weight=w)
    dice = soft_dice_per_image(logits, target, weight=w).mean()
    return bce_weight * bce + dice_weight * (1 - dice)


PIXEL_WEIGHTS = ("uniform", "polar_area")


@lru_cache(maxsize=8)
def pixel_weights(kind: str, h: int, w: int) -> torch.Tensor | None:
    """(H, W) loss weights of mean 1, or None for "uniform". "polar_area": for polar images (rows
    = radius, ``biounet.fundus.polar``), row i weighs (i + 0.5) / H x 2, the area of the Cartesian
    crop its pixels stand for, so the loss counts the crop as a Cartesian loss would; without it
    the pixels near the centre (the cup) count as much as the far larger ring at the disc's edge.
    Made once per kind and size (every training batch asks for it): never modify the result."""
    if kind == "uniform":
        return None
    if kind == "polar_area":
        r = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        return (r / r.mean())[:, None].expand(h, w)
    raise ValueError(f"unknown pixel weighting {kind!r}; valid: {', '.join(PIXEL_WEIGHTS)}")


def article_dice_loss_pooled(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """What the article logged as "dice": 1 - soft Dice pooled over the whole batch and all labels.
    (B, L, H, W) -> scalar. Lower is better; it is a loss, not a Dice score."""
    p = torch.sigmoid(logits.float()).flatten()
    t = target.float().flatten()
    return 1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


def article_iou_pooled(
    logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """The article's IoU: thresholded predictions vs target pooled over the batch and all labels. -> scalar."""
    pred = torch.sigmoid(logits.float()) > threshold
    t = target > 0.5
    inter = (pred & t).sum().float()
    union = (pred | t).sum().float()
    return inter / union if union > 0 else torch.tensor(1.0)
