"""Tiled prediction of images of any size with memory bounded by the tile batch.

Two strategies, both taking any callable ``model_fn: (B, C, h, w) -> (B, L, h', w')``:

- ``sliding_window`` for padded ("same") models: overlapping tiles, outputs blended with Gaussian
  or constant weights (nnU-Net, MONAI).
- ``overlap_tile`` for unpadded ("valid") models, the U-Net paper's strategy: each output tile is
  predicted from a larger input tile holding its context, mirrored where it leaves the image, and
  the output tiles are placed side by side with no blending.

Only one batch of tiles (and its activations) is in flight at a time; the output is accumulated on
the image's device, so a GPU holds only ``tile_batch`` tiles whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from biounet.models.unet_valid import valid_input_size

ModelFn = Callable[[torch.Tensor], torch.Tensor]
BLENDS = ("gaussian", "constant")


def _pair(x: int | tuple[int, int], name: str) -> tuple[int, int]:
    t = (x, x) if isinstance(x, int) else tuple(x)
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {x!r}")
    return t  # type: ignore[return-value]


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering [0, size), neighbours overlapping by at
    least ``overlap`` * tile, spread evenly; the first at 0 and the last at size - tile.
    A tile at least as large as the image gives [0] (the caller shrinks that tile to the image)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if tile >= size:
        return [0]
    step = max(int(tile * (1 - overlap)), 1)
    n = math.ceil((size - tile) / step) + 1
    spacing = (size - tile) / (n - 1)
    return [round(i * spacing) for i in range(n)]


def gaussian_weights(tile: tuple[int, int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """(h, w) float32 blending weights: a Gaussian centred on the tile with sigma = side *
    ``sigma_scale``, maximum 1. Down-weights tile borders, where a padded model sees zeros."""
    axes = []
    for side in tile:
        d = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
        axes.append(torch.exp(-(d**2) / (2 * (side * sigma_scale) ** 2)))
    g = axes[0][:, None] * axes[1][None, :]
    # Floor at a tiny positive value: every covered pixel must keep a non-zero total weight.
    return (g / g.max()).clamp_min(1e-6).float()


def _batches(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _check_common(image: torch.Tensor, tile_batch: int) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")


@torch.no_grad()
def sliding_window(
    model_fn: ModelFn,
    image: torch.Tensor,
    tile: int | tuple[int, int],
    overlap: float = 0.25,
    blend: str = "gaussian",
    tile_batch: int = 4,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """image (C, H, W) float -> (L, H, W) float32: the weighted mean of ``model_fn``'s outputs on
    overlapping tiles (logits if it returns logits; pass e.g. ``lambda x: model(x).sigmoid()`` to
    blend probabilities). ``model_fn`` must keep the spatial size, (B, C, h, w) -> (B, L, h, w).

    Tiles are ``tile`` (clipped to the image) and start at ``tile_starts``; ``tile_batch`` of them
    go to ``model_fn`` at once, moved to ``device`` (default: the image's). Where the image fits in
    one tile the result is ``model_fn`` of the whole image.
    """
    _check_common(image, tile_batch)
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    _, h, w = image.shape
    th, tw = _pair(tile, "tile")
    th, tw = min(th, h), min(tw, w)
    device = image.device if device is None else torch.device(device)
    if blend == "gaussian":
        weight = gaussian_weights((th, tw)).to(image.device)
    else:
        weight = torch.ones(th, tw, device=image.device)
    positions = [(y, x) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]
    acc: torch.Tensor | None = None  # (L, H, W), allocated once L is known
    norm = torch.zeros(h, w, device=image.device)
    for batch in _batches(positions, tile_batch):
        x = torch.stack([image[:, y : y + th, x0 : x0 + tw] for y, x0 in batch]).to(device)
        out = model_fn(x)  # (B, L, th, tw)
        if out.ndim != 4 or out.shape[0] != len(batch) or tuple(out.shape[-2:]) != (th, tw):
            raise ValueError(
                f"model_fn must map (B, C, {th}, {tw}) to (B, L, {th}, {tw}); "
                f"got {tuple(out.shape)} for {tuple(x.shape)}"
            )
        out = out.float().to(image.device)
        if acc is None:
            acc = torch.zeros(out.shape[1], h, w, device=image.device)
        for o, (y, x0) in zip(out, batch, strict=True):
            acc[:, y : y + th, x0 : x0 + tw] += o * weight
            norm[y : y + th, x0 : x0 + tw] += weight
    assert acc is not None  # at least one tile always exists
    return acc / norm


def mirror_indices(start: int, length: int, size: int) -> torch.Tensor:
    """(length,) int64 indices into an axis of ``size`` for positions start .. start + length - 1,
    mirrored at the borders without repeating the edge (numpy's "reflect"), any distance out."""
    pos = torch.arange(start, start + length)
    if size == 1:
        return torch.zeros(length, dtype=torch.int64)
    period = 2 * (size - 1)
    pos = pos.remainder(period)
    return torch.where(pos < size, pos, period - pos)


def mirror_pad(image: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """(C, H, W) -> (C, top + H + bottom, left + W + right), mirrored as in ``mirror_indices``
    (works for pads larger than the image, unlike ``F.pad(mode="reflect")``)."""
    _, h, w = image.shape
    rows = mirror_indices(-top, top + h + bottom, h).to(image.device)
    cols = mirror_indices(-left, left + w + right, w).to(image.device)
    return image.index_select(1, rows).index_select(2, cols)


@torch.no_grad()
def overlap_tile(
    model_fn: ModelFn,
    image: torch.Tensor,
    in_tile: int | tuple[int, int],
    out_tile: int | tuple[int, int],
    step: int | tuple[int, int] | None = None,
    tile_batch: int = 4,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """image (C, H, W) float -> (L, H, W) float32 by the overlap-tile strategy.

    ``model_fn`` maps (B, C, in_tile, in_tile) to (B, L, out_tile, out_tile), output pixel (0, 0)
    centred on input pixel (m, m), m = (in_tile - out_tile) / 2. Output tiles start every ``step``
    (default ``out_tile``; at most ``out_tile``) pixels and each fills its first ``step`` pixels;
    its input tile reads the image mirrored where it reaches past a border. With a valid U-Net of
    depth d and ``step`` a multiple of 2**d, the result equals one forward pass of the mirror-padded
    whole image (the pooling grids of all tiles line up); ``predict_overlap_tile`` picks such a step.
    """
    _check_common(image, tile_batch)
    in_h, in_w = _pair(in_tile, "in_tile")
    out_h, out_w = _pair(out_tile, "out_tile")
    step_h, step_w = _pair(out_tile if step is None else step, "step")
    if (in_h - out_h) % 2 or (in_w - out_w) % 2 or in_h < out_h or in_w < out_w:
        raise ValueError(
            f"in_tile {in_tile} must exceed out_tile {out_tile} by an even number of pixels"
        )
    if step_h > out_h or step_w > out_w:
        raise ValueError(f"step {step} must be at most out_tile {out_tile}")
    m_h, m_w = (in_h - out_h) // 2, (in_w - out_w) // 2
    _, h, w = image.shape
    device = image.device if device is None else torch.device(device)
    positions = [(y, x) for y in range(0, h, step_h) for x in range(0, w, step_w)]
    out: torch.Tensor | None = None
    for batch in _batches(positions, tile_batch):
        tiles = []
        for y, x0 in batch:
            rows = mirror_indices(y - m_h, in_h, h).to(image.device)
            cols = mirror_indices(x0 - m_w, in_w, w).to(image.device)
            tiles.append(image.index_select(1, rows).index_select(2, cols))
        pred = model_fn(torch.stack(tiles).to(device))  # (B, L, out_h, out_w)
        if pred.ndim != 4 or tuple(pred.shape[-2:]) != (out_h, out_w):
            raise ValueError(
                f"model_fn mapped input tiles {in_h}x{in_w} to {tuple(pred.shape)}; "
                f"expected (B, L, {out_h}, {out_w})"
            )
        pred = pred.float().to(image.device)
        if out is None:
            out = torch.empty(pred.shape[1], h, w, device=image.device)
        for p, (y, x0) in zip(pred, batch, strict=True):
            dh, dw = min(step_h, h - y), min(step_w, w - x0)
            out[:, y : y + dh, x0 : x0 + dw] = p[:, :dh, :dw]
    assert out is not None
    return out


def predict_overlap_tile(
    model: nn.Module,
    image: torch.Tensor,
    out_tile: int = 388,
    tile_batch: int = 4,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """image (C, H, W) float, already normalised -> (L, H, W) float32 logits of an unpadded U-Net
    (``biounet.models.unet_valid.UNetValid``, or any model with its geometry and ``cfg.depth``).

    ``out_tile`` must be a valid output size (388 for depth 4 reads 572 x 572 input tiles). Tiles
    step by ``out_tile`` rounded down to a multiple of 2**depth (384 for 388), so the stitched map
    equals a single forward pass of the mirror-padded image: no seams by construction.
    """
    depth = model.cfg.depth
    in_tile = valid_input_size(out_tile, depth)
    step = out_tile - out_tile % 2**depth
    if step < 1:
        raise ValueError(f"out_tile {out_tile} is smaller than 2**depth = {2**depth}")
    return overlap_tile(model, image, in_tile, out_tile, step, tile_batch, device)
