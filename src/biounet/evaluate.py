"""Evaluate a checkpoint on a dataset split at the masks' own resolution.

Called as a function, ``biounet.evaluate(checkpoint, data, split=None, out_dir=None,
threshold=0.5, precision="auto", tta=False, postprocess=True, uncertainty=False,
tta_scales=None)`` is
``biounet.api.evaluate`` (see its docstring): this module answers for it.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from biounet.calibration import DICE_BELOW, N_BINS, ReliabilityBins, score_vs_dice
from biounet.data.dataset import load_masks
from biounet.data.folder import (
    check_invert,
    discover,
    read_splits,
    resolve_labels,
    select_split,
)
from biounet.data.io import read_image
from biounet.data.transforms import Geometry, square_geometry, to_network
from biounet.errors import BiounetError
from biounet.losses import article_dice_loss_pooled, article_iou_pooled
from biounet.metrics import METRICS, bce, binary_scores, summarize
from biounet.predictor import FundusPipelinePredictor, PredictOptions, make_predictor
from biounet.uncertainty import image_uncertainty

COLUMNS = ["stem", "label", *METRICS, "hd95", "asd"]


def evaluate_checkpoint(
    checkpoint: Path,
    data_root: Path,
    split: str | None,
    out_dir: Path,
    opts: PredictOptions | None = None,
    batch_size: int = 4,
    invert_masks: tuple[str, ...] = (),
    article_size: int | None = None,
    stems: Sequence[str] | None = None,
    report: bool = True,
    uncertainty: bool = False,
) -> dict[str, Any]:
    """Writes per_image.csv, summary.json, calibration.json + reliability.png, cases/ (best,
    median, worst thumbnails) and, with ``report``, report.html into ``out_dir``; returns the
    summary. ``stems``: only these images of the split.

    Per image and label: Dice, IoU, BCE, precision, recall, HD95 and average surface distance (pixels)
    of the final masks at the mask's resolution. Also the article's own numbers ("article_metrics"):
    BCE, 1 - soft Dice and IoU pooled over batches of ``batch_size`` images and all labels, at the
    network resolution. Fundus data (disc + cup) also get vCDR per image and its error.

    Calibration: the ECE of each label's probabilities (``labels.<label>.ece``; pixels of all
    images pooled, see ``biounet.calibration``). ``uncertainty``: each image's uncertainty scores
    as ``predict --uncertainty`` computes them (in per_image_measures.csv), and in
    ``summary["uncertainty"]`` how well they find the images with Dice below 0.8 (AUROC) and
    their Spearman correlation with Dice."""
    if Path(out_dir).is_file():  # before the work, not after it
        raise BiounetError(f"{out_dir}: is a file; --out names the folder the outputs go to")
    opts = opts or PredictOptions()
    pred = make_predictor(checkpoint, opts)
    root = Path(data_root)
    if root.is_file():
        raise BiounetError(
            f"{root}: evaluate takes one dataset folder (images/, masks/), not a file or a dataset "
            "list: evaluate each dataset of a list on its own"
        )
    if split is None:
        split = "test" if read_splits(root) else "all"
    samples, invert = labelled_samples(pred, checkpoint, root, split, stems, invert_masks)
    size = article_size or _network_size(pred)
    rows, image_rows, art = [], [], {"bce": [], "dice_loss": [], "iou": []}
    calib = ReliabilityBins(pred.labels, N_BINS)
    batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for s in samples:
        img = read_image(s.image)
        target = load_masks(s, pred.labels, invert, img.shape[:2])
        p = pred.predict(img)
        rows.extend(label_rows(s.stem, p.prob, p.masks, target, pred.labels))
        calib.add(p.prob, target)
        scores = image_uncertainty(pred, img, p)[1] if uncertainty else {}
        image_rows.append(
            {
                "stem": s.stem,
                **_measure_row(p, target, pred.labels),
                **scores,
                "flags": ";".join(p.flags),
            }
        )
        batch.append((img, target, p.prob))
        if len(batch) == batch_size or s is samples[-1]:
            _article_batch(batch, size, art)
            batch = []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "per_image.csv", rows, COLUMNS)
    if any(len(r) > 2 for r in image_rows):
        _write_csv(out_dir / "per_image_measures.csv", image_rows, list(image_rows[0]))
    summary = {
        "checkpoint": str(checkpoint),
        "model": model_description(pred),
        "data": str(root),
        "split": split,
        "n_images": len(samples),
        "threshold": opts.threshold,
        # what each label's masks were cut at (given, or saved in the checkpoint)
        "label_thresholds": getattr(pred, "cuts", None) or opts.cuts(pred.labels),
        "tta": bool(getattr(pred, "tta", opts.tta)),  # EM models: also when chosen in training
        # fundus pipelines: the ROI sizes averaged (see make_predictor); None for other models
        "tta_scales": list(pred.inner.tta_scales)
        if isinstance(pred, FundusPipelinePredictor)
        else None,
        "postprocess": opts.postprocess,
        "resolution": "each mask's own resolution (predictions resized back)",
        "labels": summarize(rows),
        "article_metrics": {
            "note": f"the article's definitions: pooled over batches of {batch_size} images and all labels, at "
            f"{size}x{size}; 'dice_loss_pooled' is 1 - soft Dice (a loss: lower is better)",
            "bce": float(np.mean(art["bce"])),
            "dice_loss_pooled": float(np.mean(art["dice_loss"])),
            "iou_pooled": float(np.mean(art["iou"])),
        },
    }
    if "vcdr" in image_rows[0]:
        summary["vcdr"] = vcdr_summary(image_rows, root)
    write_calibration(out_dir, calib, summary)
    if uncertainty:
        summary["uncertainty"] = uncertainty_summary(image_rows, rows, pred.labels)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    from biounet.report import save_cases, write_evaluation_report

    save_cases(out_dir, pred, samples, pred.labels, invert, rows)
    if report:
        write_evaluation_report(out_dir, summary, _train_config(pred), Path(checkpoint))
    return summary


def threshold_text(summary: dict[str, Any]) -> str:
    """ "threshold 0.5", with the labels cut elsewhere: "threshold 0.5 (cup 0.01)"."""
    cuts = summary.get("label_thresholds") or {}
    own = ", ".join(f"{lb} {t:g}" for lb, t in cuts.items() if t != summary["threshold"])
    return f"threshold {summary['threshold']}" + (f" ({own})" if own else "")


def labelled_samples(
    pred: Any,
    checkpoint: Path,
    root: Path,
    split: str,
    stems: Sequence[str] | None = None,
    invert_masks: Sequence[str] = (),
) -> tuple[list[Any], tuple[str, ...]]:
    """The samples of ``root``'s ``split`` (only ``stems`` where given), each with a mask for
    every label of the predictor ``pred``, and the labels whose masks are stored inverted
    (``invert_masks``, default: as the checkpoint was trained). BiounetError naming the folder
    for an empty selection, a missing mask or an unknown label."""
    samples = select_split(root, discover(root), split)
    if stems is not None:
        wanted = set(stems)
        samples = [s for s in samples if s.stem in wanted]
    if not samples:
        raise BiounetError(f"{root}: split {split!r} is empty")
    resolve_labels(samples, pred.labels, root, f"{checkpoint} (the model's labels)")
    invert = tuple(invert_masks) or tuple(
        _train_config(pred).get("data", {}).get("invert_masks", [])
    )
    check_invert(invert, pred.labels)
    return samples, invert


def label_rows(
    stem: str,
    prob: np.ndarray,
    masks: dict[str, np.ndarray],
    target: np.ndarray,
    labels: tuple[str, ...],
) -> list[dict[str, Any]]:
    """One row per label: METRICS + hd95 + asd (inf where one mask is empty; left out of the summary)."""
    from biounet.surface import average_surface_distance, hd95

    rows = []
    for i, lb in enumerate(labels):
        t = target[i] > 0
        row: dict[str, Any] = {
            "stem": stem,
            "label": lb,
            **binary_scores(masks[lb], t),
            "bce": bce(prob[i], t),
        }
        row["hd95"] = hd95(masks[lb], t)
        row["asd"] = average_surface_distance(masks[lb], t)
        rows.append(row)
    return rows


def write_calibration(out_dir: Path, calib: ReliabilityBins, summary: dict[str, Any]) -> None:
    """calibration.json (ECE and per-bin confidence, accuracy, count per label), reliability.png,
    and the ECE into ``summary["labels"][label]["ece"]``."""
    from biounet.viz import plot_reliability

    table = calib.table()
    for lb, t in table.items():
        summary["labels"][lb]["ece"] = t["ece"]
    summary["calibration"] = {
        "ece_bins": calib.n_bins,
        "pixels": "all images pooled, each at its mask's own resolution",
        "bins": "equal-width bins of the predicted probability; per bin in calibration.json",
    }
    doc = {**summary["calibration"], "labels": table}
    (out_dir / "calibration.json").write_text(json.dumps(doc, indent=1))
    plot_reliability(table, out_dir / "reliability.png")


def uncertainty_summary(
    image_rows: list[dict[str, Any]], rows: list[dict[str, Any]], labels: tuple[str, ...]
) -> dict[str, Any]:
    """``score_vs_dice`` of the per-image uncertainty scores, with what the score is."""
    dice: dict[str, dict[str, float]] = {}
    for r in rows:
        dice.setdefault(r["stem"], {})[r["label"]] = float(r["dice"])
    scores = {
        r["stem"]: {k: v for k, v in r.items() if k.startswith("uncertainty")} for r in image_rows
    }
    return {
        "score": "mean entropy (bits) of the flip-averaged probability around the predicted "
        "structures, as predict --uncertainty (biounet.uncertainty)",
        "dice_below": DICE_BELOW,
        **score_vs_dice(scores, dice, labels, DICE_BELOW),
    }


def _measure_row(p: Any, target: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    if "vcdr" not in p.measures:
        return {}
    from biounet.fundus.cdr import vertical_cdr

    true_vcdr = vertical_cdr(target[labels.index("disc")] > 0, target[labels.index("cup")] > 0)
    keys = ("vcdr", "hcdr", "acdr")
    return {**{k: p.measures.get(k) for k in keys}, "vcdr_true_masks": true_vcdr}


def vcdr_summary(image_rows: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """vCDR error against the ground-truth masks' vCDR and, where the dataset has them
    (meta/cdr_values.csv: one column per expert), against the mean of the experts' values."""
    pred = np.array([r["vcdr"] for r in image_rows], dtype=float)
    out: dict[str, Any] = {
        "mae_vs_masks": _mae(pred, np.array([r["vcdr_true_masks"] for r in image_rows]))
    }
    experts = expert_cdr(root)
    if experts:
        have = [i for i, r in enumerate(image_rows) if r["stem"] in experts]
        if have:
            e = np.array([experts[image_rows[i]["stem"]] for i in have])
            p = pred[have]
            out["mae_vs_experts_mean"] = _mae(p, e)
            ok = np.isfinite(p)
            out["pearson_r_vs_experts_mean"] = (
                float(np.corrcoef(p[ok], e[ok])[0, 1]) if ok.sum() > 2 else math.nan
            )
            out["experts_reference"] = "meta/cdr_values.csv: mean of value_1..value_4 per image"
            out["n_images"] = len(have)
    return out


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[ok] - b[ok]).mean()) if ok.any() else math.nan


