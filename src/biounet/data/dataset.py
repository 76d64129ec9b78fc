"""Decode a list of samples once into in-memory uint8 tensors at the network's resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from biounet.data.folder import Sample
from biounet.data.io import note_turned_image, orientation_note, read_image, read_mask
from biounet.data.transforms import Geometry, match_channels, square_geometry, to_network
from biounet.errors import BiounetError


@dataclass
class ArrayDataset:
    """images (N, C, S, S) uint8; masks (N, L, S, S) uint8 {0, 1}; one Geometry per image;
    weights (N,) float sampling weights, None when all images are drawn alike."""

    stems: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    geometries: list[Geometry]
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.stems)

    def subset(self, idx: list[int]) -> ArrayDataset:
        return ArrayDataset(
            [self.stems[i] for i in idx],
            self.images[idx],
            self.masks[idx],
            [self.geometries[i] for i in idx],
            None if self.weights is None else self.weights[idx],
        )


def load_masks(
    sample: Sample, labels: tuple[str, ...], invert: tuple[str, ...], hw: tuple[int, int]
) -> np.ndarray:
    """(L, H, W) uint8 {0, 1} at the image's own resolution; a size mismatch names the mask file."""
    out = np.zeros((len(labels), *hw), dtype=np.uint8)
    for i, lb in enumerate(labels):
        if lb not in sample.masks:
            raise BiounetError(f"{sample.image}: no mask for label {lb!r}")
        m = read_mask(sample.masks[lb], invert=lb in invert)
        if m.shape != hw:
            raise BiounetError(
                f"{sample.masks[lb]}: mask is {m.shape[1]}x{m.shape[0]} but its image is "
                f"{hw[1]}x{hw[0]} (WxH){orientation_note(sample.image, sample.masks[lb])}"
            )
        out[i] = m
    note_turned_image(sample.image, [sample.masks[lb] for lb in labels])
    return out


def load_arrays(
    samples: list[Sample],
    labels: tuple[str, ...],
    size: int,
    channels: int,
    invert: tuple[str, ...] = (),
) -> ArrayDataset:
    if not samples:
        raise BiounetError("no images to load")
    imgs, masks, geos = [], [], []
    for s in samples:
        img = read_image(s.image)
        if img.shape[-1] not in (1, 3):
            raise BiounetError(f"{s.image}: {img.shape[-1]} channels; expected 1 or 3")
        img = match_channels(img, channels)
        geo = square_geometry(img.shape[0], img.shape[1], size)
        m = load_masks(s, labels, invert, img.shape[:2])
        imgs.append(to_network(img, geo, is_mask=False))
        masks.append(to_network(m, geo, is_mask=True))
        geos.append(geo)
    return ArrayDataset(
        [s.stem for s in samples],
        torch.stack(imgs),
        torch.stack(masks),
        geos,
        sample_weights(samples),
    )


def sample_weights(samples: list[Sample]) -> torch.Tensor | None:
    """(N,) float64 sampling weights of ``samples``; None when they are all equal."""
    w = torch.tensor([s.weight for s in samples], dtype=torch.float64)
    return None if len(w) == 0 or bool((w == w[0]).all()) else w
