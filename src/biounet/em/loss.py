"""The U-Net paper's training loss (Ronneberger et al. 2015, eq. 1): a pixel-wise softmax over
the K classes and a cross-entropy weighted per pixel, e.g. by ``biounet.em.weightmap``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """logits (B, K, H, W) float, target (B, H, W) int64 class indices in [0, K), weight (B, H, W)
    float -> scalar: mean over all B*H*W pixels of weight * (-log softmax(logits)[target]).

    A plain mean, not divided by the sum of weights, so the weight map scales the gradient as in
    the paper's energy function.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    b, _, h, w = logits.shape
    if tuple(target.shape) != (b, h, w):
        raise ValueError(f"target shape {tuple(target.shape)} != (B, H, W) {(b, h, w)}")
    if tuple(weight.shape) != (b, h, w):
        raise ValueError(f"weight shape {tuple(weight.shape)} != (B, H, W) {(b, h, w)}")
    if target.dtype != torch.int64:
        raise ValueError(f"target must be int64 class indices, got {target.dtype}")
    ce = F.cross_entropy(logits.float(), target, reduction="none")  # (B, H, W)
    return (weight.float() * ce).mean()
