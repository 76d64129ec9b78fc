"""Fundus models across datasets: train the two-stage pipeline on Drishti-GS1 only, on REFUGE (Canon,
512 px, mostly normal eyes) only, and on both (one dataset list, equal sampling weights), then test
each on both official test sets. Writes benchmarks/results/fundus_generalization.json and .md.

    python benchmarks/fundus_generalization.py            # train what is missing, evaluate, report
    python benchmarks/fundus_generalization.py --quick    # a tiny budget, to check it runs
    python benchmarks/fundus_generalization.py --site-thresholds --runs refuge_all_polar_grey
        # no training: thresholds chosen on a few labelled training images of the other dataset

Every run trains on the same number of sampled images (--locator-draws, --roi-draws), so the runs
cost about the same whatever their dataset sizes. Runs already trained in --work are reused.
Data: ../shared/data/{drishti_gs1,refuge_canon512} (or --drishti / --refuge).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Load lazily imported modules now, so edits to the tree during a long run cannot break it midway.
import biounet.fundus.cdr  # noqa: E402, F401
import biounet.fundus.postprocess  # noqa: E402, F401
import biounet.surface  # noqa: E402, F401
import biounet.viz  # noqa: E402, F401
from biounet.checkpoint import load_any  # noqa: E402
from biounet.data.folder import read_splits  # noqa: E402
from biounet.data.io import read_image, read_mask  # noqa: E402
from biounet.evaluate import evaluate_checkpoint  # noqa: E402
from biounet.fundus.pipeline import (  # noqa: E402
    TTA_SCALES,
    FundusConfig,
    FundusPredictor,
    fit_fundus,
)
from biounet.fundus.screening import referral_stats  # noqa: E402
from biounet.fundus.train_roi import SCALE_JITTER  # noqa: E402
from biounet.metrics import binary_scores  # noqa: E402
from biounet.predictor import PredictOptions  # noqa: E402
from biounet.thresholds import choose_thresholds  # noqa: E402
from common import RESULTS, SHARED_DATA, git_commit, machine, require  # noqa: E402
from generalization_report import write_markdown, write_selection_markdown  # noqa: E402

LABELS = ("disc", "cup")
# images drawn in training by a run of draws x 1 (Run.locator_draws_x, Run.roi_draws_x): locator,
# crop model (--locator-draws, --roi-draws)
DRAWS = (1600, 4800)


class Run(NamedTuple):
    sources: tuple[str, ...]  # training datasets
    camera_augment: bool
    roi_draws_x: int  # x --roi-draws
    locator_draws_x: int  # x --locator-draws
    scale_jitter: tuple[float, float] = SCALE_JITTER  # ROI crops' side factor range (training)
    val_fraction: float = 0.2  # training images held out per dataset; 0: none, last epoch kept
    polar: bool = False  # the crop model on polar crops (FundusConfig.polar)
    colour_augment: bool = False  # saturation + per-channel gamma (FundusConfig.colour_augment)
    area_loss: bool = False  # area-weighted polar loss (FundusConfig.polar_area_loss)
    grey: bool = False  # both stages on the luminance (FundusConfig.grey)
    weights: tuple[float, ...] | None = None  # sampling weight per source (None: 1 each)
    seed: int | None = None  # the training seed (None: --seed)
    locator_grey: bool = False  # the locator alone on the luminance (FundusConfig.locator_grey)


RUNS = {
    "drishti_plain": Run(("drishti",), False, 1, 1),
    "drishti": Run(("drishti",), True, 1, 1),
    "refuge": Run(("refuge",), True, 1, 1),
    "both": Run(("drishti", "refuge"), True, 1, 1),
    "both_plain": Run(("drishti", "refuge"), False, 1, 1),
    "both_long": Run(("drishti", "refuge"), True, 3, 2),
    "both_xl": Run(("drishti", "refuge"), True, 5, 3),
    "refuge_xl": Run(("refuge",), True, 5, 3),
    "refuge_wide": Run(("refuge",), True, 1, 1, (0.5, 1.6)),
    # both_xl without a hold-out, as the Drishti-GS1 cross-validation chose (fundus_drishti.py
    # ablation no_holdout: every training image used, the last epoch kept)
    "both_all": Run(("drishti", "refuge"), True, 5, 3, val_fraction=0.0),
    # both_all with the crop model on polar crops, as the Drishti-GS1 cross-validation chose next
    # (fundus_drishti.py ablation polar)
    "both_all_polar": Run(("drishti", "refuge"), True, 5, 3, val_fraction=0.0, polar=True),
    # REFUGE only with the adopted recipe (no hold-out, polar crops): does it carry to Drishti-GS1?
    "refuge_all_polar": Run(("refuge",), True, 5, 3, val_fraction=0.0, polar=True),
    # colour augmentation (saturation down to grey, per-channel gamma), chosen with --select on
    # Drishti-GS1's training photographs at a fifth of the budget: refuge_small vs
    # refuge_small_colour
    "refuge_small": Run(("refuge",), True, 1, 1, val_fraction=0.0, polar=True),
    "refuge_small_colour": Run(
        ("refuge",), True, 1, 1, val_fraction=0.0, polar=True, colour_augment=True
    ),
    "refuge_small_grey": Run(
        ("refuge",), True, 1, 1, val_fraction=0.0, polar=True, colour_augment=True, grey=True
    ),
    # refuge_all_polar as --select chose: both stages on the luminance, gamma augmentation
    "refuge_all_polar_grey": Run(
        ("refuge",), True, 5, 3, val_fraction=0.0, polar=True, colour_augment=True, grey=True
    ),
    # both_all_polar with what was chosen since: the area-weighted polar loss (Drishti-GS1
    # cross-validation), both stages on the luminance with gamma augmentation (--select on
    # Drishti-GS1 training photographs, then the Drishti-GS1 cross-validation, ablation "grey")
    "both_all_polar_grey": Run(
        ("drishti", "refuge"),
        True,
        5,
        3,
        val_fraction=0.0,
        polar=True,
        colour_augment=True,
        area_loss=True,
        grey=True,
    ),
}
# both_all_polar_grey holding out a fifth of each training split (--holdout-thresholds): the
# held-out images choose the best epoch and each site's disc and cup thresholds
RUNS["both_holdout_grey"] = RUNS["both_all_polar_grey"]._replace(val_fraction=0.2)
# the same in colour (generalization_holdout.py: grey or colour, judged on the held-out images of
# both training splits), and that recipe on every training image
RUNS["both_holdout_colour"] = RUNS["both_holdout_grey"]._replace(grey=False)
RUNS["both_all_polar_colour"] = RUNS["both_all_polar_grey"]._replace(grey=False)
# the colour recipe with the grey locator (hybrid_locator.py's lead as a trained recipe; not yet
# judged): held out as both_holdout_colour, and on every training image
RUNS["both_holdout_locator_grey"] = RUNS["both_holdout_colour"]._replace(locator_grey=True)
RUNS["both_all_polar_locator_grey"] = RUNS["both_all_polar_colour"]._replace(locator_grey=True)
# the adopted run trained again, only the seed changed: the spread of one training, not a candidate
RUNS["both_all_polar_colour_seed1"] = RUNS["both_all_polar_colour"]._replace(seed=1)
# the two-dataset model the README recommends: the Drishti-GS1 cross-validation's recipe in colour
# (generalization_holdout.py chose colour over grey on both training splits' held-out images)
ADOPTED = "both_all_polar_colour"
HOLDOUT = "both_holdout_colour"
# inference settings of the fundus issue's cross-validation: post-processing, flip TTA, ellipse fit
TTA, POST, ELLIPSE = True, True, True
# and the ROI sizes averaged with TTA (chosen there too: benchmarks/drishti_scales.py); runs scored
# before that read at scale 1 only (their rows say so)
SCALES = TTA_SCALES
# site thresholds (--site-thresholds): how many labelled training images (splits.json order) of
# a dataset it never saw a model gets its thresholds chosen on
SITE_SIZES = (10, 50)


def train_run(
    name: str,
    roots: dict[str, Path],
    work: Path,
    args: argparse.Namespace,
    run: Run | None = None,
) -> Path:
    """Trains ``run`` (default ``RUNS[name]``) into ``work/name`` unless it is there already; each
    source's training split is ``roots[source]``'s."""
    out = work / name
    if (out / "fundus.pt").is_file():
        return out / "fundus.pt"
    fc = fundus_config(name, roots, work, args, run)
    t0 = time.perf_counter()
    ck = fit_fundus(fc, out)
    (out / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return ck


def fundus_config(
    name: str,
    roots: dict[str, Path],
    work: Path,
    args: argparse.Namespace,
    run: Run | None = None,
) -> FundusConfig:
    """The FundusConfig ``train_run`` trains ``run`` (default ``RUNS[name]``) with; several
    sources are listed in ``work/name.yaml``."""
    run = run or RUNS[name]
    sources = run.sources
    if len(sources) == 1:
        data, n_train = str(roots[sources[0]]), n_training(roots[sources[0]], run.val_fraction)
    else:
        spec = work / f"{name}.yaml"
        weights = run.weights or (1.0,) * len(sources)
        spec.write_text(
            "datasets:\n"
            + "".join(
                f"  - root: {roots[s]}\n    weight: {w:g}\n"
                for s, w in zip(sources, weights, strict=True)
            )
        )
        data, n_train = str(spec), sum(n_training(roots[s], run.val_fraction) for s in sources)
    return FundusConfig(
        data_root=data,
        labels=LABELS,
        locator_epochs=max(2, math.ceil(args.locator_draws * run.locator_draws_x / n_train)),
        roi_epochs=max(2, math.ceil(args.roi_draws * run.roi_draws_x / n_train)),
        seed=args.seed if run.seed is None else run.seed,
        camera_augment=run.camera_augment,
        roi_scale_jitter=run.scale_jitter,
        val_fraction=run.val_fraction,
        polar=run.polar,
        colour_augment=run.colour_augment,
        polar_area_loss=run.area_loss,
        grey=run.grey,
        locator_grey=run.locator_grey,
    )


def val_dice(run: Path) -> float:
    """Best mean validation Dice of a run's crop model (its held-out training images)."""
    rows = list(csv.DictReader((run / "roi" / "metrics.csv").open()))
    return max(float(r["val_dice_mean"]) for r in rows)


