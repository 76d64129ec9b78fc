"""Two pipelines of the adopted Drishti-GS1 recipe trained with different seeds, averaged (a seed
ensemble), against one: decided by cross-validation on the training images, then, with --final,
the same on the 51 test images. Writes into benchmarks/results/fundus_drishti.json
("cv_ablation_seed_ensemble", "test_seed_ensemble").

    python benchmarks/fundus_drishti.py --stage ablate --ablate polar --roi-epochs 200 \
        --fresh-base cv_ablation_no_holdout   # seed-0 fold pipelines (~7 min each)
    python benchmarks/drishti_seeds.py --folds-run 3  # seed-1 fold pipelines, both scored
    python benchmarks/drishti_seeds.py --final        # also: seed-1 final pipeline, test

Seed 0's pipelines and their held-out scores are the ones fundus_drishti.py made (its
``fresh_dir`` folders of the adopted recipe, ``ADOPTED``, and WORK/final_run).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.data.folder import read_splits  # noqa: E402
from biounet.fundus.pipeline import fit_fundus, save_ensemble  # noqa: E402
from common import SHARED_DATA, make_view, require, update_results  # noqa: E402
from fundus_drishti import (  # noqa: E402
    ADOPTED,
    ADOPTED_ABLATION,
    LABELS,
    adopted_config,
    brief,
    chosen,
    cv_folds,
    fold_view,
    fresh_dir,
    pooled,
    record_ablation,
    scored,
    time_predict,
)


def train_seed(view: Path, out: Path, seed: int) -> tuple[Path, float]:
    """The adopted recipe with ``seed``; (checkpoint, training seconds, 0 when it was there)."""
    if (out / "fundus.pt").is_file():
        return out / "fundus.pt", 0.0
    t0 = time.perf_counter()
    fc = adopted_config(view, out.with_suffix(".yaml"))
    ck = fit_fundus(dataclasses.replace(fc, seed=seed), out)
    return ck, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_fundus"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--folds-run", type=int, default=3, help="the first N folds")
    ap.add_argument("--seed", type=int, default=1, help="the second pipeline's seed")
    ap.add_argument("--final", action="store_true", help="also the test images (after the CV)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root, work = require(args.data), args.work
    train, folds = cv_folds(root, args)
    tta, post, ell, variant = chosen(args)
    base, alt, times = [], [], []
    for k, held in enumerate(folds[: args.folds_run]):
        view = fold_view(root, work, train, held, k)
        ck0 = fresh_dir(work, ADOPTED_ABLATION, k) / "fundus.pt"
        if not ck0.is_file():
            raise SystemExit(f"{ck0}: train the seed-0 fold pipelines first (see --help)")
        ck1, secs = train_seed(view, work / f"seed{args.seed}_run_{k}", args.seed)
        times.append(secs)
        ens = save_ensemble([ck0, ck1], work / f"seed_ensemble_{k}.pt")
        # seed 0 as the fresh ablation scored it (read back, not evaluated again)
        base.append(
            scored(ck0, view, fresh_dir(work, ADOPTED_ABLATION, k, "eval"), (tta, post, ell))
        )
        alt.append(scored(ens, view, work / f"seed_ensemble_eval_{k}", (tta, post, ell)))
        logging.info("fold %d done", k)
    record_ablation(
        "seed_ensemble",
        {"members": [0, args.seed], **vars(ADOPTED)},
        variant,
        pooled(base),
        alt,
        {
            "fold_train_seconds_this_run": times,
            "note": f"base = the seed-0 pipeline of each fold; seed_ensemble = it and a seed-"
            f"{args.seed} pipeline of the same recipe, probabilities averaged; first "
            f"{len(alt)} folds",
        },
    )
    if not args.final:
        return
    splits = read_splits(root)
    view = make_view(
        root, work / "final_view", {"train": splits["train"], "test": splits["test"]}, LABELS
    )
    ck0 = work / "final_run" / "fundus.pt"
    if not ck0.is_file():
        raise SystemExit(f"{ck0}: run fundus_drishti.py --stage final first")
    ck1, secs = train_seed(view, work / f"final_run_seed{args.seed}", args.seed)
    ens = save_ensemble([ck0, ck1], work / "final_seed_ensemble.pt")
    s = scored(ens, view, work / "final_eval_seed_ensemble", (tta, post, ell))
    update_results(
        "fundus_drishti",
        "test_seed_ensemble",
        brief(s)
        | {
            "members": [0, args.seed],
            "second_member_train_s": secs,
            "predict_s_per_image": time_predict(ens, view, splits["test"][:10], tta, post, ell),
            "note": "the final pipeline (seed 0) and a seed-"
            f"{args.seed} one of the same recipe, averaged; >= 2 experts",
        },
    )


if __name__ == "__main__":
    main()
