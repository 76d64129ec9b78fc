"""k-fold cross-validation on the training split: ``biounet cv``.

The pool is the training split (splits.json "train", or every image without splits.json); the test
split is never touched. Fold k of n (k = 0..n-1) holds out ``sorted(stems)[k::n]``, every n-th image
of the pool's sorted stems starting at the k-th, trains on the others exactly as ``biounet train``
would (best epoch chosen on a ``val_fraction`` of them) and evaluates best.pt on the held-out images
at the masks' own resolution. Images are selected by ``DataConfig.train_stems`` and
``evaluate_checkpoint(stems=...)``: nothing is copied or linked.

Layout of OUT: ``cv.json`` (folds and options, written by the first fold to start), ``fold_K/run``
(a training run folder), ``fold_K/eval`` (evaluate's files), ``fold_K/fold.json`` (written last: the
fold is done) and, once every fold is done, ``cv_summary.json``. Folds share nothing but OUT, so
they can run as separate processes or cluster jobs; a fold killed while training resumes from its
last.pt when its command is run again, and a done fold is skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from biounet.config import RunConfig
from biounet.data.folder import discover, read_splits, select_split
from biounet.errors import BiounetError
from biounet.metrics import bootstrap_ci

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
RULE = "fold k of n holds out sorted(training-split stems)[k::n]"


def training_pool(cfg: RunConfig) -> tuple[str, list[str]]:
    """(split name, sorted stems) of the images cross-validation divides: the training split."""
    root = Path(cfg.data.root)
    samples = discover(root)
    split = cfg.data.train_split if read_splits(root) is not None else "all"
    return split, sorted(s.stem for s in select_split(root, samples, split))


def fold_stems(stems: list[str], folds: int, k: int) -> list[str]:
    """Held-out stems of fold ``k`` (0-based) of ``folds``: ``sorted(stems)[k::folds]``."""
    if folds < 2:
        raise BiounetError(f"--folds must be at least 2, got {folds}")
    if not 0 <= k < folds:
        raise BiounetError(f"--fold must be in 0..{folds - 1} for --folds {folds}, got {k}")
    if len(stems) < folds:
        raise BiounetError(
            f"--folds {folds}: the training split has only {len(stems)} image(s), fewer than folds"
        )
    return sorted(stems)[k::folds]


def fold_config(
    cfg: RunConfig, stems: list[str], folds: int, k: int
) -> tuple[RunConfig, list[str]]:
    """(config training on every stem outside fold ``k``, the held-out stems)."""
    held = fold_stems(stems, folds, k)
    out = set(held)
    pool = tuple(s for s in sorted(stems) if s not in out)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_stems=pool)), held


def run_cv(
    cfg: RunConfig, out: Path, folds: int | None = None, fold: int | None = None
) -> dict[str, Any] | None:
    """Every fold (or only ``fold``) into ``out``; then ``cv_summary.json`` when all folds are done.
    ``folds``: None takes the count of an existing ``out/cv.json``, else 5. Returns the summary, or
    None while folds are missing."""
    out = Path(out)
    if folds is None:
        rec = out / "cv.json"
        folds = int(json.loads(rec.read_text())["folds"]) if rec.is_file() else DEFAULT_FOLDS
    split, stems = training_pool(cfg)
    for k in range(folds) if fold is None else [fold]:
        fold_stems(stems, folds, k)  # argument errors before any training
    check_cv_record(cfg, out, folds)
    for k in range(folds) if fold is None else [fold]:
        run_fold(cfg, out, split, stems, folds, k)
    if all((out / f"fold_{k}" / "fold.json").is_file() for k in range(folds)):
        return summarize(out)
    return None


def check_cv_record(cfg: RunConfig, out: Path, folds: int) -> None:
    """Write ``out/cv.json`` (folds, options), or check this command matches the one that did."""
    # the same folder given another way (relative, absolute) is the same data
    root = str(Path(cfg.data.root).resolve())
    record = {
        "folds": folds,
        "rule": RULE,
        "config": {**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "root": root}},
    }
    path = out / "cv.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("folds") != folds or old.get("config") != record["config"]:
            diff = _changed(old.get("config", {}), record["config"])
            if old.get("folds") != folds:
                diff.insert(0, f"folds {old.get('folds')} -> {folds}")
            raise BiounetError(
                f"{path}: this cross-validation was started with other options "
                f"({'; '.join(diff[:4])}); use the same ones or another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def _changed(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """'key old -> new' for every leaf that differs between two config dicts."""
    diff = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diff.extend(_changed(a, b, f"{prefix}{k}."))
        elif a != b:
            diff.append(f"{prefix}{k} {a} -> {b}")
    return diff


def run_fold(
    cfg: RunConfig, out: Path, split: str, stems: list[str], folds: int, k: int
) -> dict[str, Any]:
    """Train fold ``k`` into ``out/fold_k/run``, evaluate its best.pt on the held-out images into
    ``out/fold_k/eval``, then write ``out/fold_k/fold.json``. A done fold is left as it is."""
    from biounet.evaluate import evaluate_checkpoint
    from biounet.predictor import PredictOptions
    from biounet.train import fit
    from biounet.train_data import split_samples

    fdir = out / f"fold_{k}"
    if (fdir / "fold.json").is_file():
        log.info("fold %d: done already (%s/fold.json), skipped", k, fdir)
        return json.loads((fdir / "fold.json").read_text())
    cfg_k, held = fold_config(cfg, stems, folds, k)
    run = fdir / "run"
    resume = (run / "last.pt").is_file() and (run / "config.yaml").is_file()
    log.info(
        "fold %d/%d: %d held out, %d to train on%s",
        k,
        folds,
        len(held),
        len(cfg_k.data.train_stems),
        " (resuming)" if resume else "",
    )
    fit(cfg_k, run, resume=resume)
    t = cfg.train
    s = evaluate_checkpoint(
        run / "best.pt",
        Path(cfg.data.root),
        split,
        fdir / "eval",
        PredictOptions(precision=t.precision, threshold=t.threshold),
        invert_masks=cfg.data.invert_masks,
        stems=held,
    )
    tr, val, _ = split_samples(cfg_k)
    info = {
        "fold": k,
        "folds": folds,
        "rule": RULE,
        "held_out": held,
        "train": [x.stem for x in tr],
        "val": [x.stem for x in val],
        "best_epoch": best_epoch(run / "metrics.csv"),
        "labels": {
            lb: {m: v[f"{m}_mean"] for m in ("dice", "iou")} for lb, v in s["labels"].items()
        },
    }
    write_json(fdir / "fold.json", info)
    return info


def fold_runs(path: Path) -> list[Path]:
    """``path`` itself, or for a ``biounet cv`` folder (it holds cv.json) its folds' run folders
    in fold order; BiounetError where a fold is not done (no fold_K/fold.json)."""
    path = Path(path)
    if not (path.is_dir() and (path / "cv.json").is_file()):
        return [path]
    folds = int(json.loads((path / "cv.json").read_text())["folds"])
    missing = [k for k in range(folds) if not (path / f"fold_{k}" / "fold.json").is_file()]
    if missing:
        raise BiounetError(
            f"{path}: fold(s) {missing} of {folds} not done yet (no fold_K/fold.json)"
        )
    return [path / f"fold_{k}" / "run" for k in range(folds)]


def best_epoch(metrics_csv: Path) -> int:
    """The epoch best.pt holds: the first with the highest mean validation Dice."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return int(max(rows, key=lambda r: float(r["val_dice_mean"]))["epoch"])


