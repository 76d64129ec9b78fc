"""Drishti-GS1 end to end: 5-fold cross-validation on the 50 training images (ablation and the choice
of settings), the final pipeline trained on all 50 and evaluated once on the 51 test images, and the
article's reproduction. Writes benchmarks/results/fundus_drishti.json and .md.

    python benchmarks/fundus_drishti.py --stage cv      # ~5 x the pipeline's training time
    python benchmarks/fundus_drishti.py --stage ablate --ablate soft_targets  # one ROI setting, same folds
    python benchmarks/fundus_drishti.py --stage ablate --ablate no_holdout --roi-epochs 200 \
        --fresh-base cv_ablation_roi_epochs_200  # whole pipelines afresh vs a recorded variant
    python benchmarks/fundus_drishti.py --stage final   # the ADOPTED recipe; also --stage ensemble
    python benchmarks/fundus_drishti.py --stage ensemble  # the CV folds' pipelines together, on test
    python benchmarks/fundus_drishti.py --stage seed    # the article's recipe, 50 epochs
    python benchmarks/fundus_drishti.py --stage report  # markdown from the JSON

Data: ../shared/data/drishti_gs1 (or --data). Scratch files (symlink views, runs) go to --work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Load lazily imported modules now, so edits to the tree during a long run cannot break it midway.
import biounet.fundus.cdr  # noqa: E402, F401
import biounet.fundus.postprocess  # noqa: E402, F401
import biounet.surface  # noqa: E402, F401
import biounet.viz  # noqa: E402, F401
from biounet.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from biounet.data.folder import read_splits  # noqa: E402
from biounet.data.io import read_image  # noqa: E402
from biounet.evaluate import evaluate_checkpoint  # noqa: E402
from biounet.fundus.pipeline import (  # noqa: E402
    FundusConfig,
    fit_fundus,
    resolve_scales,
    save_ensemble,
)
from biounet.models import preset  # noqa: E402
from biounet.predictor import PredictOptions, make_predictor  # noqa: E402
from biounet.train import fit  # noqa: E402
from common import RESULTS, SHARED_DATA, make_view, require, softmap_masks, update_results  # noqa: E402

LABELS = ("disc", "cup")
# Inference variants compared in cross-validation: (name, checkpoint kind, tta, postprocess, ellipse)
VARIANTS = [
    ("single_stage_whole_image", "locator", False, False, False),
    ("two_stage_raw", "pipeline", False, False, False),
    ("two_stage_post", "pipeline", False, True, False),
    ("two_stage_post_tta", "pipeline", True, True, False),
    ("two_stage_post_tta_ellipse", "pipeline", True, True, True),
]


def pipeline_config(data: Path, args: argparse.Namespace) -> FundusConfig:
    return FundusConfig(
        data_root=str(data),
        labels=LABELS,
        locator_size=256,
        locator_epochs=args.locator_epochs,
        roi_size=args.roi_size,
        roi_scale=2.0,
        roi_preset=args.roi_preset,
        roi_epochs=args.roi_epochs,
        batch_size=8,
        lr=2e-3,
        seed=args.seed,
        val_fraction=args.val_fraction,
        polar=args.polar,
        polar_area_loss=args.polar_area_loss,
        colour_augment=args.colour_augment,
        grey=args.grey,
    )


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_images": summary["n_images"]}
    for lb in LABELS:
        m = summary["labels"][lb]
        out[lb] = {
            k: m[k]
            for k in ("dice_mean", "dice_std", "dice_min", "iou_mean", "hd95_mean", "asd_mean")
            if k in m
        }
    if "vcdr" in summary:
        out["vcdr_mae"] = summary["vcdr"].get(
            "mae_vs_experts_mean", summary["vcdr"]["mae_vs_masks"]
        )
        out["vcdr"] = summary["vcdr"]
    return out


def cv_folds(root: Path, args: argparse.Namespace) -> tuple[list[str], list[list[str]]]:
    """The training stems and the ``args.folds`` folds held out in turn (every folds-th stem)."""
    train = read_splits(root)["train"]
    return train, [train[k :: args.folds] for k in range(args.folds)]


def fold_view(root: Path, work: Path, train: list[str], held: list[str], k: int) -> Path:
    """Fold k as a dataset view: the rest of ``train`` to train on, ``held`` as its test split."""
    rest = [s for s in train if s not in held]
    return make_view(root, work / f"cv_view_{k}", {"train": rest, "test": held}, LABELS)


def scored(
    ck: Path, view: Path, out: Path, variant: tuple[bool, bool, bool], report: bool = False
) -> dict[str, Any]:
    """The summary of ``ck`` on the view's test split with (tta, postprocess, ellipse): read from
    ``out`` when an earlier run wrote it with the same test-time ROI sizes, so an interrupted stage
    resumes (summaries from before the ROI sizes were recorded read at scale 1 only)."""
    tta, post, ell = variant
    if (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        if summary.get("tta_scales", [1.0]) in (None, list(resolve_scales(tta))):
            return summary
    opts = PredictOptions(tta=tta, postprocess=post, fit_ellipse=ell)
    return evaluate_checkpoint(ck, view, "test", out, opts, report=report)


def stage_cv(root: Path, work: Path, args: argparse.Namespace) -> None:
    """Folds whose evaluations already exist in ``work`` are reused, so an interrupted run resumes;
    ``--run-folds N`` stops after N folds and summarises the folds done (the note says how many)."""
    train, folds = cv_folds(root, args)
    per_variant: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in VARIANTS}
    times: list[float] = []
    for k, held in enumerate(folds[: args.run_folds or args.folds]):
        view = fold_view(root, work, train, held, k)
        ck = work / f"cv_run_{k}" / "fundus.pt"
        if not ck.is_file():
            t0 = time.perf_counter()
            ck = fit_fundus(pipeline_config(view, args), work / f"cv_run_{k}")
            times.append(time.perf_counter() - t0)
        for name, kind, tta, post, ell in VARIANTS:
            path = ck if kind == "pipeline" else ck.parent / "locator" / "best.pt"
            out = work / f"cv_eval_{k}_{name}"
            per_variant[name].append(scored(path, view, out, (tta, post, ell), report=True))
        logging.info("fold %d done", k)
    n_done = len(per_variant[VARIANTS[0][0]])
    table = {name: pooled(summaries) for name, summaries in per_variant.items()}
    best = max(
        (n for n in table if n.startswith("two_stage")),
        key=lambda n: (table[n]["disc_dice_mean"] + table[n]["cup_dice_mean"]) / 2,
    )
    update_results(
        "fundus_drishti",
        "cv",
        {
            "folds": args.folds,
            "folds_evaluated": n_done,
            "images_evaluated": sum(len(f) for f in folds[:n_done]),
            "fold_train_seconds_this_run": times,
            "settings": pipeline_config(Path("<view>"), args).__dict__
            | {"data_root": "cv views of the train split"},
            "ablation": table,
            "chosen_variant": best,
            "note": f"{n_done} of {args.folds} folds evaluated: each fold's pipeline trained on the other "
            f"{len(train) - len(folds[0])} training images, scored on its held-out images; means over the "
            "held-out images of the folds evaluated",
        },
    )


# One ROI-stage setting changed against the cross-validation's pipeline (--stage ablate --ablate NAME)
ABLATIONS: dict[str, dict[str, Any]] = {
    "soft_targets": {"soft_targets": True},
    "wide_scale_jitter": {"roi_scale_jitter": (0.5, 1.6)},
    "roi_size_320": {"roi_size": 320},  # the disc crop at 320 px instead of 256 (finer cup edges)
    "roi_epochs_200": {"roi_epochs": 200},  # the crop model trained 200 epochs instead of 120
    # no image held out for the best epoch: both models train on all of the fold's images and the
    # last epoch is kept (with --roi-epochs 200 --fresh-base cv_ablation_roi_epochs_200)
    "no_holdout": {"val_fraction": 0.0},
    # the adopted recipe with 300 crop-model epochs (with --roi-epochs 300 --fresh-base
    # cv_ablation_no_holdout)
    "roi_epochs_300": {"val_fraction": 0.0, "roi_epochs": 300},
    # the adopted recipe with the crop model on polar crops (with --roi-epochs 200 --fresh-base
    # cv_ablation_no_holdout)
    "polar": {"val_fraction": 0.0, "polar": True},
    # polar crops with 300 crop-model epochs (with --roi-epochs 300 --fresh-base cv_ablation_polar)
    "polar_epochs_300": {"val_fraction": 0.0, "polar": True, "roi_epochs": 300},
    # the crop model at widths 32..512 (7.8M parameters, 3.3x the time per step of "small"), 120
    # epochs so that the whole pipeline still trains in about 16 min (with --fresh-base
    # cv_ablation_polar_epochs_300)
    "polar_medium": {"val_fraction": 0.0, "polar": True, "roi_preset": "medium", "roi_epochs": 120},
    # the adopted recipe with each polar pixel's loss weighed by the crop area it stands for (the
    # disc's edge counts as in a Cartesian crop; with --fresh-base cv_ablation_polar_epochs_300
    # --roi-epochs 300)
    "polar_area_loss": {
        "val_fraction": 0.0,
        "polar": True,
        "roi_epochs": 300,
        "polar_area_loss": True,
    },
    # the adopted recipe on the luminance (both stages one channel) with per-channel gamma
    # augmentation: what fundus_generalization.py --select chose for other cameras (with
    # --fresh-base cv_ablation_polar_area_loss --roi-epochs 300)
    "grey": {
        "val_fraction": 0.0,
        "polar": True,
        "roi_epochs": 300,
        "polar_area_loss": True,
        "colour_augment": True,
        "grey": True,
    },
}
# the adopted recipe ("grey") trained on the fold's photographs together with another fundus
# dataset's training split (--extra-data, default REFUGE's 400 Canon photographs), one sampling
# weight each, with camera augmentation, at the draws of fundus_generalization.py's two-dataset
# run: its recipe both_all_polar_grey (EXTRA_DRAWS; with --fresh-base cv_ablation_grey)
ABLATIONS["with_refuge"] = {**ABLATIONS["grey"], "camera_augment": True, "extra_data": True}
# the adopted recipe trained in float32 instead of bf16 autocast (the speed issue's accuracy check:
# does bf16 training change the cross-validated Dice? with --fresh-base cv_ablation_grey)
ABLATIONS["fp32"] = {**ABLATIONS["grey"], "precision": "fp32"}
# the adopted recipe with a tighter crop: side 1.6 x the located disc's instead of 2 x, so the disc
# spans more of the crop model's pixels (its edge is where the disc Dice is lost; with
# --fresh-base cv_ablation_grey --roi-epochs 300)
ABLATIONS["roi_scale_1.6"] = {**ABLATIONS["grey"], "roi_scale": 1.6}
# ... and a wider one (2.4 x): more context around the disc, which the tighter crop's lower cup Dice
# pointed to (with --fresh-base cv_ablation_grey --roi-epochs 300)
ABLATIONS["roi_scale_2.4"] = {**ABLATIONS["grey"], "roi_scale": 2.4}
# the adopted recipe itself trained again with another seed: how far two trainings of one recipe
# land on the same folds, the yardstick for the differences above (with --fresh-base
# cv_ablation_grey --roi-epochs 300)
ABLATIONS["grey_seed1"] = {**ABLATIONS["grey"], "seed": 1}
# (locator, crop model) images drawn in training when another dataset joins (``with_extra_data``)
EXTRA_DRAWS = (4800, 24000)
# The recipe cross-validation adopted (the final pipeline's): 40 locator epochs, 300 crop-model
# epochs on polar crops with the area-weighted loss, both stages on the luminance with gamma
# augmentation, no image held out. Its fold pipelines are those of --stage ablate --ablate grey
# --fresh-base cv_ablation_polar_area_loss --roi-epochs 300 (``fresh_dir(work, ADOPTED_ABLATION,
# k)``; the recipes before: polar_area_loss, polar_epochs_300, polar (200 epochs), then no_holdout
# (Cartesian crops)).
ADOPTED = argparse.Namespace(
    locator_epochs=40,
    roi_epochs=300,
    roi_size=256,
    roi_preset="small",
    seed=0,
    val_fraction=0.0,
    polar=True,
    polar_area_loss=True,
    colour_augment=True,
    grey=True,
)
ADOPTED_ABLATION = "grey"


def fresh_dir(work: Path, name: str, k: int, kind: str = "run") -> Path:
    """Fold ``k``'s pipeline (kind "run") or its held-out scores ("eval") of ablation ``name``
    trained afresh (``stage_ablate_fresh``)."""
    return work / f"ablate_fresh_{name}_{kind}_{k}"


def with_extra_data(fc: FundusConfig, extra: Path, spec: Path) -> FundusConfig:
    """``fc`` trained on its own training split and ``extra``'s together: a dataset list (written
    to ``spec``) with one sampling weight each, the epochs set so that the stages draw
    ``EXTRA_DRAWS`` images whatever the two sizes."""
    own = Path(fc.data_root)
    spec.write_text(
        "datasets:\n" + "".join(f"  - root: {r.resolve()}\n    weight: 1\n" for r in (own, extra))
    )
    n = len(read_splits(own)["train"]) + len(read_splits(extra)["train"])
    loc, roi = (math.ceil(d / n) for d in EXTRA_DRAWS)
    return dataclasses.replace(fc, data_root=str(spec), locator_epochs=loc, roi_epochs=roi)


def ablation_config(view: Path, args: argparse.Namespace, name: str, spec: Path) -> FundusConfig:
    """The pipeline settings of ablation ``name`` on the fold ``view``."""
    setting = dict(ABLATIONS[name])
    extra = setting.pop("extra_data", False)
    fc = dataclasses.replace(pipeline_config(view, args), **setting)
    return with_extra_data(fc, require(args.extra_data), spec) if extra else fc


def adopted_config(
    view: Path, spec: Path, extra_data: Path = SHARED_DATA / "refuge_canon512"
) -> FundusConfig:
    """The adopted recipe on ``view``: ADOPTED_ABLATION's settings over ADOPTED, as the fold
    pipelines it was chosen with trained (``spec``: where a dataset list is written, if the
    recipe adds ``extra_data``)."""
    args = argparse.Namespace(**vars(ADOPTED), extra_data=extra_data)
    return ablation_config(view, args, ADOPTED_ABLATION, spec)


def stage_ablate(root: Path, work: Path, args: argparse.Namespace) -> None:
    """``ABLATIONS[args.ablate]`` against the cross-validation's pipeline on the folds it trained:
    each fold keeps its locator and retrains the ROI model alone with the setting changed; both are
    scored now, with the code of this run and the inference variant the cross-validation chose.
    With ``--fresh-base``: ``stage_ablate_fresh``."""
    if args.fresh_base:
        return stage_ablate_fresh(root, work, args)
    name = args.ablate
    train, folds = cv_folds(root, args)
    tta, post, ell, variant = chosen(args)
    base, alt, times = [], [], []
    for k, held in enumerate(folds[: args.run_folds or args.folds]):
        base_ck = work / f"cv_run_{k}" / "fundus.pt"
        if not base_ck.is_file():
            logging.info("fold %d: no cross-validation run in %s; stopping", k, work)
            break
        view = fold_view(root, work, train, held, k)
        run = work / f"ablate_{name}_run_{k}"
        if not (run / "fundus.pt").is_file():
            if not (run / "locator").exists():
                shutil.copytree(base_ck.parent / "locator", run / "locator")
            fc = ablation_config(view, args, name, work / f"ablate_{name}_data_{k}.yaml")
            t0 = time.perf_counter()
            fit_fundus(fc, run, reuse_locator=True)
            times.append(time.perf_counter() - t0)
        base.append(scored(base_ck, view, work / f"ablate_base_eval_{k}", (tta, post, ell)))
        alt.append(
            scored(run / "fundus.pt", view, work / f"ablate_{name}_eval_{k}", (tta, post, ell))
        )
        logging.info("fold %d done", k)
    if not alt:
        raise SystemExit(f"no fold to compare: run --stage cv first (work folder {work})")
    record_ablation(
        name,
        ABLATIONS[name],
        variant,
        pooled(base),
        alt,
        {
            "roi_train_seconds_this_run": times,
            "note": "same folds and locators as the cross-validation; the ROI model retrained with "
            "the setting changed; both pipelines scored by this run's code on the held-out images",
        },
    )


def stage_ablate_fresh(root: Path, work: Path, args: argparse.Namespace) -> None:
    """``ABLATIONS[args.ablate]`` as whole pipelines (locator too) trained afresh on the folds,
    against the adopted variant recorded in results[``args.fresh_base``] on the same folds: for a
    setting that changes the locator too, or when the cross-validation's checkpoints are gone. The
    base is the earlier run's scores, not rescored by this run's code."""
    name = args.ablate
    prev = json.loads((RESULTS / "fundus_drishti.json").read_text()).get(args.fresh_base)
    base_key = args.fresh_base.removeprefix("cv_ablation_")
    if not prev or base_key not in prev:
        raise SystemExit(f"--fresh-base {args.fresh_base}: no such ablation in fundus_drishti.json")
    n_folds = min(prev["folds_evaluated"], args.run_folds or prev["folds_evaluated"])
    train, folds = cv_folds(root, args)
    tta, post, ell, variant = chosen(args)
    alt, base, times = [], [], []
    for k, held in enumerate(folds[:n_folds]):
        view = fold_view(root, work, train, held, k)
        run = fresh_dir(work, name, k)
        fc = ablation_config(view, args, name, work / f"ablate_fresh_{name}_data_{k}.yaml")
        if not (run / "fundus.pt").is_file():
            t0 = time.perf_counter()
            fit_fundus(fc, run)
            (run / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        # kept beside the run, so a rerun that reuses it still records how long it trained
        seconds = run / "train_seconds.txt"
        times.append(float(seconds.read_text()) if seconds.is_file() else None)
        alt.append(
            scored(run / "fundus.pt", view, fresh_dir(work, name, k, "eval"), (tta, post, ell))
        )
        base_ck = fresh_dir(work, base_key, k) / "fundus.pt"
        if args.rescore_base and base_ck.is_file():
            out = fresh_dir(work, base_key, k, "rescored")
            base.append(scored(base_ck, view, out, (tta, post, ell)))
        logging.info("fold %d done", k)
    rescored = len(base) == len(alt)
    record_ablation(
        name,
        ABLATIONS[name] | {f: getattr(fc, f) for f in ("locator_epochs", "roi_epochs")},
        variant,
        pooled(base) if rescored else prev[base_key],
        alt,
        {
            "pipeline_train_seconds": times,  # each fold pipeline's, when it trained
            "per_fold": {
                name: [pooled([a]) for a in alt],
                **({"base": [pooled([b]) for b in base]} if rescored else {}),
            },
            "note": f"whole pipelines (locator and ROI model) trained afresh on the first {n_folds} "
            f"folds with the setting changed; base = '{base_key}' of {args.fresh_base} on the same "
            + (
                "folds, its fold pipelines scored again by this run's code"
                if rescored
                else "folds (an earlier run, its own locators)"
            ),
        },
    )


def record_ablation(
    name: str,
    setting: dict[str, Any],
    variant: str,
    base: dict[str, float],
    alt: list[dict[str, Any]],
    extra: dict[str, Any],
) -> None:
    """results["cv_ablation_<name>"]: the setting, the base's pooled scores and the variant's."""
    update_results(
        "fundus_drishti",
        f"cv_ablation_{name}",
        {
            "setting": {k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()},
            "folds_evaluated": len(alt),
            "images_evaluated": sum(s["n_images"] for s in alt),
            "variant": variant,
            "base": base,
            name: pooled(alt),
            **extra,
        },
    )


def pooled(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Image-weighted means over folds of each label's dice/iou/hd95 means and of the vCDR error."""
    n = [s["n_images"] for s in summaries]
    out = {}
    for lb in LABELS:
        for m in ("dice_mean", "iou_mean", "hd95_mean"):
            vals = [s["labels"][lb].get(m) for s in summaries]
            if all(v is not None for v in vals):
                out[f"{lb}_{m}"] = sum(v * w for v, w in zip(vals, n, strict=True)) / sum(n)
    if all("vcdr" in s for s in summaries):
        key = (
            "mae_vs_experts_mean"
            if "mae_vs_experts_mean" in summaries[0]["vcdr"]
            else "mae_vs_masks"
        )
        out["vcdr_mae"] = sum(s["vcdr"][key] * w for s, w in zip(summaries, n, strict=True)) / sum(
            n
        )
    return out


