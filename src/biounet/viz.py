"""Pictures: training curves and mask overlays. matplotlib is imported only here, inside functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

# The article's colours: optic disc red, optic cup yellow; other labels cycle through the rest.
LABEL_COLOURS = {"disc": (255, 0, 0), "cup": (255, 255, 0)}
PALETTE = [(0, 200, 255), (0, 255, 0), (255, 0, 255), (255, 128, 0), (128, 0, 255), (0, 255, 160)]


def label_colours(labels: tuple[str, ...] | list[str]) -> dict[str, tuple[int, int, int]]:
    out, k = {}, 0
    for lb in labels:
        if lb in LABEL_COLOURS:
            out[lb] = LABEL_COLOURS[lb]
        else:
            out[lb] = PALETTE[k % len(PALETTE)]
            k += 1
    return out


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: the inner boundary of ``mask``, ``width`` pixels thick."""
    mask = mask.astype(bool)
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def overlay(
    image: np.ndarray,
    masks: dict[str, np.ndarray],
    alpha: float = 0.3,
    contour_width: int | None = None,
) -> np.ndarray:
    """(H, W, C) uint8 image + {label: (H, W) bool} -> (H, W, 3) uint8 with each mask tinted and outlined
    in its colour (labels later in the dict drawn on top)."""
    img = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    out = img.astype(np.float32)
    colours = label_colours(list(masks))
    width = contour_width or max(1, round(max(img.shape[:2]) / 400))
    for lb, m in masks.items():
        m = m.astype(bool)
        c = np.array(colours[lb], dtype=np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * c
        out[outline(m, width)] = c
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def plot_curves(
    rows: list[dict[str, float]], labels: tuple[str, ...] | list[str], path: Path
) -> None:
    """Loss (train, val) and validation Dice per label against the epoch, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in rows], label="train loss")
    a1.plot(ep, [r["val_loss"] for r in rows], label="val loss")
    a1.set_xlabel("epoch")
    a1.set_ylabel("BCE + Dice loss")
    a1.legend()
    for lb in labels:
        a2.plot(ep, [r[f"val_dice_{lb}"] for r in rows], label=f"val Dice {lb}")
    a2.set_xlabel("epoch")
    a2.set_ylabel("Dice (per image mean)")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
