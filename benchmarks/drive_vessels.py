"""Retinal vessels on DRIVE with biounet's generic U-Net (what `biounet train` does for any
dataset folder): a task unlike the optic disc, thin structures a few pixels wide. Writes
benchmarks/results/drive_vessels.json and .md.

    python benchmarks/drive_vessels.py            # train (~15 min on 2 CPU cores), test once
    python benchmarks/drive_vessels.py --quick    # a tiny budget, to check it runs
    python benchmarks/drive_vessels.py --patch-size 192 --cv-ensemble   # + 5 CV folds as one

Settings fixed before the run, none tuned on the test images: the small preset, whole images
padded to a square and resized to 576 px, EPOCHS epochs, default augmentation and loss, 20 % of
the 20 training images held out to pick the best epoch. Test: the 20 official test images against
the first observer's masks, scored once, without and with flip TTA. Metrics as the DRIVE
literature reports them: inside the field of view (masks/fov), all test pixels pooled (accuracy,
sensitivity, specificity, F1 at threshold 0.5; ROC AUC of the probabilities), plus the
per-image Dice over the whole image (as biounet evaluate scores it). The second observer scored
against the first the same way is the human reference. A run folder already in --work is reused.
Data: ../shared/data/drive (or --data).

``--cv-ensemble``: also ``biounet cv`` (5 folds of the 20 training images, each trained as the
variant is on the other 16) and the folds bundled by ``biounet ensemble``, scored on the test
images the same way: what averaging five models trained on 80 % of the images gives against one
trained on all of them, at five times the prediction cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.api import fit  # noqa: E402
from biounet.compare import paired_stats  # noqa: E402
from biounet.data.folder import read_splits  # noqa: E402
from biounet.data.io import read_image, read_mask  # noqa: E402
from biounet.metrics import binary_scores, confusion_scores, pixel_auc  # noqa: E402
from biounet.predictor import PredictOptions, make_predictor  # noqa: E402
from common import RESULTS, SHARED_DATA, git_commit, machine, require  # noqa: E402

EPOCHS, SIZE, PRESET = 150, 576, "small"
CV_FOLDS = 5
# published U-Net variants on the same 20 test images, inside the field of view (as tabulated in
# github.com/zhengyuan-liu/Retinal-Vessel-Segmentation): for scale, not a goal of an issue
LITERATURE_F1 = {"M2U-Net": 0.8091, "R2U-Net": 0.8171, "LadderNet": 0.8202}


def fov_scores(
    probs: list[np.ndarray], truths: list[np.ndarray], fovs: list[np.ndarray]
) -> dict[str, Any]:
    """Per-image (H, W) vessel probabilities, masks and field-of-view masks -> pooled accuracy,
    sensitivity, specificity, F1 at 0.5 and ROC AUC inside the field of view, and the per-image
    mean F1."""
    p = np.concatenate([pr[f] for pr, f in zip(probs, fovs, strict=True)])
    t = np.concatenate([tr[f] for tr, f in zip(truths, fovs, strict=True)])
    per_image = [
        confusion_scores(pr[f] > 0.5, tr[f])["f1"]
        for pr, tr, f in zip(probs, truths, fovs, strict=True)
    ]
    return {
        **confusion_scores(p > 0.5, t),
        "auc": pixel_auc(p, t),
        "f1_per_image_mean": float(np.mean(per_image)),
        "pixels": int(t.size),
    }


def predict_test(
    ck: Path, root: Path, stems: list[str], tta: bool, tile: int | None = None
) -> tuple[list, float]:
    """Vessel probabilities of the test images and the median seconds per image. ``tile``: as
    predict's --tile (default auto: these 576 px images whole)."""
    pred = make_predictor(ck, PredictOptions(tta=tta, tile=tile))
    i = pred.labels.index("vessel")
    probs, times = [], []
    for s in stems:
        img = read_image(root / "images" / f"{s}.png")
        t0 = time.perf_counter()
        probs.append(pred.predict(img).prob[i])
        times.append(time.perf_counter() - t0)
    return probs, statistics.median(times)


VARIANT_KEYS = (
    "test", "test_tta", "settings", "params", "best_epoch", "n_val", "val_dice", "train_time_s",
    "commit",
)  # fmt: skip


def variant_name(patch_size: int) -> str:
    return f"patch{patch_size}" if patch_size else "whole"


def merged(old: dict[str, Any], name: str, variant: dict[str, Any]) -> dict[str, Any]:
    """The results with ``variant`` under ``name`` beside the variants already in ``old`` (a file
    written before variants existed is its "whole" variant); the one of highest validation Dice
    (held-out training images) is chosen and copied to the top level."""
    variants = dict(old.get("variants") or {})
    if not variants and "test" in old:
        variants["whole"] = {k: old[k] for k in VARIANT_KEYS if k in old}
        variants["whole"].setdefault("commit", old.get("commit"))
    variants[name] = variant
    chosen = max(variants, key=lambda v: variants[v]["val_dice"])
    return {**variants[chosen], "variants": variants, "chosen_by_validation": chosen}