def summarize(out: Path) -> dict[str, Any]:
    """``out/cv_summary.json``: per label, Dice and IoU over every held-out image (each image is
    held out by exactly one fold), and each fold's own means."""
    out = Path(out)
    if not (out / "cv.json").is_file():
        raise BiounetError(f"{out}/cv.json: not found; is {out} a biounet cv folder?")
    folds = int(json.loads((out / "cv.json").read_text())["folds"])
    missing = [k for k in range(folds) if not (out / f"fold_{k}" / "fold.json").is_file()]
    if missing:
        raise BiounetError(
            f"{out}: fold(s) {missing} of {folds} not done yet (no fold_K/fold.json); "
            "run them with biounet cv ... --fold K"
        )
    rows: list[dict[str, str]] = []
    per_fold = []
    for k in range(folds):
        info = json.loads((out / f"fold_{k}" / "fold.json").read_text())
        with open(out / f"fold_{k}" / "eval" / "per_image.csv", newline="") as f:
            fold_rows = list(csv.DictReader(f))
        if {r["stem"] for r in fold_rows} != set(info["held_out"]):
            raise BiounetError(f"{out}/fold_{k}/eval/per_image.csv: not the fold's held-out images")
        rows.extend(fold_rows)
        per_fold.append(
            {
                **{x: info[x] for x in ("fold", "best_epoch", "labels")},
                "n_images": len(info["held_out"]),
            }
        )
    stems = [r["stem"] for r in rows if r["label"] == rows[0]["label"]]
    if len(stems) != len(set(stems)):
        raise BiounetError(f"{out}: an image is held out by more than one fold")
    summary = {
        "folds": folds,
        "rule": RULE,
        "n_images": len(stems),
        "labels": label_stats(rows),
        "between_folds": {
            lb: {
                f"{m}_std": float(np.std([f["labels"][lb][m] for f in per_fold]))
                for m in ("dice", "iou")
            }
            for lb in per_fold[0]["labels"]
        },
        "per_fold": per_fold,
    }
    write_json(out / "cv_summary.json", summary)
    return summary


def label_stats(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Per label: mean, std and the 95 % bootstrap interval of the mean of Dice and IoU over the
    images (one row per image and label)."""
    out: dict[str, dict[str, float]] = {}
    for lb in dict.fromkeys(r["label"] for r in rows):
        d: dict[str, float] = {"n_images": sum(r["label"] == lb for r in rows)}
        for m in ("dice", "iou"):
            v = np.array([float(r[m]) for r in rows if r["label"] == lb])
            d[f"{m}_mean"], d[f"{m}_std"] = float(v.mean()), float(v.std())
            d[f"{m}_ci95_low"], d[f"{m}_ci95_high"] = bootstrap_ci(v)
        out[lb] = d
    return out


def format_cv_summary(s: dict[str, Any]) -> str:
    """A table for the terminal: per label over all held-out images, then each fold's Dice."""
    labels = list(s["labels"])
    lines = [
        f"{s['folds']}-fold cross-validation, {s['n_images']} held-out images (per-image mean ± std)",
        f"{'label':<12}{'Dice':>16}{'IoU':>16}",
    ]
    for lb, m in s["labels"].items():
        lines.append(
            f"{lb:<12}{m['dice_mean']:>9.4f} ±{m['dice_std']:.3f}{m['iou_mean']:>9.4f} ±{m['iou_std']:.3f}"
        )
    lines.append(
        f"{'fold':<6}{'images':>7}{'epoch':>7}" + "".join(f"{'Dice ' + lb:>14}" for lb in labels)
    )
    for f in s["per_fold"]:
        dice = "".join(f"{f['labels'][lb]['dice']:>14.4f}" for lb in labels)
        lines.append(f"{f['fold']:<6}{f['n_images']:>7}{f['best_epoch']:>7}{dice}")
    return "\n".join(lines)


def write_json(path: Path, obj: Any) -> None:
    """Atomically (temporary file, rename): folds running side by side read whole files only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
