"""ISBI 2012 EM slices in memory and the U-Net paper's training tiles for an unpadded U-Net.

An unpadded U-Net maps an input tile of side ``valid_input_size(out)`` to an output of side ``out``,
so each sample is a large image tile and a centred, smaller target and weight tile. Input tiles are
read with mirror padding (as the overlap-tile prediction does), so every pixel of a slice, borders
included, can be a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from biounet.data.elastic import elastic_deform
from biounet.data.io import read_image, read_mask
from biounet.data.transforms import normalize
from biounet.em.weightmap import unet_weight_map
from biounet.errors import BiounetError
from biounet.infer_tiling import mirror_indices


@dataclass(frozen=True)
class EmSlices:
    """Training slices held once in memory.

    image: (N, H, W) float32, z-scored per slice; interior: (N, H, W) bool (True = cell interior,
    False = membrane, the class indices 1 and 0); weight: (N, H, W) float32 per-pixel loss weight.
    """

    image: torch.Tensor
    interior: torch.Tensor
    weight: torch.Tensor


def read_em_slices(root: Path, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """ISBI 2012 layout (``images/train_XX.png``, ``masks/train_XX.png``, 255 = interior) ->
    images (N, H, W) uint8 and interior masks (N, H, W) bool. BiounetError names a missing file."""
    images, interiors = [], []
    for i in indices:
        img_path = Path(root) / "images" / f"train_{i:02d}.png"
        mask_path = Path(root) / "masks" / f"train_{i:02d}.png"
        for p in (img_path, mask_path):
            if not p.is_file():
                raise BiounetError(f"{p}: not found (expected the ISBI 2012 EM layout)")
        img = read_image(img_path)
        if img.shape[-1] != 1:
            raise BiounetError(f"{img_path}: expected a grey image, got {img.shape[-1]} channels")
        images.append(img[..., 0])
        interiors.append(read_mask(mask_path).astype(bool))
    return np.stack(images), np.stack(interiors)


def interior_frequency(interior: np.ndarray) -> tuple[float, float]:
    """(N, H, W) bool -> (f_membrane, f_interior) over all pixels of all slices."""
    f_in = float(np.count_nonzero(interior)) / interior.size
    return 1.0 - f_in, f_in


def make_slices(
    images: np.ndarray, interior: np.ndarray, w0: float = 10.0, sigma: float = 5.0
) -> EmSlices:
    """(N, H, W) uint8 images and bool interiors -> EmSlices with the paper's weight map per slice:
    class balance from the frequencies over all N slices plus w0 * exp(-(d1 + d2)^2 / (2 sigma^2))
    on membrane pixels. ``w0 = 0`` leaves the class-balance weights alone."""
    if images.shape != interior.shape or images.ndim != 3:
        raise ValueError(f"images {images.shape} and interior {interior.shape} must be (N, H, W)")
    freq = interior_frequency(interior)
    weight = np.stack([unet_weight_map(m, w0, sigma, class_freq=freq) for m in interior])
    x = normalize(torch.from_numpy(images)[:, None])[:, 0]  # (N, H, W) float32
    return EmSlices(x, torch.from_numpy(interior.copy()), torch.from_numpy(weight))


def center_crop_2d(t: torch.Tensor, out: int) -> torch.Tensor:
    """(..., S, S) -> (..., out, out), the centred window. (S - out) must be even and >= 0."""
    s = t.shape[-1]
    if t.shape[-2] != s or out > s or (s - out) % 2:
        raise ValueError(f"cannot centre-crop {tuple(t.shape[-2:])} to {out} x {out}")
    m = (s - out) // 2
    return t[..., m : m + out, m : m + out]


def _window(t: torch.Tensor, y: int, x: int, side: int) -> torch.Tensor:
    """(H, W) -> (side, side) starting at (y, x), mirrored where it leaves the slice."""
    rows = mirror_indices(y, side, t.shape[-2])
    cols = mirror_indices(x, side, t.shape[-1])
    return t.index_select(0, rows).index_select(1, cols)


def sample_batch(
    slices: EmSlices,
    in_size: int,
    out_size: int,
    batch: int,
    gen: torch.Generator,
    elastic: bool = False,
    elastic_std_px: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> x (B, 1, in, in) float32, target (B, out, out) int64 (1 = interior), weight (B, out, out).

    Each sample picks a slice and an output window uniformly among those inside the slice; the
    input window is centred on it and mirrored past the borders. Augmentation: a random rot90 and
    flip, then optionally the paper's elastic deformation (3x3 grid, ``elastic_std_px``), applied to
    image, label and weight at input size before the centre crop (bilinear image, nearest label and
    weight, so labels stay binary and aligned).
    """
    n, h, w = slices.image.shape
    if out_size > min(h, w) or in_size < out_size or (in_size - out_size) % 2:
        raise ValueError(f"tiles in {in_size} / out {out_size} do not fit slices of {h} x {w}")
    m = (in_size - out_size) // 2
    xs, labs = [], []
    for _ in range(batch):
        k = int(torch.randint(n, (1,), generator=gen))
        y = int(torch.randint(h - out_size + 1, (1,), generator=gen))
        x0 = int(torch.randint(w - out_size + 1, (1,), generator=gen))
        stack = torch.stack(
            [
                _window(slices.image[k], y - m, x0 - m, in_size),
                _window(slices.interior[k].float(), y - m, x0 - m, in_size),
                _window(slices.weight[k], y - m, x0 - m, in_size),
            ]
        )  # (3, in, in): image, interior, weight
        stack = torch.rot90(stack, int(torch.randint(4, (1,), generator=gen)), dims=(1, 2))
        if torch.rand(1, generator=gen).item() < 0.5:
            stack = stack.flip(2)
        xs.append(stack[:1])
        labs.append(stack[1:])
    x, lab = torch.stack(xs), torch.stack(labs)  # (B, 1, in, in), (B, 2, in, in)
    if elastic:
        x, lab = elastic_deform(x, lab, gen, std_px=elastic_std_px)
    lab = center_crop_2d(lab, out_size)
    return x.contiguous(), lab[:, 0].round().long(), lab[:, 1].contiguous()
