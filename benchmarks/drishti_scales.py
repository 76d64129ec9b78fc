"""Test-time ROI sizes for the Drishti-GS1 pipeline, chosen by cross-validation on the training
images only: each fold's pipeline (the adopted recipe, trained without its held-out images) reads
each held-out photograph as predict does (flip TTA), then again with the ROI's side scaled by each
factor of SCALES about the same centre; the disc and cup probabilities are averaged over each set of
factors, cut at 0.5, cleaned as predict cleans them (ellipse fit as the CV chose) and scored against
the >= 2-experts masks. Writes benchmarks/results/fundus_drishti.json under "cv_tta_scales".

    python benchmarks/drishti_scales.py   # ~5 min with the 5 fold pipelines of drishti_thresholds.py

Data: ../shared/data/drishti_gs1 (or --data).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.data.io import read_image, read_mask  # noqa: E402
from biounet.data.transforms import match_channels  # noqa: E402
from biounet.evaluate import expert_cdr  # noqa: E402
from biounet.fundus.roi import Roi  # noqa: E402
from biounet.predictor import PredictOptions, make_predictor  # noqa: E402
from common import SHARED_DATA, require, update_results  # noqa: E402
from drishti_thresholds import threshold_scores  # noqa: E402
from fundus_drishti import ADOPTED_ABLATION, cv_folds, fold_view, fresh_dir  # noqa: E402

SCALES = (0.8, 0.85, 0.9, 1.0, 1.1, 1.15, 1.25)
SETS = {
    "1": (1.0,),
    "0.9,1,1.1": (0.9, 1.0, 1.1),
    "0.85,1,1.15": (0.85, 1.0, 1.15),
    "0.8,1,1.25": (0.8, 1.0, 1.25),
    "0.8,0.9,1,1.1,1.25": (0.8, 0.9, 1.0, 1.1, 1.25),
    "all 7": SCALES,
}


def scores(
    reads: list[dict[float, np.ndarray]],
    truths: list[tuple[np.ndarray, np.ndarray]],
    experts: list[float],
    scales: tuple[float, ...],
) -> dict[str, float]:
    """Mean disc / cup Dice and vCDR MAE of the probabilities averaged over ``scales``.
    reads: per image {scale: (2, H, W) disc, cup probabilities}; truths: (disc, cup) bool masks."""
    probs = [np.mean([r[s].astype(np.float32) for s in scales], axis=0) for r in reads]
    return threshold_scores(probs, truths, experts, 0.5, 0.5, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_fundus"))
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = require(args.data)
    train, folds = cv_folds(root, args)
    experts = expert_cdr(root)
    reads: list[dict[float, np.ndarray]] = []
    truths, cdrs, per_fold = [], [], []
    seconds = {s: 0.0 for s in SCALES}
    for k, held in enumerate(folds):
        ck = fresh_dir(args.work, ADOPTED_ABLATION, k) / "fundus.pt"
        if not ck.is_file():
            break
        view = fold_view(root, args.work, train, held, k)
        # predict's own path (flips, no extra scales), then the extra ROI reads on its ROI
        pred = make_predictor(ck, PredictOptions(tta=True, fit_ellipse=True, tta_scales=(1.0,)))
        inner, lab = pred.inner, pred.labels
        start = len(reads)
        for stem in held:
            img = read_image(next((view / "images").glob(f"{stem}.*")))
            t0 = time.perf_counter()
            r = pred.predict(img)
            seconds[1.0] += time.perf_counter() - t0
            m = r.measures
            roi = Roi(m["roi_cy"], m["roi_cx"], m["roi_side"])
            x = match_channels(img, int(inner.roi.preprocess["in_channels"]))
            read = {1.0: r.prob}
            for s in SCALES:
                if s != 1.0:
                    t0 = time.perf_counter()
                    read[s] = inner.image_probs(x, Roi(roi.cy, roi.cx, roi.side * s))
                    seconds[s] += time.perf_counter() - t0
            reads.append(
                {
                    s: np.stack([p[lab.index("disc")], p[lab.index("cup")]]).astype(np.float16)
                    for s, p in read.items()
                }
            )
            truths.append(
                tuple(read_mask(view / "masks" / lb / f"{stem}.png") > 0 for lb in ("disc", "cup"))
            )
            cdrs.append(experts.get(stem, float("nan")))
        per_fold.append(
            {
                name: scores(reads[start:], truths[start:], cdrs[start:], sc)
                for name, sc in SETS.items()
            }
        )
        logging.info("fold %d read", k)
    if not reads:
        raise SystemExit(
            f"{fresh_dir(args.work, ADOPTED_ABLATION, 0)}: no fold pipeline (drishti_thresholds.py "
            "--train-missing trains them)"
        )
    n = len(reads)
    table = {name: scores(reads, truths, cdrs, sc) for name, sc in SETS.items()}
    result: dict[str, Any] = {
        "folds_evaluated": len(per_fold),
        "images": n,
        "fold_runs": f"the adopted recipe's fold pipelines ('{ADOPTED_ABLATION}' trained afresh)",
        "table": table,
        "per_fold": per_fold,
        "extra_read_s_per_image": {str(s): t / n for s, t in seconds.items() if s != 1.0},
        "predict_s_per_image_flips_only": seconds[1.0] / n,
        "note": "out-of-fold: each fold's pipeline reads its held-out photographs (flip TTA); the "
        "ROI model again at each factor x the found ROI's side, same centre; probabilities averaged "
        "over each set, cut at 0.5, cleaned as predict does (ellipse fit), scored against the >= 2 "
        "experts masks; vCDR MAE against the mean of the 4 experts",
    }
    update_results("fundus_drishti", "cv_tta_scales", result)
    for name, m in table.items():
        print(
            f"{name:>20}: disc {m['disc_dice_mean']:.4f} cup {m['cup_dice_mean']:.4f} "
            f"vCDR {m['vcdr_mae']:.4f}"
        )


if __name__ == "__main__":
    main()
