"""Loss maths as pure functions; logits in, sigmoid applied here and nowhere else in training."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_per_image(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice of sigmoid(logits) vs target. (B, L, H, W) float logits, (B, L, H, W) {0,1} -> (B, L)."""
    p = torch.sigmoid(logits.float())
    t = target.float()
    inter = (p * t).sum(dim=(2, 3))
    denom = p.sum(dim=(2, 3)) + t.sum(dim=(2, 3))
    return (2 * inter + smooth) / (denom + smooth)


def bce_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0, dice_weight: float = 1.0
) -> torch.Tensor:
    """bce_weight * BCE-with-logits (mean over pixels) + dice_weight * (1 - mean soft Dice per image and label).
    (B, L, H, W) logits and targets -> scalar."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    dice = soft_dice_per_image(logits, target).mean()
    return bce_weight * bce + dice_weight * (1 - dice)


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