def expert_cdr(root: Path) -> dict[str, float]:
    """Per stem, the mean of the experts' vCDR values in ``root``/meta/cdr_values.csv (columns
    value_1..value_N); empty when the file is absent."""
    path = root / "meta" / "cdr_values.csv"
    if not path.is_file():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        vals = [float(v) for k, v in r.items() if k.startswith("value_") and v not in ("", None)]
        if vals:
            out[r["stem"]] = float(np.mean(vals))
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def model_description(pred: Any) -> str:
    """What ``evaluate`` scored, in words: a single model (its architecture), an ensemble of single
    models (how many; the mean of their probabilities) or a fundus pipeline (how many pipelines
    averaged)."""
    if isinstance(pred, FundusPipelinePredictor):
        n = len(pred.inner.members)
        return "fundus pipeline" + (
            f" ensemble of {n} pipelines (probabilities averaged)" if n > 1 else ""
        )
    members = getattr(pred, "members", [])
    archs = sorted({m.model_config.arch for m in members})
    if len(members) > 1:
        return (
            f"ensemble of {len(members)} single models ({', '.join(archs)}; probabilities averaged)"
        )
    return f"single model ({', '.join(archs)})"


def _train_config(pred: Any) -> dict[str, Any]:
    ck = getattr(pred, "ck", None)
    if ck is None:
        return {}
    cfg = ck.extra.get("run_config", {})
    members = getattr(pred, "members", [])
    if len(members) > 1 and cfg:  # an ensemble: say whose training this is
        return {"ensemble": f"{len(members)} members; the first member's training below", **cfg}
    return cfg


