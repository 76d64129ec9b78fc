"""Per-structure probability thresholds for the Drishti-GS1 pipeline, chosen by cross-validation on
the training images only: each fold's pipeline (trained without its held-out images) predicts its
held-out photographs once; the disc and cup masks are then cut at every pair of thresholds of the
grid, cleaned as predict cleans them (one component, holes filled, cup inside the disc, ellipse fit
as the CV chose), and scored against the >= 2-experts masks. Writes the table into
benchmarks/results/fundus_drishti.json under "cv_thresholds".

    python benchmarks/fundus_drishti.py --stage ablate --ablate polar_area_loss --roi-epochs 300 \
        --fresh-base cv_ablation_polar_epochs_300  # 3 fold pipelines, ~10 min each
    python benchmarks/drishti_thresholds.py          # ~3 min: predicts once, sweeps the grid
    python benchmarks/drishti_thresholds.py --train-missing  # first trains the folds not there
                                                     # (~10 min each), the same recipe

The disc threshold that places the ROI stays at 0.5 (the pipeline's own): only the final masks'
cut changes. Data: ../shared/data/drishti_gs1 (or --data).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.data.io import read_image, read_mask  # noqa: E402
from biounet.evaluate import expert_cdr  # noqa: E402
from biounet.fundus.cdr import vertical_cdr  # noqa: E402
from biounet.fundus.pipeline import fit_fundus  # noqa: E402
from biounet.fundus.postprocess import clean_disc_cup  # noqa: E402
from biounet.metrics import binary_scores  # noqa: E402
from biounet.predictor import PredictOptions, make_predictor  # noqa: E402
from common import SHARED_DATA, require, update_results  # noqa: E402
from fundus_drishti import (  # noqa: E402
    ADOPTED_ABLATION,
    adopted_config,
    cv_folds,
    fold_view,
    fresh_dir,
)

GRID = (0.3, 0.4, 0.5, 0.6, 0.7)


def threshold_scores(
    probs: list[np.ndarray],
    truths: list[tuple[np.ndarray, np.ndarray]],
    refs: list[float],
    td: float,
    tc: float,
    ellipse: bool,
) -> dict[str, float]:
    """Masks cut at disc ``td`` and cup ``tc`` and cleaned as predict cleans them: mean disc / cup
    Dice and vCDR MAE against ``refs``. probs: (2, H, W) float per image (disc, cup); truths:
    (disc, cup) bool masks; refs: reference vCDR per image (NaN: not counted)."""
    d_dice, c_dice, err = [], [], []
    for p, (d_t, c_t), ref in zip(probs, truths, refs, strict=True):
        disc, cup = clean_disc_cup(p[0] > td, p[1] > tc, fit_ellipse=ellipse)
        d_dice.append(binary_scores(disc, d_t)["dice"])
        c_dice.append(binary_scores(cup, c_t)["dice"])
        v = vertical_cdr(disc, cup)
        if np.isfinite(v) and np.isfinite(ref):
            err.append(abs(v - ref))
    return {
        "disc_dice_mean": float(np.mean(d_dice)),
        "cup_dice_mean": float(np.mean(c_dice)),
        "vcdr_mae": float(np.mean(err)),
    }


def sweep(
    probs: list[np.ndarray],
    truths: list[tuple[np.ndarray, np.ndarray]],
    experts: list[float],
    ellipse: bool,
) -> dict[str, dict[str, float]]:
    """``threshold_scores`` for each (disc, cup) threshold pair of ``GRID``."""
    return {
        f"disc{td:.1f}_cup{tc:.1f}": {
            "disc": td,
            "cup": tc,
            **threshold_scores(probs, truths, experts, td, tc, ellipse),
        }
        for td in GRID
        for tc in GRID
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_fundus"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-ellipse", action="store_true")
    ap.add_argument(
        "--train-missing",
        action="store_true",
        help="train the folds whose pipeline is missing with the adopted recipe (fundus_drishti's "
        "ADOPTED, as --stage ablate --ablate ADOPTED_ABLATION trains them)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = require(args.data)
    train, folds = cv_folds(root, args)
    experts = expert_cdr(root)
    probs, truths, cdrs, stems = [], [], [], []
    n_folds = 0
    for k, held in enumerate(folds):
        ck = fresh_dir(args.work, ADOPTED_ABLATION, k) / "fundus.pt"
        view = fold_view(root, args.work, train, held, k)
        if not ck.is_file() and args.train_missing:
            ck = fit_fundus(adopted_config(view, ck.parent.with_suffix(".yaml")), ck.parent)
        if not ck.is_file():
            break
        # predict's own inference path (batch norm folded, bf16 weights), as evaluate scores it
        pred = make_predictor(ck, PredictOptions(tta=True, fit_ellipse=not args.no_ellipse))
        lab = pred.labels
        for stem in held:
            img = read_image(next((view / "images").glob(f"{stem}.*")))
            p = pred.predict(img).prob
            probs.append(np.stack([p[lab.index("disc")], p[lab.index("cup")]]))
            truths.append(
                tuple(read_mask(view / "masks" / lb / f"{stem}.png") > 0 for lb in ("disc", "cup"))
            )
            cdrs.append(experts.get(stem, float("nan")))
            stems.append(stem)
        n_folds += 1
        logging.info("fold %d predicted", k)
    if not probs:
        raise SystemExit(
            f"{fresh_dir(args.work, ADOPTED_ABLATION, 0)}: no fold pipeline (--train-missing)"
        )
    table = sweep(probs, truths, cdrs, not args.no_ellipse)
    best = max(table.values(), key=lambda r: (r["disc_dice_mean"] + r["cup_dice_mean"]) / 2)
    base = table["disc0.5_cup0.5"]
    result: dict[str, Any] = {
        "folds_evaluated": n_folds,
        "images": len(stems),
        "fold_runs": f"the adopted recipe's fold pipelines ('{ADOPTED_ABLATION}' trained afresh)",
        "ellipse": not args.no_ellipse,
        "grid": table,
        "at_0.5": base,
        "best_by_mean_dice": best,
        "note": "out-of-fold probabilities of each fold's pipeline (flip TTA), masks cut at each "
        "threshold pair and cleaned as predict does; scored against the >= 2-experts masks; "
        "vCDR MAE against the mean of the 4 experts",
    }
    update_results("fundus_drishti", "cv_thresholds", result)
    print(
        f"0.5/0.5: disc {base['disc_dice_mean']:.4f} cup {base['cup_dice_mean']:.4f} "
        f"vCDR {base['vcdr_mae']:.4f}; best {best['disc']}/{best['cup']}: disc "
        f"{best['disc_dice_mean']:.4f} cup {best['cup_dice_mean']:.4f} vCDR {best['vcdr_mae']:.4f}"
    )


if __name__ == "__main__":
    main()