def n_training(root: Path, val_fraction: float) -> int:
    """Training images after the validation hold-out (``val_fraction`` of them, at least one)."""
    n = len(read_splits(root)["train"])
    return n - (max(1, round(n * val_fraction)) if val_fraction > 0 else 0)


def inference_options(cuts: tuple[tuple[str, float], ...] = ()) -> PredictOptions:
    """How every run is scored (TTA, SCALES, post-processing, ellipses); ``cuts``: per-label
    thresholds (site_thresholds)."""
    return PredictOptions(
        tta=TTA, postprocess=POST, fit_ellipse=ELLIPSE, tta_scales=SCALES, label_thresholds=cuts
    )


def evaluate_run(
    ck: Path,
    test: str,
    root: Path,
    work: Path,
    labels_csv: Path | None,
    split: str = "test",
    cuts: tuple[tuple[str, float], ...] = (),
) -> dict:
    """``ck`` scored on ``root``'s ``split`` (reusing an earlier evaluation in ``work``): the
    row of the results' tables."""
    scales = "" if SCALES == (1.0,) else "_scales_" + "-".join(f"{s:g}" for s in SCALES)
    at = "".join(f"_{lb}{t:g}" for lb, t in cuts)
    out = work / (
        f"eval_{ck.parent.name}_on_{test}" + ("" if split == "test" else f"_{split}") + scales + at
    )
    if (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
    else:
        summary = evaluate_checkpoint(ck, root, split, out, inference_options(cuts), report=False)
    rows = list(csv.DictReader((out / "per_image_measures.csv").open()))
    diagnosis = read_diagnosis(labels_csv)
    r: dict[str, Any] = {"n_images": summary["n_images"], "tta_scales": list(SCALES)}
    for lb in LABELS:
        m = summary["labels"][lb]
        r[lb] = {k: m.get(k) for k in ("dice_mean", "dice_std", "iou_mean", "hd95_mean")}
    vc = summary["vcdr"]
    r["vcdr_mae"] = vc.get("mae_vs_experts_mean", vc["mae_vs_masks"])
    r["vcdr_reference"] = (
        "mean of the 4 experts' vCDR (meta/cdr_values.csv)"
        if "mae_vs_experts_mean" in vc
        else "vCDR of the ground-truth masks"
    )
    r["vcdr_mae_vs_masks"] = vc["mae_vs_masks"]
    r.update(referral_stats(rows, diagnosis))
    r["flagged_doubtful"] = sum(1 for row in rows if row.get("flags"))
    r["doubt_flags"] = flag_value(rows, list(csv.DictReader((out / "per_image.csv").open())))
    return r


def flag_value(measures: list[dict[str, str]], scores: list[dict[str, str]]) -> dict[str, Any]:
    """Whether the doubt flags point at the bad cases: cup Dice and vCDR error of flagged and of
    unflagged images."""
    cup = {r["stem"]: float(r["dice"]) for r in scores if r["label"] == "cup"}
    out: dict[str, Any] = {}
    for name, sel in (("flagged", True), ("unflagged", False)):
        rows = [r for r in measures if bool(r.get("flags")) == sel]
        err = [abs(float(r["vcdr"]) - float(r["vcdr_true_masks"])) for r in rows]
        err = [e for e in err if not math.isnan(e)]
        out[name] = {
            "n": len(rows),
            "cup_dice_mean": float(np.mean([cup[r["stem"]] for r in rows])) if rows else None,
            "vcdr_abs_err_mean": float(np.mean(err)) if err else None,
        }
    return out


def read_diagnosis(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    return {row["stem"]: row["label"] for row in csv.DictReader(path.open()) if row.get("label")}


def crop_inputs(ck: Path, root: Path, stems: list[str], shares: list[float]) -> dict[str, Any]:
    """Disc-centred crops of full test photographs, the disc filling ``share`` of the crop's area,
    predicted with input_kind="auto": Dice per structure, how often the crop was recognised and
    how often the reading was flagged as doubtful (and by which flags)."""
    pred = FundusPredictor(
        load_any(ck), tta=TTA, fit_ellipse=ELLIPSE, input_kind="auto", tta_scales=SCALES
    )
    out: dict[str, Any] = {}
    for share in shares:
        dice: dict[str, list[float]] = {lb: [] for lb in LABELS}
        as_crop = 0
        flags: dict[str, int] = {}
        for stem in stems:
            img = read_image(next((root / "images").glob(f"{stem}.*")))
            masks = {lb: read_mask(root / "masks" / lb / f"{stem}.png") > 0 for lb in LABELS}
            rows, cols = np.nonzero(masks["disc"])
            side = max(8, round(math.sqrt(masks["disc"].sum() / share)))
            cy, cx = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
            y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
            sl = (slice(y0, y0 + side), slice(x0, x0 + side))
            res = pred.predict(img[sl])
            as_crop += pred.last_input_kind == "crop"
            for f in res.flags:
                flags[f] = flags.get(f, 0) + 1
            flags["any"] = flags.get("any", 0) + bool(res.flags)
            for lb in LABELS:
                dice[lb].append(binary_scores(res.masks[lb], masks[lb][sl])["dice"])
        out[f"disc_share_{share:.2f}"] = {
            "n_images": len(stems),
            "recognised_as_crop": as_crop,
            "flagged": flags,
            **{f"{lb}_dice_mean": float(np.mean(dice[lb])) for lb in LABELS},
        }
    return out


def crops_only(args: argparse.Namespace, roots: dict[str, Path]) -> None:
    """--crops-only: ``crop_inputs`` of the adopted model again, the rest of the results kept."""
    path = RESULTS / "fundus_generalization.json"
    result = json.loads(path.read_text())
    stems = read_splits(roots["refuge"])["test"][: args.crop_images]
    ck = args.work / ADOPTED / "fundus.pt"
    result["crops_refuge_test"] = crop_inputs(ck, roots["refuge"], stems, [0.1, 0.3, 0.6])
    result["crops_model"], result["crops_commit"] = ADOPTED, git_commit()
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, path.with_suffix(".md"))
    print(path.with_suffix(".md").read_text())


def merged_with_previous(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run of some of the RUNS (``--runs``) keeps the other runs' results already in ``path``
    (each run's commit is in ``run_commits``) and their site thresholds; the runs of this call
    replace theirs."""
    if not path.is_file():
        return result | {"run_commits": {k: result["commit"] for k in result["train_time_s"]}}
    old = json.loads(path.read_text())
    done = set(result["train_time_s"])
    commits = old.get("run_commits") or {k: old.get("commit") for k in old.get("train_time_s", {})}
    merged = dict(result)
    merged["runs"] = {
        **{k: v for k, v in old.get("runs", {}).items() if k.rsplit("_to_", 1)[0] not in done},
        **result["runs"],
    }
    merged["train_time_s"] = {**old.get("train_time_s", {}), **result["train_time_s"]}
    merged["run_commits"] = {**commits, **{k: result["commit"] for k in done}}
    for key in ("both_chosen_by_validation", "crops_model", "crops_refuge_test"):
        if merged.get(key) is None:
            merged[key] = old.get(key)
    # site thresholds of the runs not trained again (a retrained run's are stale)
    site = {k: v for k, v in (old.get("site_thresholds") or {}).items() if v["run"] not in done}
    if site:
        merged["site_thresholds"] = site
    held = old.get("holdout_thresholds")
    if held and held["run"] not in done:
        merged["holdout_thresholds"] = held
    return merged


def select(args: argparse.Namespace, roots: dict[str, Path], t_start: float) -> None:
    """Train ``--runs`` and score each on the 50 Drishti-GS1 *training* photographs (for runs that
    did not train on them: a recipe for unseen cameras chosen without any test image)."""
    scores: dict[str, Any] = {}
    train_s: dict[str, float] = {}
    for name in args.runs.split(","):
        if "drishti" in RUNS[name].sources:
            raise SystemExit(f"--select: run {name} trained on Drishti-GS1's training images")
        ck = train_run(name, roots, args.work, args)
        train_s[name] = float((ck.parent / "train_seconds.txt").read_text())
        logging.info("scoring %s on Drishti-GS1 train", name)
        scores[name] = evaluate_run(ck, "drishti", roots["drishti"], args.work, None, "train")
    result = {
        "commit": git_commit(),
        "machine": machine(),
        "wall_time_s": time.perf_counter() - t_start,
        "scored_on": "Drishti-GS1 training split (50 photographs), >= 2 experts masks",
        "settings": {
            "locator_draws": args.locator_draws,
            "roi_draws": args.roi_draws,
            "runs": {k: RUNS[k]._asdict() for k in scores},
        },
        "train_time_s": train_s,
        "runs": scores,
    }
    name = "fundus_generalization_selection" + ("_quick" if args.quick else "")
    out = args.work if args.quick else RESULTS
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_selection_markdown(result, out / f"{name}.md")
    print((out / f"{name}.md").read_text())


def eval_sets(roots: dict[str, Path]) -> dict[str, tuple[Path, Path | None]]:
    """Each dataset of ``roots`` -> (its folder, its glaucoma labels file where it has one:
    REFUGE's meta/labels.csv; Drishti-GS1 has none)."""
    labels = {name: root / "meta" / "labels.csv" for name, root in roots.items()}
    return {n: (roots[n], p if p.is_file() else None) for n, p in labels.items()}


def site_thresholds(args: argparse.Namespace, roots: dict[str, Path]) -> None:
    """For each of ``--runs`` (already trained in ``--work``) and each dataset it was not trained
    on (its new site): disc and cup thresholds chosen by ``choose_thresholds`` on the first n of
    the site's training images (n in SITE_SIZES; no test image), then the site's test set scored
    once with them. Into the results' "site_thresholds" (the rest of the file kept) and its
    markdown."""
    name = "fundus_generalization_quick" if args.quick else "fundus_generalization"
    path = (args.work if args.quick else RESULTS) / f"{name}.json"
    result = json.loads(path.read_text())
    site = result.get("site_thresholds") or {}
    for run in args.runs.split(","):
        new_sites = [d for d in roots if d not in RUNS[run].sources]
        if not new_sites:
            raise SystemExit(f"--site-thresholds: run {run} trained on every dataset")
        ck = args.work / run / "fundus.pt"
        if not ck.is_file():
            raise SystemExit(f"{ck}: not found; train run {run} first (--runs {run})")
        for test in new_sites:
            root, labels_csv = eval_sets(roots)[test]
            train = read_splits(root)["train"]
            for n in SITE_SIZES if not args.quick else (3,):
                logging.info("%s: thresholds on %d %s training images", run, n, test)
                out = args.work / f"thresholds_{run}_{test}_train_{n}"
                chosen = (
                    json.loads((out / "thresholds.json").read_text())
                    if (out / "thresholds.json").is_file()
                    else choose_thresholds(
                        ck, root, "train", out, inference_options(), stems=train[:n]
                    )
                )
                cuts = tuple((lb, c["threshold"]) for lb, c in chosen["labels"].items())
                r = evaluate_run(ck, test, root, args.work, labels_csv, cuts=cuts)
                site[f"{run}_to_{test}_{n}"] = {
                    "run": run,
                    "site": test,
                    "calibration_images": n,
                    "calibration": f"the first {n} of {test}'s training images (splits.json order)",
                    "thresholds": dict(cuts),
                    "calibration_dice": {
                        lb: {"default": c["dice_at_default"], "chosen": c["dice"]}
                        for lb, c in chosen["labels"].items()
                    },
                    "test": r,
                    "commit": git_commit(),
                }
    result["site_thresholds"] = site
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, path.with_suffix(".md"))
    print(path.with_suffix(".md").read_text())


def held_out_stems(
    name: str, roots: dict[str, Path], args: argparse.Namespace
) -> dict[str, list[str]]:
    """Per dataset, the training images run ``name`` held out (its crop model's validation
    images, as ``fit_fundus`` splits them)."""
    from biounet.fundus.pipeline import stage_configs
    from biounet.train_data import split_samples

    _, roi_cfg = stage_configs(fundus_config(name, roots, args.work, args))
    _, val, _ = split_samples(roi_cfg)
    return {
        d: [s.stem for s in val if Path(s.image).resolve().is_relative_to(root.resolve())]
        for d, root in roots.items()
    }


def holdout_thresholds(args: argparse.Namespace, roots: dict[str, Path]) -> None:
    """HOLDOUT trained (the adopted recipe, a fifth of each training split held out), each
    dataset's disc and cup thresholds chosen by ``choose_thresholds`` on its own held-out training
    images, then each test set scored once at 0.5 and once at its site's thresholds. Into the
    results' "holdout_thresholds" (the rest of the file kept) and its markdown."""
    name = "fundus_generalization_quick" if args.quick else "fundus_generalization"
    path = (args.work if args.quick else RESULTS) / f"{name}.json"
    result = json.loads(path.read_text())
    t0 = time.perf_counter()
    ck = train_run(HOLDOUT, roots, args.work, args)
    held = held_out_stems(HOLDOUT, roots, args)
    out: dict[str, Any] = {
        "run": HOLDOUT,
        "train_time_s": float((ck.parent / "train_seconds.txt").read_text()),
        "commit": git_commit(),
    }
    for test, (root, labels_csv) in eval_sets(roots).items():
        th_dir = args.work / f"thresholds_{HOLDOUT}_{test}_held_out"
        chosen = (
            json.loads((th_dir / "thresholds.json").read_text())
            if (th_dir / "thresholds.json").is_file()
            else choose_thresholds(ck, root, "train", th_dir, inference_options(), stems=held[test])
        )
        cuts = tuple((lb, c["threshold"]) for lb, c in chosen["labels"].items())
        out[test] = {
            "held_out_images": len(held[test]),
            "thresholds": dict(cuts),
            "held_out_dice": {
                lb: {"default": c["dice_at_default"], "chosen": c["dice"]}
                for lb, c in chosen["labels"].items()
            },
            "test_at_0.5": evaluate_run(ck, test, root, args.work, labels_csv),
            "test_at_thresholds": evaluate_run(ck, test, root, args.work, labels_csv, cuts=cuts),
        }
    out["wall_time_s"] = time.perf_counter() - t0
    result["holdout_thresholds"] = out
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, path.with_suffix(".md"))
    print(path.with_suffix(".md").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drishti", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--refuge", type=Path, default=SHARED_DATA / "refuge_canon512")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_generalization"))
    ap.add_argument(
        "--runs", default=",".join(RUNS), help=f"subset of {','.join(RUNS)} (default: all)"
    )
    ap.add_argument("--locator-draws", type=int, default=DRAWS[0], help="images sampled, locator")
    ap.add_argument("--roi-draws", type=int, default=DRAWS[1], help="crops sampled, ROI model")
    ap.add_argument("--crop-images", type=int, default=100, help="REFUGE test images for crops")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budgets and subsets: a smoke test")
    ap.add_argument(
        "--select",
        action="store_true",
        help="train --runs and score them on Drishti-GS1's training photographs only (choosing a "
        "recipe for other datasets without a test image): fundus_generalization_selection.*",
    )
    ap.add_argument(
        "--crops-only",
        action="store_true",
        help="no training: the adopted model's disc-centred crops again (after a change to how "
        "predict reads crops), into the results' crops_refuge_test",
    )
    ap.add_argument(
        "--site-thresholds",
        action="store_true",
        help="no training: each of --runs gets disc/cup thresholds chosen on a few labelled "
        "training images of each dataset it was not trained on, then that dataset's test set "
        "scored with them",
    )
    ap.add_argument(
        "--holdout-thresholds",
        action="store_true",
        help=f"train {HOLDOUT} (the adopted recipe holding out a fifth of each training split), "
        "choose each dataset's thresholds on its held-out images, score both test sets",
    )
    args = ap.parse_args()
    if args.crops_only and args.quick:
        ap.error("--crops-only rewrites the committed results' crops: run it without --quick")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.locator_draws, args.roi_draws, args.crop_images = 40, 40, 3
        args.work = args.work.with_name(args.work.name + "_quick")
    roots = {"drishti": require(args.drishti), "refuge": require(args.refuge)}
    args.work.mkdir(parents=True, exist_ok=True)
    tests = eval_sets(roots)
    t_start = time.perf_counter()
    if args.crops_only:
        crops_only(args, roots)
        return
    if args.select:
        select(args, roots, t_start)
        return
    if args.site_thresholds:
        site_thresholds(args, roots)
        return
    if args.holdout_thresholds:
        holdout_thresholds(args, roots)
        return
    runs: dict[str, Any] = {}
    train_s: dict[str, float] = {}
    for name in args.runs.split(","):
        ck = train_run(name, roots, args.work, args)
        train_s[name] = float((ck.parent / "train_seconds.txt").read_text())
        for test, (root, labels_csv) in tests.items():
            logging.info("evaluating %s on %s", name, test)
            runs[f"{name}_to_{test}"] = evaluate_run(ck, test, root, args.work, labels_csv)
    crops, chosen = None, None
    # the two-dataset variant with the best validation Dice (training splits only; a run without a
    # hold-out has no validation score)
    names = args.runs.split(",")
    mixed = [r for r in names if r.startswith("both") and RUNS[r].val_fraction > 0]
    if mixed:
        val = {r: val_dice(args.work / r) for r in mixed}
        chosen = {"run": max(val, key=lambda r: val[r]), "val_dice_mean": val}
    # disc-centred crops with the adopted two-dataset model: ADOPTED when this call has it (its
    # recipe chosen on training data: the budget by validation Dice, no hold-out by the Drishti-GS1
    # cross-validation), else the variant with the best validation Dice
    crops_model = ADOPTED if ADOPTED in names else (chosen or {}).get("run")
    if crops_model:
        stems = read_splits(roots["refuge"])["test"][: args.crop_images]
        ck = args.work / crops_model / "fundus.pt"
        crops = crop_inputs(ck, roots["refuge"], stems, [0.1, 0.3, 0.6])
    result = {
        "commit": git_commit(),
        "machine": machine(),
        "wall_time_s": time.perf_counter() - t_start,
        "quick": args.quick,
        "settings": {
            "locator_draws": args.locator_draws,
            "roi_draws": args.roi_draws,
            "inference": {
                "tta": TTA,
                "tta_scales": list(SCALES),
                "postprocess": POST,
                "ellipse": ELLIPSE,
            },
            "runs": {k: r._asdict() for k, r in RUNS.items()},
            "validation": "val_fraction of each training split (per dataset; 0.2 unless the run's"
            " settings say otherwise), best epoch by val Dice; with 0, none held out, last epoch",
        },
        "train_time_s": train_s,
        "runs": runs,
        "both_chosen_by_validation": chosen,
        "crops_model": crops_model,
        "crops_refuge_test": crops,
    }
    name = "fundus_generalization_quick" if args.quick else "fundus_generalization"
    out = args.work if args.quick else RESULTS
    result = merged_with_previous(result, out / f"{name}.json")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out / f"{name}.md")
    print((out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
