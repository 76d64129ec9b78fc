"""Training data: the training split divided into train and validation (``split_samples``), decoded
once into uint8 arrays at the network's resolution (``prepare_data``), and served as seeded,
augmented batches (``array_batches``)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from biounet.config import RunConfig
from biounet.data.camera import appearance_augment
from biounet.data.dataset import ArrayDataset, load_arrays
from biounet.data.folder import (
    Sample,
    check_invert,
    discover,
    read_splits,
    resolve_labels,
    select_split,
    select_stems,
)
from biounet.data.io import read_image
from biounet.data.sources import batch_order, is_spec, read_spec
from biounet.data.transforms import AugmentParams, augment_batch
from biounet.dist import SINGLE, Dist, epoch_order, rank_slice
from biounet.errors import BiounetError

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Prepared:
    train: ArrayDataset
    val: ArrayDataset
    labels: tuple[str, ...]
    in_channels: int
    held_out: bool = True  # False: val is a training image (val_fraction 0, no "val" list)


def split_samples(cfg: RunConfig) -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    """Training split of cfg.data.root divided into (train, val, labels): splits.json "val" if present,
    else a seeded ``val_fraction`` of the training split. Never touches the test split.
    A dataset-list file as root (``biounet.data.sources``): each source split so, then joined, each
    training sample carrying its source's weight / its source's training-image count."""
    if not is_spec(cfg.data.root):
        return _split_folder(cfg, Path(cfg.data.root), cfg.data.train_split)
    if cfg.data.train_stems:
        raise BiounetError(
            f"{cfg.data.root}: train_stems (cross-validation) needs one dataset folder"
        )
    tr, val, labels = [], [], cfg.data.labels
    stems: Counter[str] = Counter()
    for src in read_spec(cfg.data.root):
        t, v, labels = _split_folder(cfg, src.root, src.split, labels)
        tr += [dataclasses.replace(s, weight=src.weight / len(t)) for s in t]
        val += v
        # a set per source: with no hold-out its "validation" image is one of its training images
        stems.update({s.stem for s in t + v})
    dups = [st for st, n in stems.items() if n > 1]
    if dups:
        raise BiounetError(
            f"{cfg.data.root}: image stems {dups[:5]} occur in several datasets; stems must be unique"
        )
    return tr, val, labels


def _split_folder(
    cfg: RunConfig, root: Path, train_split: str, labels: tuple[str, ...] | None = None
) -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    all_samples = discover(root)
    splits = read_splits(root) or {}
    samples = select_split(root, all_samples, train_split if splits else None)
    if cfg.data.train_stems:  # a cross-validation fold: its val images come from its own pool
        where = f"{root}/splits.json split {train_split!r}" if splits else f"{root}/images"
        samples = select_stems(samples, cfg.data.train_stems, where)
    labels = resolve_labels(samples, cfg.data.labels if labels is None else labels, root)
    if "val" in splits and train_split == "train" and not cfg.data.train_stems:
        val_s = select_split(root, all_samples, "val")
        resolve_labels(val_s, labels, root)
        val_stems = {s.stem for s in val_s}
        return [s for s in samples if s.stem not in val_stems], val_s, labels
    order = torch.randperm(
        len(samples), generator=torch.Generator().manual_seed(cfg.train.seed)
    ).tolist()
    n_val = max(1, round(len(samples) * cfg.data.val_fraction)) if cfg.data.val_fraction > 0 else 0
    if len(samples) - n_val < 1:
        raise BiounetError(
            f"{root}: {len(samples)} training images are too few to hold out {n_val} for validation"
        )
    val_s = [samples[i] for i in sorted(order[:n_val])]
    tr_s = [samples[i] for i in sorted(order[n_val:])]
    return tr_s, val_s or tr_s[:1], labels


def prepare_data(cfg: RunConfig) -> Prepared:
    """In-memory train and val arrays at the network's resolution (see ``split_samples``)."""
    check_patch_size(cfg)
    tr_s, val_s, labels = split_samples(cfg)
    check_invert(cfg.data.invert_masks, labels)
    channels = cfg.model.in_channels or read_image(tr_s[0].image).shape[-1]
    if channels not in (1, 3):
        raise BiounetError(f"in_channels {channels}: biounet trains on grey (1) or RGB (3) images")
    load = lambda ss: load_arrays(ss, labels, cfg.data.image_size, channels, cfg.data.invert_masks)  # noqa: E731
    return Prepared(load(tr_s), load(val_s), labels, channels, holds_out(tr_s, val_s))


