"""A built-in demo dataset: synthetic fundus-like photographs with an optic disc and cup of known shape.

Each image has a circular field of view on black, uneven illumination, a bright elliptical disc
holding a brighter cup, dark vessels leaving the disc (drawn over it, as in real photos), blur and
noise. The masks are the exact ellipses, so the right answer is known to the pixel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _ellipse(
    h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float
) -> np.ndarray:
    """(H, W) float: the ellipse's implicit value ((x/rx)^2 + (y/ry)^2); < 1 inside."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / rx) ** 2 + (v / ry) ** 2


def _vessels(h: int, w: int, cy: float, cx: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float in [0, 1]: vessel darkness, curved branches leaving the disc centre."""
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(6, 11))):
        ang = rng.uniform(0, 2 * math.pi)
        x, y, width = cx, cy, rng.uniform(2.0, 4.5) * w / 320
        for _step in range(40):
            ang += rng.normal(0, 0.15)
            nx, ny = x + math.cos(ang) * w / 80, y + math.sin(ang) * w / 80
            draw.line(
                [(x, y), (nx, ny)], fill=int(rng.uniform(150, 230)), width=max(1, round(width))
            )
            x, y, width = nx, ny, max(1.0, width * 0.97)
    layer = layer.filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(layer, dtype=np.float32) / 255.0


def synthetic_fundus(
    rng: np.random.Generator, h: int = 288, w: int = 320
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample: (H, W, 3) uint8 image, (H, W) uint8 {0,1} disc mask, (H, W) uint8 {0,1} cup mask."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fov = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (0.48 * min(h, w) * 1.08) ** 2
    # uneven illumination: a bright spot somewhere plus a linear gradient
    gy, gx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    illum = 0.65 + 0.35 * np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * (0.45 * w) ** 2))
    illum *= (
        1 + rng.uniform(-0.15, 0.15) * (xx / w - 0.5) + rng.uniform(-0.15, 0.15) * (yy / h - 0.5)
    )
    base = np.array(
        [rng.uniform(150, 200), rng.uniform(60, 95), rng.uniform(25, 50)], dtype=np.float32
    )
    img = illum[..., None] * base
    # optic disc somewhere off-centre, a little taller than wide
    r = min(h, w) * rng.uniform(0.09, 0.13)
    cy = h / 2 + rng.uniform(-0.15, 0.15) * h
    cx = w / 2 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.22) * w
    disc_e = _ellipse(h, w, cy, cx, r * rng.uniform(1.0, 1.15), r, rng.uniform(-0.3, 0.3))
    # cup: a scaled ellipse shifted a little, always well inside the disc
    k = rng.uniform(0.35, 0.75)
    sy, sx = rng.uniform(-0.1, 0.1) * r * (1 - k), rng.uniform(-0.1, 0.1) * r * (1 - k)
    cup_e = _ellipse(
        h, w, cy + sy, cx + sx, r * k * rng.uniform(1.0, 1.2), r * k, rng.uniform(-0.3, 0.3)
    )
    disc, cup = disc_e < 1, cup_e < 1
    cup &= disc
    disc_col = np.array([235, 175, 105], dtype=np.float32) * rng.uniform(0.9, 1.05)
    cup_col = np.array([250, 225, 175], dtype=np.float32) * rng.uniform(0.92, 1.0)
    # soft edges in the picture (not in the masks): the rim fades over a couple of pixels
    disc_a = np.clip((1 - disc_e) * r / 3 + 0.5, 0, 1)[..., None]
    cup_a = np.clip((1 - cup_e) * r * k / 4 + 0.5, 0, 1)[..., None] * rng.uniform(0.55, 0.9)
    img = img * (1 - disc_a) + disc_col * illum[..., None] * disc_a
    img = img * (1 - cup_a) + cup_col * illum[..., None] * cup_a
    ves = _vessels(h, w, cy, cx, rng)[..., None]
    img = img * (1 - 0.55 * ves)
    img = np.asarray(
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(0.7)
        ),
        dtype=np.float32,
    )
    img += rng.normal(0, 4.0, img.shape)
    img[~fov] = 0
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), disc.astype(np.uint8), cup.astype(np.uint8)


def write_synthetic_dataset(
    root: Path,
    n_train: int = 40,
    n_test: int = 12,
    seed: int = 0,
    h: int = 288,
    w: int = 320,
    prefix: str = "synth",
) -> Path:
    """Writes ``root/images/*.png``, ``root/masks/{disc,cup}/*.png`` and ``root/splits.json``."""
    root = Path(root)
    for sub in ("images", "masks/disc", "masks/cup"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stems = {
        "train": [f"{prefix}_{i:03d}" for i in range(n_train)],
        "test": [f"{prefix}_{i:03d}" for i in range(n_train, n_train + n_test)],
    }
    for stem in stems["train"] + stems["test"]:
        img, disc, cup = synthetic_fundus(rng, h, w)
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(disc * 255).save(root / "masks" / "disc" / f"{stem}.png")
        Image.fromarray(cup * 255).save(root / "masks" / "cup" / f"{stem}.png")
    (root / "splits.json").write_text(json.dumps(stems, indent=1))
    return root