def cv_ensemble(
    cfg: dict[str, Any],
    cv_dir: Path,
    folds: int,
    root: Path,
    stems: list[str],
    truths: list[np.ndarray],
    fovs: list[np.ndarray],
    single_f1: dict[str, np.ndarray],
) -> dict[str, Any]:
    """``biounet cv`` of ``cfg`` into ``cv_dir`` (done folds are kept), the folds bundled by
    ``biounet ensemble`` and scored on the test images without and with flip TTA, and image by
    image against ``single_f1`` (the single model's per-image F1, "test" and "test_tta")."""
    from biounet.api import run_config
    from biounet.checkpoint import save_model_ensemble
    from biounet.cv import fold_runs, run_cv

    t0 = time.perf_counter()
    summary = run_cv(run_config(cfg), cv_dir, folds)
    assert summary is not None  # every fold ran
    ens = cv_dir / "folds_ensemble.pt"
    if not ens.is_file():
        save_model_ensemble(fold_runs(cv_dir), ens)
    out: dict[str, Any] = {
        "commit": git_commit(),
        "folds": folds,
        "cv_dice": summary["labels"]["vessel"]["dice_mean"],  # out-of-fold, whole images
        "cv_s": time.perf_counter() - t0,  # 0 where the folds were trained before
    }
    for key, tta in (("test", False), ("test_tta", True)):
        probs, s_per_image = predict_test(ens, root, stems, tta)
        out[key] = {"fov": fov_scores(probs, truths, fovs), "predict_s_per_image": s_per_image}
        # image by image against the single model (A) with the same TTA: F1 inside the FOV
        f1_ens = fov_f1_per_image(probs, truths, fovs)
        out[key]["vs_single"] = paired_stats(single_f1[key], f1_ens, higher=True)
    return out


def fov_f1_per_image(
    probs: list[np.ndarray], truths: list[np.ndarray], fovs: list[np.ndarray]
) -> np.ndarray:
    """(n,) F1 at 0.5 inside each image's field of view."""
    return np.array(
        [
            confusion_scores(p[f] > 0.5, t[f])["f1"]
            for p, t, f in zip(probs, truths, fovs, strict=True)
        ]
    )