def holds_out(train: list[Sample], val: list[Sample]) -> bool:
    """Whether ``split_samples`` held images out: with none (val_fraction 0 and no "val" list)
    its validation set is a training image, and the last epoch, not the best-scoring, is kept."""
    return not {s.image for s in val} <= {s.image for s in train}


def patches_per_image(image_size: int, patch_size: int) -> int:
    """Crops drawn per image and epoch with ``patch_size`` (0: whole images, 1): enough that an
    epoch sees as many pixels as the whole images hold, ceil(image_size**2 / patch_size**2)."""
    return -(-(image_size**2) // patch_size**2) if patch_size else 1


def check_patch_size(cfg: RunConfig) -> None:
    """BiounetError for a patch size the model cannot take or the images cannot give."""
    p, size = cfg.data.patch_size, cfg.data.image_size
    step = 2 ** int(cfg.model.depth)
    if p and (p < 0 or p > size or p % step):
        raise BiounetError(
            f"--patch-size {p}: must be at most --image-size ({size}) and a multiple of {step} "
            f"(2 ** the model's depth {cfg.model.depth})"
        )


def n_batches(data: ArrayDataset, cfg: RunConfig) -> int:
    """Batches per epoch of ``array_batches``."""
    k = patches_per_image(cfg.data.image_size, cfg.data.patch_size)
    return -(-len(data) * k // cfg.train.batch_size)


def array_batches(
    data: ArrayDataset, cfg: RunConfig, gen: torch.Generator, dist: Dist = SINGLE
) -> Iterator[Batch]:
    """Seeded random order over ``data``; augmented (x in [0, 1], y in {0, 1}) float batches.
    With ``cfg.data.patch_size`` each image is drawn ``patches_per_image`` times per epoch and
    each draw is a random crop of that side. Distributed: every rank draws and augments the same
    global batch and keeps its own slice."""
    n, bs, p = len(data), cfg.train.batch_size, cfg.data.patch_size
    k = patches_per_image(cfg.data.image_size, p)
    order = epoch_order(batch_order(data.weights, n, bs, gen, repeats=k), dist)
    aug = AugmentParams() if cfg.data.augment else None
    for i in range(0, len(order), bs):
        idx = order[i : i + bs]
        if p:
            img, mask = random_crops(data.images, data.masks, idx, p, gen)
        else:
            img, mask = data.images[idx], data.masks[idx]
        if aug is not None:
            x, y = augment_batch(img, mask, aug, gen)
        else:
            x, y = img.float() / 255.0, mask.float()
        x = appearance_augment(x, gen, cfg.data.camera_augment, cfg.data.colour_augment)
        yield rank_slice(x, dist), rank_slice(y, dist)


def random_crops(
    images: torch.Tensor,
    masks: torch.Tensor,
    idx: torch.Tensor,
    side: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, S, S) images and (N, L, S, S) masks, indices (B,) -> (B, C, side, side) and
    (B, L, side, side): a random window of each indexed image and the same window of its masks,
    cut from the stored arrays (whole images are not copied first)."""
    size = images.shape[-1]
    corners = torch.randint(0, size - side + 1, (len(idx), 2), generator=gen).tolist()
    windows = [(slice(y, y + side), slice(x, x + side)) for y, x in corners]
    img = torch.stack([images[j, :, r, c] for j, (r, c) in zip(idx.tolist(), windows, strict=True)])
    mask = torch.stack([masks[j, :, r, c] for j, (r, c) in zip(idx.tolist(), windows, strict=True)])
    return img, mask