def chosen(args: argparse.Namespace) -> tuple[bool, bool, bool, str]:
    path = RESULTS / "fundus_drishti.json"
    name = (
        json.loads(path.read_text()).get("cv", {}).get("chosen_variant") if path.is_file() else None
    )
    for v in VARIANTS:
        if v[0] == name:
            return v[2], v[3], v[4], name
    return True, True, False, "two_stage_post_tta (default: no cross-validation result found)"


def stage_final(root: Path, work: Path, args: argparse.Namespace) -> None:
    splits = read_splits(root)
    view = make_view(
        root, work / "final_view", {"train": splits["train"], "test": splits["test"]}, LABELS
    )
    # the recipe cross-validation adopted, whatever the training flags (those are cv's and ablate's)
    fc = adopted_config(view, work / "final_data.yaml", args.extra_data)
    ck = work / "final_run" / "fundus.pt"
    reuse = args.reuse_final and ck.is_file()
    if reuse:  # an inference change: the trained pipeline scored again, its train time kept
        logging.info("%s: reusing the trained final pipeline (--reuse-final)", ck)
    else:
        t0 = time.perf_counter()
        ck = fit_fundus(fc, work / "final_run")
        train_s = time.perf_counter() - t0
    tta, post, ell, name = chosen(args)
    opts = PredictOptions(tta=tta, postprocess=post, fit_ellipse=ell)
    s2 = evaluate_checkpoint(ck, view, "test", work / "final_eval", opts)
    all4 = softmap_masks(root, work, LABELS, 255)
    view4 = make_view(
        root, work / "final_view_all4", {"test": splits["test"]}, LABELS, mask_dir=all4
    )
    s4 = evaluate_checkpoint(ck, view4, "test", work / "final_eval_all4", opts)
    if not reuse:
        update_results("fundus_drishti", "train_time_s", train_s)
    update_results(
        "fundus_drishti",
        "train_time_covers",
        "fit_fundus on the 50 training images: data decoding, locator and ROI model training with "
        "per-epoch validation and checkpoints, on this machine's 2 CPU cores",
    )
    update_results(
        "fundus_drishti",
        "predict_s_per_image",
        time_predict(ck, view, splits["test"][:10], tta, post, ell),
    )
    update_results(
        "fundus_drishti",
        "final_settings",
        {
            "variant": name,
            "tta": tta,
            "tta_scales": list(resolve_scales(tta)),
            "postprocess": post,
            "ellipse": ell,
            **fc.__dict__,
        },
    )
    update_results(
        "fundus_drishti", "test", brief(s2) | {"reference": ">= 2 of 4 experts (masks/)"}
    )
    update_results(
        "fundus_drishti",
        "test_all_experts",
        brief(s4) | {"reference": "all 4 experts (softmap == 255)"},
    )
    stage_ensemble(root, work, args)