def markdown(r: dict[str, Any]) -> str:
    cols = ("accuracy", "sensitivity", "specificity", "f1", "auc", "f1_per_image_mean")
    rows = []
    for name, v in r["variants"].items():
        mark = " (chosen)" if name == r["chosen_by_validation"] else ""
        rows.append((f"{name}{mark}, no TTA", v["val_dice"], v["test"]["fov"]))
        rows.append((f"{name}{mark}, flip TTA", v["val_dice"], v["test_tta"]["fov"]))
    for name, e in (r.get("cv_ensembles") or {}).items():
        for key, what in (("test", "no TTA"), ("test_tta", "flip TTA")):
            rows.append(
                (f"{name}: {e['folds']} CV folds as one ensemble, {what}", None, e[key]["fov"])
            )
    rows.append(("second observer vs first", None, r["second_observer"]))
    c = r["variants"][r["chosen_by_validation"]]
    out = [
        "# Retinal vessels (DRIVE) with the generic U-Net",
        "",
        f"Machine: {r['machine']}. Commit: `{r['commit']}`. Command: "
        "`python benchmarks/drive_vessels.py [--patch-size P]`"
        + (" (--quick: tiny budget, numbers meaningless)" if r["quick"] else "")
        + ".",
        "",
        f"`{c['settings']['preset']}` preset ({c['params']:,} parameters), whole images at "
        f"{c['settings']['image_size']} px, {c['settings']['epochs']} epochs; variants: whole "
        "images, or random square crops of them (`--patch-size`, as many pixels per epoch); the "
        f"best epoch of each by Dice on {c['n_val']} held-out training images, and the variant "
        "by the same validation Dice (chosen before the test images were scored). "
        f"{c['test']['n_images']} test images, first observer; inside the field of view, all "
        "pixels pooled, threshold 0.5 (AUC: of the probabilities).",
        "",
        "| | val Dice | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for name, val, m in rows:
        out.append(
            f"| {name} | {'-' if val is None else format(val, '.4f')} | "
            + " | ".join("-" if m.get(k) is None else f"{m[k]:.4f}" for k in cols)
            + " |"
        )
    out += ["", "| variant | train s | best epoch | s per image (TTA) | whole-image Dice (TTA) |"]
    out += ["|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        out.append(
            f"| {name} | {v['train_time_s']:.0f} | {v['best_epoch']} | "
            f"{v['test']['predict_s_per_image']:.3f} ({v['test_tta']['predict_s_per_image']:.3f}) | "
            f"{v['test']['dice_mean']:.4f} ({v['test_tta']['dice_mean']:.4f}) |"
        )
    for name, e in (r.get("cv_ensembles") or {}).items():
        out += [
            "",
            f"{name}, {e['folds']} CV folds as one ensemble (`--cv-ensemble`): each fold trained "
            f"as the variant on 4/5 of the training images; out-of-fold Dice {e['cv_dice']:.4f}; "
            f"{e['test']['predict_s_per_image']:.3f} s per test image "
            f"({e['test_tta']['predict_s_per_image']:.3f} with TTA). Commit `{e['commit']}`.",
        ]
        for key, what in (("test", "no TTA"), ("test_tta", "flip TTA")):
            v = e[key].get("vs_single")
            if v:
                lo, hi = v["diff_ci95"]
                out.append(
                    f"Against the single {name} model image by image ({what}): F1 inside the "
                    f"field of view {v['diff_mean']:+.4f} (95 % paired bootstrap interval "
                    f"{lo:+.4f} to {hi:+.4f}), ensemble better on {v['b_wins']} of {v['n']} "
                    f"images: {v['verdict'].replace('B better', 'ensemble better').replace('A better', 'single model better')}."
                )
    out += [
        "",
        "For scale, published U-Net variants' F1 on these test images: "
        + ", ".join(f"{k} {v:.4f}" for k, v in LITERATURE_F1.items())
        + " (as tabulated in github.com/zhengyuan-liu/Retinal-Vessel-Segmentation).",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "drive")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_drive"))
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--patch-size", type=int, default=0, help="train on crops of this side")
    ap.add_argument("--quick", action="store_true", help="2 epochs at 128 px, 4 test images")
    ap.add_argument(
        "--cv-ensemble", action="store_true", help="also the 5 CV folds of the variant as one"
    )
    a = ap.parse_args()
    root = require(a.data)
    size, epochs = (128, 2) if a.quick else (SIZE, a.epochs)
    patch = min(a.patch_size, 64) if a.quick and a.patch_size else a.patch_size
    name = variant_name(patch)
    work = a.work.with_name(a.work.name + "_quick") if a.quick else a.work
    suffix = "" if name == "whole" else f"_{name}"
    run = work / f"run{suffix}"
    t0 = time.perf_counter()
    cfg = {
        "data": {"root": str(root), "labels": ["vessel"], "image_size": size, "patch_size": patch},
        # the rate and batch these results were measured with (the small preset's recipe, which
        # biounet.fit applies where a dict is silent, trains with batch 8 at 2e-3)
        "train": {"epochs": epochs, "batch_size": 4, "lr": 1e-3, "lr_schedule": "step"},
        "preset": PRESET,
    }
    if not (run / "best.pt").is_file():
        fit(cfg, run, overwrite=True)
        (run / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    train_s = float((run / "train_seconds.txt").read_text())
    stems = read_splits(root)["test"][: 4 if a.quick else None]
    truths = [read_mask(root / "masks" / "vessel" / f"{s}.png") > 0 for s in stems]
    fovs = [read_mask(root / "masks" / "fov" / f"{s}.png") > 0 for s in stems]
    second = [read_mask(root / "masks" / "vessel_observer2" / f"{s}.png") > 0 for s in stems]
    variant: dict[str, Any] = {"commit": git_commit()}
    single_f1: dict[str, np.ndarray] = {}
    ck = run / "best.pt"
    for key, tta in (("test", False), ("test_tta", True)):
        probs, s_per_image = predict_test(ck, root, stems, tta)
        single_f1[key] = fov_f1_per_image(probs, truths, fovs)
        whole = [binary_scores(p > 0.5, t)["dice"] for p, t in zip(probs, truths, strict=True)]
        variant[key] = {
            "n_images": len(stems),
            "fov": fov_scores(probs, truths, fovs),
            "dice_mean": float(np.mean(whole)),  # whole image, as biounet evaluate scores it
            "predict_s_per_image": s_per_image,
        }
    from biounet.checkpoint import load_any

    ckpt = load_any(ck)
    val = json.loads((run / "val" / "summary.json").read_text())
    variant.update(
        settings={
            "preset": PRESET, "image_size": size, "epochs": epochs, "val_fraction": 0.2,
            "patch_size": patch,
        },
        params=int(sum(p.numel() for p in ckpt.build().parameters())),
        best_epoch=ckpt.extra.get("epoch"),
        n_val=val["n_images"],
        val_dice=val["labels"]["vessel"]["dice_mean"],
        train_time_s=train_s,
    )  # fmt: skip
    path = (work if a.quick else RESULTS) / "drive_vessels.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    ensembles = dict(old.get("cv_ensembles") or {})
    if a.cv_ensemble:
        folds = 2 if a.quick else CV_FOLDS
        ensembles[name] = cv_ensemble(
            cfg, work / f"cv{suffix}", folds, root, stems, truths, fovs, single_f1
        )
    result = merged(old, name, variant) | {
        "cv_ensembles": ensembles,
        "commit": git_commit(),
        "machine": machine(),
        "quick": a.quick,
        "second_observer": fov_scores([m.astype(np.float32) for m in second], truths, fovs)
        | {"auc": None},
        "literature_f1": LITERATURE_F1,
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
