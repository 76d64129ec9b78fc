"""Training the fundus pipeline's second stage: disc + cup segmentation on disc-centred crops.

Training crops are centred on the ground-truth disc with random jitter of centre and scale (so the
model tolerates the locator's errors), rotation and flips; validation crops are centred exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from biounet.config import RunConfig
from biounet.data.camera import appearance_augment
from biounet.data.dataset import ArrayDataset, load_masks, sample_weights
from biounet.data.folder import Sample
from biounet.data.io import orientation_note, read_image
from biounet.data.sources import batch_order
from biounet.data.transforms import AugmentParams, match_channels, photometric
from biounet.errors import BiounetError
from biounet.fundus.polar import to_polar
from biounet.fundus.roi import Roi, crop_roi_windows, disc_roi


@dataclass
class FullSet:
    """Per image, the window of the full-resolution photograph that any training crop can reach
    (images (C, h, w) uint8, masks (L, h, w) uint8 {0,1}, each its own size), the ground-truth disc
    ROI in window coordinates, and the sampling weights (N,) or None. Keeping windows rather than
    whole photographs lets datasets of any resolution mix at a few MB per image. With soft targets
    the masks hold the annotators' agreement (uint8 0..255) and ``mask_scale`` is 1/255."""

    stems: list[str]
    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    rois: list[Roi]
    weights: torch.Tensor | None = None
    mask_scale: float = 1.0


# Training crops: side = ROI side x a log-uniform factor in SCALE_JITTER, centre jittered by JITTER x
# the ROI side, rotated: a crop stays within ROI side x window_half(SCALE_JITTER[1]) of the disc centre.
SCALE_JITTER = (0.8, 1.25)
JITTER = 0.08


def window_half(max_scale: float, jitter: float = JITTER) -> float:
    """Half-side of the window around the disc, x the ROI side, that a crop of up to ``max_scale`` x
    the ROI side, rotated and shifted by ``jitter``, can reach: max_scale / sqrt(2) + jitter (at
    least 1.0, the window kept before the jitter became a setting)."""
    return max(1.0, max_scale / math.sqrt(2) + jitter)


def soft_map_path(mask: Path, label: str) -> Path:
    """``<root>/masks/<label>/<file>`` -> ``<root>/softmaps/<label>/<file>``: the annotators'
    agreement map of that mask (uint8, 255 x the share of annotators who marked the pixel; e.g.
    Drishti-GS1's 0/64/128/191/255 for 0-4 of 4 experts)."""
    return mask.parent.parent.parent / "softmaps" / label / mask.name


def check_soft_maps(samples: list[Sample], labels: tuple[str, ...]) -> None:
    """Raise, naming the first missing file, unless every sample has an agreement map per label
    (checked before any training starts)."""
    for s in samples:
        for lb in labels:
            path = soft_map_path(s.masks[lb], lb)
            if not path.is_file():
                raise BiounetError(
                    f"{path}: soft targets need an agreement map for every mask; not found"
                )


def read_soft_maps(sample: Sample, labels: tuple[str, ...], hw: tuple[int, int]) -> np.ndarray:
    """(L, H, W) uint8 0..255 agreement maps of ``sample`` (see ``soft_map_path``); a missing map or a
    size mismatch names the file."""
    out = np.zeros((len(labels), *hw), dtype=np.uint8)
    for i, lb in enumerate(labels):
        path = soft_map_path(sample.masks[lb], lb)
        check_soft_maps([sample], (lb,))
        m = read_image(path)
        if m.shape[:2] != hw or m.shape[2] != 1:
            raise BiounetError(
                f"{path}: agreement map must be one grey channel of {hw[1]}x{hw[0]} (WxH) like "
                f"its image; got {m.shape[1]}x{m.shape[0]}x{m.shape[2]}"
                + orientation_note(sample.image, path)
            )
        out[i] = m[..., 0]
    return out


def load_full(
    samples: list[Sample],
    labels: tuple[str, ...],
    channels: int,
    roi_scale: float,
    disc_label: str = "disc",
    max_scale: float = SCALE_JITTER[1],
    soft: bool = False,
) -> FullSet:
    """Windows around each sample's ground-truth disc (see ``FullSet``). ``soft``: the masks are the
    annotators' agreement maps (``read_soft_maps``), the ROI still comes from the binary disc mask."""
    if disc_label not in labels:
        raise BiounetError(f"the fundus pipeline needs a {disc_label!r} label; got {labels}")
    d = labels.index(disc_label)
    imgs, masks, rois = [], [], []
    for s in samples:
        im = match_channels(read_image(s.image), channels)
        m = load_masks(s, labels, (), im.shape[:2])
        roi = disc_roi(m[d] > 0, roi_scale)
        if soft:
            m = read_soft_maps(s, labels, im.shape[:2])
        if roi is None:
            raise BiounetError(
                f"{s.masks[disc_label]}: empty disc mask; the ROI stage needs a disc in every image"
            )
        half = roi.side * window_half(max_scale) + 2
        y0, x0 = max(0, math.floor(roi.cy - half)), max(0, math.floor(roi.cx - half))
        y1 = min(im.shape[0], math.ceil(roi.cy + half) + 1)
        x1 = min(im.shape[1], math.ceil(roi.cx + half) + 1)
        imgs.append(torch.from_numpy(np.ascontiguousarray(im[y0:y1, x0:x1])).permute(2, 0, 1))
        masks.append(torch.from_numpy(np.ascontiguousarray(m[:, y0:y1, x0:x1])))
        rois.append(Roi(roi.cy - y0, roi.cx - x0, roi.side))
    return FullSet(
        [s.stem for s in samples],
        imgs,
        masks,
        rois,
        sample_weights(samples),
        1 / 255 if soft else 1.0,
    )


def roi_batches(
    full: FullSet,
    cfg: RunConfig,
    gen: torch.Generator,
    jitter: float = JITTER,
    scale: tuple[float, float] = SCALE_JITTER,
    polar: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented ROI batches: x (B, C, S, S) float in [0, 1], y (B, L, S, S) {0, 1} (in [0, 1] with
    soft targets); ``polar``: both resampled to polar coordinates (``biounet.fundus.polar``) after
    the augmentation."""
    n, bs, size = len(full.stems), cfg.train.batch_size, cfg.data.image_size
    order = batch_order(full.weights, n, bs, gen)
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
        imgs, masks = [full.images[j] for j in idx], [full.masks[j] for j in idx]
        x = crop_roi_windows(imgs, rois, size, "bilinear", angle, flip, scale=1 / 255)
        y = crop_roi_windows(masks, rois, size, "nearest", angle, flip, scale=full.mask_scale)
        if cfg.data.augment:
            x = photometric(x, p, gen)
        x = appearance_augment(x, gen, cfg.data.camera_augment, cfg.data.colour_augment)
        if polar:
            x, y = to_polar(x), to_polar(y, "nearest")
        yield x, y


def roi_arrays(full: FullSet, size: int, polar: bool = False) -> ArrayDataset:
    """Ground-truth-centred crops, no augmentation, as uint8 arrays (for validation); ``polar``:
    resampled to polar coordinates."""
    x = crop_roi_windows(full.images, full.rois, size)
    y = crop_roi_windows(full.masks, full.rois, size, "nearest")
    if polar:
        x, y = to_polar(x), to_polar(y, "nearest")
    x, y = x.round().clamp(0, 255).to(torch.uint8), y.to(torch.uint8)
    return ArrayDataset(list(full.stems), x, y, [])


def n_batches(full: FullSet, batch_size: int) -> int:
    return math.ceil(len(full.stems) / batch_size)
