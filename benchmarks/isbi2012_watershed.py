"""ISBI 2012 EM: cells by a seeded watershed of the U-Net's interior map instead of a threshold
(``biounet.em.postprocess.watershed_cells``), same protocol as benchmarks/isbi2012_em.py: the
watershed's settings (smoothing, seed threshold, smallest seed) are chosen on slices 20-24 by
V_rand after border thinning; the chosen setting is scored once on slices 25-29, next to the
threshold the checkpoint holds (chosen on 20-24 too). No training: a checkpoint of isbi2012_em.py.

    python benchmarks/isbi2012_em.py --long 25 --long-arms neither   # the model (25 min)
    python benchmarks/isbi2012_watershed.py --checkpoint long25_neither   # ~2 min

Writes the key "watershed" of benchmarks/results/isbi2012_em.json (and the markdown).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biounet.checkpoint import load_checkpoint  # noqa: E402
from biounet.em.fit_em import SLICE_OUT_TILE  # noqa: E402
from biounet.em.metrics import segment, segmentation_scores  # noqa: E402
from biounet.em.postprocess import watershed_cells  # noqa: E402
from biounet.em.train_em import mean_scores, predict_interior  # noqa: E402
from common import RESULTS, SHARED_DATA, require, update_results  # noqa: E402
from isbi2012_em import HELD, NAME, VAL, load_data, report  # noqa: E402

SIGMAS = (0.0, 1.0)
SEED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MIN_SEEDS = (20,)
KEYS = ("v_rand_thinned", "v_info_thinned", "v_rand", "v_info", "rand_error")


def scores(
    probs: list[np.ndarray], truths: list[np.ndarray], cells_of: Callable[[np.ndarray], np.ndarray]
) -> dict[str, float]:
    """Mean label-map scores over slices of ``cells_of(P(interior))`` against the true cells
    (``segment`` of the truth, made once per slice)."""
    rows = [segmentation_scores(cells_of(p), t) for p, t in zip(probs, truths, strict=True)]
    return {k: v for k, v in mean_scores(rows).items() if k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "isbi2012_em")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_isbi2012"))
    ap.add_argument("--checkpoint", default="long25_neither", help="<work>/<name>.pt")
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = load_data(require(args.data))
    ck_path = args.work / f"{args.checkpoint}.pt"
    if not ck_path.is_file():
        raise SystemExit(f"{ck_path}: no checkpoint; train it with benchmarks/isbi2012_em.py")
    ck = load_checkpoint(ck_path)
    model, tta = ck.build(), bool(ck.extra.get("tta", False))
    thr = float(ck.extra["membrane_threshold"])

    def predict(images: np.ndarray) -> list[np.ndarray]:
        return [
            predict_interior(model, im, SLICE_OUT_TILE, args.precision, tta=tta) for im in images
        ]

    held, val = predict(data["held_img"]), predict(data["val_img"])
    held_t, val_t = ([segment(~m, "membrane") for m in data[k]] for k in ("held_int", "val_int"))

    def by_threshold(p: np.ndarray) -> np.ndarray:
        return segment(1.0 - p, "membrane", thr)

    logging.info("predicted 20-24 and 25-29")
    grid: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for sigma, seed, min_px in itertools.product(SIGMAS, SEED_THRESHOLDS, MIN_SEEDS):
        setting = {"sigma": sigma, "seed_threshold": seed, "min_seed_px": min_px}
        grid[f"sigma{sigma:g}_seed{seed:g}_min{min_px}"] = {
            **setting,
            **scores(held, held_t, lambda p, s=setting: watershed_cells(p, **s)),
        }
    seconds = (time.perf_counter() - t0) / (len(grid) * len(held))
    best_key = max(grid, key=lambda k: grid[k]["v_rand_thinned"])
    best = {k: grid[best_key][k] for k in ("sigma", "seed_threshold", "min_seed_px")}
    result = {
        "checkpoint": args.checkpoint,
        "arm": ck.extra.get("arm"),
        "tta": tta,
        "held_out_20_24": {
            "threshold": {
                "membrane_threshold": thr,
                **scores(held, held_t, by_threshold),
            },
            "watershed_best": {**best, **{k: grid[best_key][k] for k in KEYS}},
            "grid": grid,
        },
        "val": {
            "slices": VAL,
            "threshold": {
                "membrane_threshold": thr,
                **scores(val, val_t, by_threshold),
            },
            "watershed": {**best, **scores(val, val_t, lambda p: watershed_cells(p, **best))},
        },
        "watershed_seconds_per_slice": seconds,
        "note": f"watershed settings chosen on slices {HELD[0]}-{HELD[-1]} by v_rand_thinned, "
        "scored once on 25-29; 'threshold' = the checkpoint's own membrane threshold (chosen on "
        "20-24); label-map scores only (pixel error is the threshold's, see val)",
    }
    update_results(NAME, "watershed", result, RESULTS)
    report(RESULTS)
    v = result["val"]
    print(
        f"25-29 V_rand thinned: threshold {v['threshold']['v_rand_thinned']:.4f}, watershed "
        f"{v['watershed']['v_rand_thinned']:.4f} ({best})"
    )


if __name__ == "__main__":
    main()