def stage_ensemble(root: Path, work: Path, args: argparse.Namespace) -> None:
    """The cross-validation's fold pipelines as one ensemble on the test images: an option,
    measured, not the headline."""
    splits = read_splits(root)
    view = make_view(
        root, work / "final_view", {"train": splits["train"], "test": splits["test"]}, LABELS
    )
    tta, post, ell, _ = chosen(args)
    folds = sorted(work.glob(f"{args.ensemble_runs}_*/fundus.pt"))
    if folds:
        tag = "" if args.ensemble_runs == "cv_run" else f"_{args.ensemble_runs}"
        ens = work / f"cv_ensemble{tag}.pt"
        if not ens.is_file():
            save_ensemble(folds, ens)
        # scored once: --stage final runs this stage again with the same fold pipelines
        se = scored(ens, view, work / f"final_eval_cv_ensemble{tag}", (tta, post, ell), True)
        note = (
            f"the cross-validation fold pipelines {args.ensemble_runs}_K (each trained on 40 "
            "images) averaged; >= 2 experts"
        )
        update_results(
            "fundus_drishti",
            f"test_cv_ensemble{tag}",
            brief(se)
            | {
                "members": len(folds),
                "note": note,
                "predict_s_per_image": time_predict(ens, view, splits["test"][:5], tta, post, ell),
            },
        )