def _network_size(pred: Any) -> int:
    ck = getattr(pred, "ck", None)
    return int(ck.preprocess["image_size"]) if ck is not None else 224


def _article_batch(
    batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, acc: dict[str, list[float]]
) -> None:
    """The article's batch-pooled numbers at network resolution, from full-resolution probabilities."""
    ts, ps = [], []
    for im, t, p in batch:
        geo = square_geometry(im.shape[0], im.shape[1], size)
        ts.append(to_network(t, geo, is_mask=True))
        ps.append(_to_square(p, geo))
    t = torch.stack(ts).float()
    p = torch.stack(ps).clamp(1e-6, 1 - 1e-6)
    logits = torch.log(p) - torch.log1p(-p)
    acc["bce"].append(F.binary_cross_entropy(p, t).item())
    acc["dice_loss"].append(article_dice_loss_pooled(logits, t).item())
    acc["iou"].append(article_iou_pooled(logits, t).item())


def _to_square(p: np.ndarray, geo: Geometry) -> torch.Tensor:
    """(L, h, w) probabilities -> (L, size, size) as the network saw them (padded square, resized)."""
    sq = torch.zeros((p.shape[0], geo.side, geo.side))
    sq[:, geo.top : geo.top + geo.h, geo.left : geo.left + geo.w] = torch.from_numpy(p)
    if geo.side == geo.size:
        return sq
    mode = "area" if geo.side > geo.size else "bilinear"
    return F.interpolate(sq[None], size=(geo.size, geo.size), mode=mode)[0]


class _CallableModule(types.ModuleType):
    """``biounet.evaluate`` is this module once anything imports it (the import system sets the
    package attribute), so the module itself answers the Python API's ``biounet.evaluate(...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from biounet.api import evaluate

        return evaluate(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature(biounet.evaluate): the API function's
        import inspect

        from biounet.api import evaluate

        return inspect.signature(evaluate)


sys.modules[__name__].__class__ = _CallableModule
