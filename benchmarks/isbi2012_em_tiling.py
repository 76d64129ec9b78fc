"""The overlap-tile check of the ISBI 2012 benchmark: a large mosaic of EM slices predicted from
ISBI-sized input tiles (508 px in, 324 px out, stepping 320 px) in a fresh child process, whose
peak RSS (VmHWM) is then this prediction's plus the imports; seams checked numerically and shown in
a PNG crop.

    python benchmarks/isbi2012_em_tiling.py CHECKPOINT DATA_ROOT WORK N PRECISION SLICE...

(run by ``isbi2012_em.py``; prints one JSON line).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biounet.checkpoint import load_checkpoint
from biounet.data.transforms import normalize
from biounet.em.tiles import read_em_slices
from biounet.infer import autocast, resolve_precision
from biounet.infer_tiling import mirror_indices, overlap_tile
from biounet.models.unet_valid import valid_input_size

OUT_TILE = 324  # valid_input_size(324, 4) = 508: input tiles just under the ISBI slice side
DIRECT_OUT = 516  # the direct forward pass's output window around a tile corner


def mosaic(images: np.ndarray, n: int) -> np.ndarray:
    """(K, H, W) uint8 -> (n H, n W) uint8: slices cycled row by row."""
    k, h, w = images.shape
    rows = [np.concatenate([images[(r * n + c) % k] for c in range(n)], axis=1) for r in range(n)]
    return np.concatenate(rows, axis=0)


def boundary_ratios(p: np.ndarray, step: int, slice_side: int) -> dict[str, float]:
    """(H, W) map -> mean |difference| between neighbours across tile boundaries (multiples of
    ``step``) and across the mosaic's slice boundaries (multiples of ``slice_side``, a real content
    seam: the positive control), each divided by the mean difference elsewhere. ~1 = no seam."""
    diffs, kinds = [], []
    for axis in (0, 1):
        d = np.abs(np.diff(p, axis=axis))  # index i: between i and i + 1
        idx = np.arange(d.shape[axis]) + 1
        kind = np.where(idx % slice_side == 0, 2, np.where(idx % step == 0, 1, 0))
        means = [float(d.take(np.flatnonzero(kind == k), axis=axis).mean()) for k in (0, 1, 2)]
        diffs.append(means)
        kinds.append(kind)
    other = np.mean([m[0] for m in diffs])
    return {
        "tile_boundary_over_elsewhere": float(np.mean([m[1] for m in diffs]) / other),
        "slice_seam_over_elsewhere": float(np.mean([m[2] for m in diffs]) / other),
    }


def save_corner_png(p_membrane: np.ndarray, corner: int, step: int, path: Path) -> None:
    """A 256 x 256 crop of the stitched membrane map around (corner, corner), shown 2x, with the
    tile boundaries inside it marked in red at the crop's left and top margins only."""
    from PIL import Image

    crop = p_membrane[corner - 128 : corner + 128, corner - 128 : corner + 128]
    grey = (np.clip(crop, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).repeat(2, 0).repeat(2, 1)
    for b in range(corner - 128, corner + 128):
        if b % step == 0:
            i = 2 * (b - corner + 128)
            rgb[i : i + 1, :12] = rgb[:12, i : i + 1] = (255, 0, 0)
    Image.fromarray(rgb).save(path)


def peak_rss_mib() -> float:
    """This process's peak resident set: VmHWM, which a new program image (exec) resets. ru_maxrss
    would not do here: Linux carries the forking parent's RSS over into the child's ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(ck: Path, root: Path, work: Path, n: int, precision: str, idx: list[int]) -> dict:
    model = load_checkpoint(ck).build()
    depth = model.cfg.depth
    device = torch.device("cpu")
    prec = resolve_precision(precision, device)
    images, _ = read_em_slices(root, idx)
    big = mosaic(images, n)
    x = normalize(torch.from_numpy(big)[None, None])[0]  # (1, H, W)
    rss_before = peak_rss_mib()

    @torch.no_grad()
    def run(t: torch.Tensor) -> torch.Tensor:  # (B, 1, in, in) -> (B, 2, out, out)
        with autocast(device, prec):
            return model(t).float().softmax(dim=1)

    in_tile, step = valid_input_size(OUT_TILE, depth), OUT_TILE - OUT_TILE % 2**depth
    t0 = time.perf_counter()
    probs = overlap_tile(run, x, in_tile, OUT_TILE, step, tile_batch=1)[1].numpy()  # interior
    seconds = time.perf_counter() - t0
    rss_peak = peak_rss_mib()
    # One forward pass over a window around a tile corner; starting on the tiles' pooling grid
    # (a multiple of 2**depth), it must equal the stitched map there.
    corner = 2 * step
    y0 = corner - DIRECT_OUT // 2
    y0 -= y0 % 2**depth
    m = (valid_input_size(DIRECT_OUT, depth) - DIRECT_OUT) // 2
    sel = mirror_indices(y0 - m, DIRECT_OUT + 2 * m, big.shape[0])
    window = x[:, sel][:, :, sel][None]  # (1, 1, in, in)
    direct = run(window)[0, 1].numpy()
    tiled = probs[y0 : y0 + DIRECT_OUT, y0 : y0 + DIRECT_OUT]
    save_corner_png(1.0 - probs, corner, step, work / "overlap_tile_corner.png")
    return {
        "image_side": int(big.shape[0]),
        "mosaic": f"{n} x {n} of slices {idx} (cycled)",
        "in_tile": in_tile,
        "out_tile": OUT_TILE,
        "step": step,
        "tiles": len(range(0, big.shape[0], step)) ** 2,
        "precision": prec,
        "predict_seconds": seconds,
        "peak_rss_mib": rss_peak,
        "peak_rss_before_predict_mib": rss_before,
        "image_and_output_mib": float(x.numel() * 4 * 3 / 2**20),  # input + 2-class output
        "direct_window": f"output [{y0}, {y0 + DIRECT_OUT})^2 around tile corner ({corner}, {corner})",
        "max_abs_diff_vs_direct": float(np.abs(direct - tiled).max()),
        **boundary_ratios(probs, step, images.shape[-1]),
        "png": str(work / "overlap_tile_corner.png"),
    }


def overlap_tile_check(
    ck: Path, root: Path, idx: list[int], n: int, work: Path, precision: str
) -> dict[str, Any]:
    """Run ``child`` in a fresh process, so its peak RSS holds none of this process's training."""
    cmd = [sys.executable, __file__, str(ck), str(root), str(work), str(n), precision]
    res = subprocess.run(cmd + [str(i) for i in idx], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    a = sys.argv[1:]
    out = child(Path(a[0]), Path(a[1]), Path(a[2]), int(a[3]), a[4], [int(i) for i in a[5:]])
    print(json.dumps(out))