def time_predict(ck: Path, view: Path, stems: list[str], tta: bool, post: bool, ell: bool) -> float:
    """Median seconds for one full image: read, locate, segment, paste, post-process, measures."""
    pred = make_predictor(ck, PredictOptions(tta=tta, postprocess=post, fit_ellipse=ell))
    paths = [next((view / "images").glob(f"{s}.*")) for s in stems]
    pred.predict(read_image(paths[0]))  # warm-up
    ts = []
    for p in paths:
        t0 = time.perf_counter()
        pred.predict(read_image(p))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def stage_seed(root: Path, work: Path, args: argparse.Namespace) -> None:
    """The article: seed preset, 224 px after padding to a square, Adam 1e-4, StepLR(10, 0.1), 50 epochs,
    BCE + Dice, and -- as the article did -- the test split used as validation for the best epoch."""
    splits = read_splits(root)
    view = make_view(
        root,
        work / "seed_view",
        {"train": splits["train"], "val": splits["test"], "test": splits["test"]},
        LABELS,
    )
    cfg = RunConfig(
        data=DataConfig(root=str(view), labels=LABELS, image_size=224, augment=False),
        model=preset("seed", in_channels=0),
        train=TrainConfig(
            epochs=args.seed_epochs, batch_size=4, lr=1e-4, lr_step=10, lr_gamma=0.1, seed=args.seed
        ),
        preset="seed",
    )
    logging.warning(
        "article reproduction: validation = the 51 TEST images, as the article did "
        "(its best epoch is chosen on the test set; the honest pipeline never does this)"
    )
    t0 = time.perf_counter()
    run = fit(cfg, work / "seed_run")
    train_s = time.perf_counter() - t0
    s = evaluate_checkpoint(
        run / "best.pt", view, "test", work / "seed_eval", PredictOptions(postprocess=False)
    )
    best = json.loads(
        json.dumps(__import__("torch").load(run / "best.pt", weights_only=True)["extra"]["epoch"])
    )
    update_results(
        "fundus_drishti",
        "seed_reproduction",
        {
            "recipe": "seed preset (34,527,106 params), 224x224 after centred padding to a square, no augmentation, "
            f"Adam 1e-4, StepLR(10, 0.1), {args.seed_epochs} epochs, batch 4, BCE + Dice, bf16 autocast + "
            "channels_last where supported; validation = test split (as the article)",
            "best_epoch": best,
            "train_time_s": train_s,
            "article_numbers": s["article_metrics"],
            "article_reported": {
                "bce": 0.3319,
                "dice_loss": 0.8367,
                "iou": 0.8421,
                "best_epoch": 36,
            },
            "honest_per_image": brief(s),
        },
    )


