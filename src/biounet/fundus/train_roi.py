"""Training the fundus pipeline's second stage: disc + cup segmentation on disc-centred crops.

Training crops are centred on the ground-truth disc with random jitter of centre and scale (so the
model tolerates the locator's errors), rotation and flips; validation crops are centred exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from biounet.config import RunConfig
from biounet.data.dataset import ArrayDataset, load_masks
from biounet.data.folder import Sample
from biounet.data.io import read_image
from biounet.data.transforms import AugmentParams, match_channels, photometric
from biounet.errors import BiounetError
from biounet.fundus.roi import Roi, crop_roi_windows, disc_roi


@dataclass
class FullSet:
    """Full-resolution images padded top-left into one tensor: images (N, C, H, W) uint8, masks
    (N, L, H, W) uint8 {0,1}, the ground-truth disc ROI of each, and each image's true (h, w)."""

    stems: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    rois: list[Roi]
    sizes: list[tuple[int, int]]


def load_full(
    samples: list[Sample],
    labels: tuple[str, ...],
    channels: int,
    roi_scale: float,
    disc_label: str = "disc",
) -> FullSet:
    if disc_label not in labels:
        raise BiounetError(f"the fundus pipeline needs a {disc_label!r} label; got {labels}")
    imgs = [match_channels(read_image(s.image), channels) for s in samples]
    masks = [load_masks(s, labels, (), im.shape[:2]) for s, im in zip(samples, imgs, strict=True)]
    h = max(im.shape[0] for im in imgs)
    w = max(im.shape[1] for im in imgs)
    t_img = torch.zeros((len(imgs), channels, h, w), dtype=torch.uint8)
    t_mask = torch.zeros((len(imgs), len(labels), h, w), dtype=torch.uint8)
    rois = []
    d = labels.index(disc_label)
    for i, (im, m, s) in enumerate(zip(imgs, masks, samples, strict=True)):
        t_img[i, :, : im.shape[0], : im.shape[1]] = torch.from_numpy(im).permute(2, 0, 1)
        t_mask[i, :, : im.shape[0], : im.shape[1]] = torch.from_numpy(m)
        roi = disc_roi(m[d] > 0, roi_scale)
        if roi is None:
            raise BiounetError(
                f"{s.masks[disc_label]}: empty disc mask; the ROI stage needs a disc in every image"
            )
        rois.append(roi)
    return FullSet([s.stem for s in samples], t_img, t_mask, rois, [im.shape[:2] for im in imgs])


def roi_batches(
    full: FullSet,
    cfg: RunConfig,
    gen: torch.Generator,
    jitter: float = 0.08,
    scale: tuple[float, float] = (0.8, 1.25),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented ROI batches: x (B, C, S, S) float in [0, 1], y (B, L, S, S) {0, 1}."""
    n, bs, size = len(full.stems), cfg.train.batch_size, cfg.data.image_size
    order = torch.randperm(n, generator=gen)
    if n % bs == 1 and n > bs:
        order = order[:-1]
    p = AugmentParams()
    for i in range(0, len(order), bs):
        idx = order[i : i + bs].tolist()
        b = len(idx)
        r = torch.rand(b, 4, generator=gen)
        rois = []
        for k, j in enumerate(idx):
            g = full.rois[j]
            side = g.side * math.exp(
                math.log(scale[0]) + r[k, 0].item() * math.log(scale[1] / scale[0])
            )
            rois.append(
                Roi(
                    g.cy + (r[k, 1].item() * 2 - 1) * jitter * g.side,
                    g.cx + (r[k, 2].item() * 2 - 1) * jitter * g.side,
                    side,
                )
            )
        angle = (
            (torch.rand(b, generator=gen) * 2 - 1) * math.radians(p.rotate_deg)
            if cfg.data.augment
            else None
        )
        flip = (
            torch.where(torch.rand(b, 2, generator=gen) < 0.5, -1.0, 1.0)
            if cfg.data.augment
            else None
        )
        x = crop_roi_windows(full.images[idx], rois, size, "bilinear", angle, flip, scale=1 / 255)
        y = crop_roi_windows(full.masks[idx], rois, size, "nearest", angle, flip)
        yield (photometric(x, p, gen) if cfg.data.augment else x), y


def roi_arrays(full: FullSet, size: int) -> ArrayDataset:
    """Ground-truth-centred crops, no augmentation, as uint8 arrays (for validation)."""
    x = crop_roi_windows(full.images, full.rois, size).round().clamp(0, 255).to(torch.uint8)
    y = crop_roi_windows(full.masks, full.rois, size, "nearest").to(torch.uint8)
    return ArrayDataset(list(full.stems), x, y, [])


def n_batches(full: FullSet, batch_size: int) -> int:
    return math.ceil(len(full.stems) / batch_size)


def gt_rois_array(full: FullSet) -> np.ndarray:
    return np.array([[r.cy, r.cx, r.side] for r in full.rois])
