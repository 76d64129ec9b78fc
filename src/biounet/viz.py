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


def plot_reliability(table: dict[str, dict], path: Path) -> None:
    """Reliability diagram per label from ``ReliabilityBins.table()``: accuracy (fraction in the
    mask) against confidence (mean predicted probability) per bin, and the pixels per bin (log
    scale), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, len(table), figsize=(3.6 * len(table), 5), squeeze=False, height_ratios=[3, 1.3]
    )
    for (top, bottom), (lb, t) in zip(axes.T, table.items(), strict=True):
        n = len(t["count"])
        centres = (np.arange(n) + 0.5) / n
        seen = [k for k in range(n) if t["count"][k]]
        top.bar(
            centres[seen],
            [t["accuracy"][k] for k in seen],
            width=1 / n,
            color="#9db9d9",
            edgecolor="#1f5fa8",
            label="fraction in the mask",
        )
        top.plot([0, 1], [0, 1], color="#666", linestyle="--", linewidth=1, label="calibrated")
        top.plot(
            [t["confidence"][k] for k in seen],
            [t["accuracy"][k] for k in seen],
            "o",
            color="#c0392b",
            markersize=3.5,
            label="(mean probability, fraction)",
        )
        top.set(xlim=(0, 1), ylim=(0, 1), title=f"{lb}: ECE {t['ece']:.4f}")
        top.set_ylabel("accuracy (fraction in the mask)")
        top.legend(fontsize=7, loc="upper left")
        bottom.bar(centres, t["count"], width=1 / n, color="#bbb")
        bottom.set_yscale("log")
        bottom.set(xlim=(0, 1), xlabel="confidence (predicted probability)", ylabel="pixels")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def contour_thumbnail(
    image: np.ndarray,
    truth: dict[str, np.ndarray],
    pred: dict[str, np.ndarray],
    side: int = 256,
    zoom: bool = True,
) -> np.ndarray:
    """(H, W, C) uint8 image, ground-truth and predicted {label: (H, W) bool} -> (h, w, 3) uint8 with
    max(h, w) == ``side``: predictions outlined solid in their label colours, ground truth dashed
    white-black-gap on top (a coinciding prediction shows in the gaps). With ``zoom``, structures
    that are small in the image (an optic disc in a fundus photo) are shown on a square crop twice
    their extent."""
    from PIL import Image

    img = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    union = np.zeros(img.shape[:2], dtype=bool)
    for m in [*truth.values(), *pred.values()]:
        union |= m.astype(bool)
    r0, r1, c0, c1 = 0, img.shape[0], 0, img.shape[1]
    if zoom and union.any():
        rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
        half = max(rows[-1] - rows[0], cols[-1] - cols[0], 16)
        if 2 * half < 0.8 * max(img.shape[:2]):
            cy, cx = (rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2
            r0, r1 = max(0, cy - half), min(img.shape[0], cy + half + 1)
            c0, c1 = max(0, cx - half), min(img.shape[1], cx + half + 1)
    h, w = r1 - r0, c1 - c0
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def resized(m: np.ndarray) -> np.ndarray:
        crop = m[r0:r1, c0:c1].astype(np.uint8) * 255
        return np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.NEAREST)) > 0

    out = np.array(Image.fromarray(img[r0:r1, c0:c1]).resize(size, Image.Resampling.BILINEAR))
    width = max(1, side // 128)
    colours = label_colours(list(pred))
    for lb, m in pred.items():
        out[outline(resized(m), width)] = colours[lb]
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    phase = (
        yy // 3 + xx // 3
    ) % 3  # white, black, gap: a prediction on the same pixels shows through
    for m in truth.values():
        edge = outline(resized(m), width)
        out[edge & (phase == 0)] = 255
        out[edge & (phase == 1)] = 0
    return out