def report() -> None:
    data = json.loads((RESULTS / "fundus_drishti.json").read_text())
    lines = [
        "# Drishti-GS1 fundus benchmark",
        "",
        f"latest update at commit `{data.get('commit')}`, {data.get('machine')}",
        "",
    ]
    if data.get("commits"):
        lines += [
            "Commit of each section: "
            + ", ".join(f"{k} `{c[:12]}`" for k, c in sorted(data["commits"].items())),
            "",
        ]
    for key in ("test", "test_all_experts"):
        if key in data:
            t = data[key]
            lines += [
                f"## {key} ({t.get('reference')}, {t['n_images']} images, per-image means)",
                "",
                "| structure | Dice | IoU | HD95 px | ASD px |",
                "|---|---|---|---|---|",
            ]
            for lb in LABELS:
                m = t[lb]
                lines.append(
                    f"| {lb} | {m['dice_mean']:.4f} ± {m['dice_std']:.4f} | {m['iou_mean']:.4f} | "
                    f"{m.get('hd95_mean', float('nan')):.2f} | {m.get('asd_mean', float('nan')):.2f} |"
                )
            lines += ["", f"vCDR MAE: {t.get('vcdr_mae', float('nan')):.4f}", ""]
    for k in ("train_time_s", "predict_s_per_image", "final_settings"):
        if k in data:
            lines.append(f"- {k}: {data[k]}")
    for k in sorted(k for k in data if k.startswith(("test_cv_ensemble", "test_seed_ensemble"))):
        e = data[k]
        lines.append(
            f"- {k}: disc {e['disc']['dice_mean']:.4f}, cup {e['cup']['dice_mean']:.4f}, vCDR MAE "
            f"{e['vcdr_mae']:.4f}, {e['predict_s_per_image']:.2f} s per image ({e['note']})"
        )
    if "cv" in data:
        lines += [
            "",
            f"## Cross-validation ablation ({data['cv'].get('folds_evaluated', '?')} of {data['cv']['folds']} folds, {data['cv'].get('images_evaluated', '?')} held-out training images)",
            "",
            "| variant | disc Dice | cup Dice | disc HD95 | cup HD95 | vCDR MAE |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in data["cv"]["ablation"].items():
            lines.append(
                f"| {name} | {m.get('disc_dice_mean', float('nan')):.4f} | "
                f"{m.get('cup_dice_mean', float('nan')):.4f} | {m.get('disc_hd95_mean', float('nan')):.2f} | "
                f"{m.get('cup_hd95_mean', float('nan')):.2f} | {m.get('vcdr_mae', float('nan')):.4f} |"
            )
        lines.append(f"\nchosen: {data['cv']['chosen_variant']}")
    for key in sorted(k for k in data if k.startswith("cv_ablation_")):
        ab, name = data[key], key.removeprefix("cv_ablation_")
        lines += [
            "",
            f"## Ablation: {name} {ab['setting']} ({ab['folds_evaluated']} folds, "
            f"{ab['images_evaluated']} held-out training images, {ab['variant']})",
            "",
            "| pipeline | disc Dice | cup Dice | disc HD95 | cup HD95 | vCDR MAE |",
            "|---|---|---|---|---|---|",
        ]
        for row in ("base", name):
            m = ab[row]
            lines.append(
                f"| {row} | {m['disc_dice_mean']:.4f} | {m['cup_dice_mean']:.4f} | "
                f"{m['disc_hd95_mean']:.2f} | {m['cup_hd95_mean']:.2f} | {m['vcdr_mae']:.4f} |"
            )
        lines.append(f"\n{ab['note']}")
    if "cv_thresholds" in data:
        t = data["cv_thresholds"]
        lines += [
            "",
            f"## Per-structure thresholds ({t['folds_evaluated']} folds, {t['images']} held-out "
            f"training images, `benchmarks/drishti_thresholds.py`)",
            "",
            "| disc / cup threshold | disc Dice | cup Dice | vCDR MAE |",
            "|---|---|---|---|",
            *(
                f"| {m['disc']} / {m['cup']} | {m['disc_dice_mean']:.4f} | "
                f"{m['cup_dice_mean']:.4f} | {m['vcdr_mae']:.4f} |"
                for m in t["grid"].values()
                if m["disc"] == 0.5 or m["cup"] == 0.5
            ),
            "",
            t["note"],
        ]
    if "cv_tta_scales" in data:
        t = data["cv_tta_scales"]
        lines += [
            "",
            f"## Test-time ROI sizes ({t['folds_evaluated']} folds, {t['images']} held-out "
            "training images, `benchmarks/drishti_scales.py`)",
            "",
            "| ROI side factors averaged | disc Dice | cup Dice | vCDR MAE |",
            "|---|---|---|---|",
            *(
                f"| {k} | {m['disc_dice_mean']:.4f} | {m['cup_dice_mean']:.4f} | "
                f"{m['vcdr_mae']:.4f} |"
                for k, m in t["table"].items()
            ),
            "",
            t["note"],
        ]
    if "seed_reproduction" in data:
        r = data["seed_reproduction"]
        a, h = r["article_numbers"], r["honest_per_image"]
        lines += [
            "",
            "## The article, reproduced",
            "",
            r["recipe"],
            "",
            "| | BCE | 'dice' (1 - pooled soft Dice) | pooled IoU | disc Dice (per image) | cup Dice (per image) |",
            "|---|---|---|---|---|---|",
            "| article (reported) | 0.3319 | 0.8367 | 0.8421 | - | - |",
            f"| biounet, best epoch {r['best_epoch']} | {a['bce']:.4f} | {a['dice_loss_pooled']:.4f} | "
            f"{a['iou_pooled']:.4f} | {h['disc']['dice_mean']:.4f} | {h['cup']['dice_mean']:.4f} |",
        ]
    (RESULTS / "fundus_drishti.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--stage",
        choices=["cv", "ablate", "final", "ensemble", "seed", "report", "all"],
        required=True,
    )
    ap.add_argument("--ablate", choices=sorted(ABLATIONS), help="with --stage ablate")
    ap.add_argument(
        "--fresh-base",
        metavar="KEY",
        help="with --stage ablate: train whole pipelines afresh and compare with the adopted "
        "variant recorded under KEY (e.g. cv_ablation_roi_epochs_200)",
    )
    ap.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of each pipeline's training images held out for the best epoch (0: none, "
        "the last epoch is kept)",
    )
    ap.add_argument(
        "--ensemble-runs",
        default=f"ablate_fresh_{ADOPTED_ABLATION}_run",
        help="with --stage ensemble (and final): the fold pipelines WORK/PREFIX_K/fundus.pt to "
        "average (default: the adopted recipe's, ablate_fresh_ADOPTED_ABLATION_run; cv_run: "
        "--stage cv's)",
    )
    ap.add_argument(
        "--reuse-final",
        action="store_true",
        help="with --stage final: score WORK/final_run/fundus.pt again (after an inference "
        "change) instead of training it; the recorded training time is kept",
    )
    ap.add_argument(
        "--rescore-base",
        action="store_true",
        help="with --fresh-base: score the base's fold pipelines (still in --work) again with "
        "this run's code instead of taking its recorded numbers",
    )
    ap.add_argument(
        "--extra-data",
        type=Path,
        default=SHARED_DATA / "refuge_canon512",
        help="the other fundus dataset of ablation with_refuge (its training split)",
    )
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_fundus"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--run-folds", type=int, default=0, help="train/evaluate only the first N folds"
    )
    ap.add_argument("--locator-epochs", type=int, default=40)
    ap.add_argument("--roi-epochs", type=int, default=120)
    ap.add_argument("--roi-size", type=int, default=256)
    ap.add_argument("--roi-preset", default="small")
    ap.add_argument(
        "--polar",
        action="store_true",
        help="the crop model on polar crops (FundusConfig.polar), with --stage cv or ablate",
    )
    ap.add_argument(
        "--polar-area-loss",
        action="store_true",
        help="with --polar: the crop model's loss weighs polar pixels by their crop area "
        "(FundusConfig.polar_area_loss)",
    )
    ap.add_argument(
        "--colour-augment",
        action="store_true",
        help="saturation and per-channel gamma augmentation (FundusConfig.colour_augment)",
    )
    ap.add_argument(
        "--grey", action="store_true", help="both stages on the luminance (FundusConfig.grey)"
    )
    ap.add_argument("--seed-epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.stage == "ablate" and not args.ablate:
        ap.error(f"--stage ablate needs --ablate, one of {', '.join(sorted(ABLATIONS))}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = require(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    stages = ["cv", "final", "seed"] if args.stage == "all" else [args.stage]
    for st in stages:
        stages_by_name = {
            "cv": stage_cv,
            "ablate": stage_ablate,
            "final": stage_final,
            "ensemble": stage_ensemble,
            "seed": stage_seed,
        }
        stages_by_name.get(st, lambda *_: None)(root, args.work, args)
    report()


if __name__ == "__main__":
    main()
