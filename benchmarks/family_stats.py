"""Pure helpers of benchmarks/family.py: the Drishti-GS1 cross-validation row of a model, training
throughput from a run's metrics.csv, the paired comparison against the U-Net and the verdict, and the
markdown. No torch, no files: tested in tests/test_family_bench.py."""

from __future__ import annotations

import statistics
from typing import Any

BASELINE = "small"
DRISHTI_LABELS = ("disc", "cup")
EM_KEYS = ("v_rand_thinned", "v_info_thinned", "v_rand", "v_info", "pixel_error", "rand_error")
# the challenge's final metric (foreground-restricted V-Rand after border thinning): compares models
EM_SCORE = "v_rand_thinned"


def drishti_entry(summary: dict[str, Any]) -> dict[str, Any]:
    """A model's row from ``biounet.cv`` 's cv_summary.json: per label the Dice and IoU over all
    held-out images (each image scored once, by the fold that held it out, so these are the
    image-weighted means of the fold means), the fold-to-fold std, and per fold the mean Dice over
    the labels (the unit the paired comparison uses)."""
    labels = summary["labels"]
    per_fold = summary["per_fold"]
    return {
        "n_images": summary["n_images"],
        "folds": summary["folds"],
        **{
            lb: {k: labels[lb][k] for k in ("dice_mean", "dice_std", "iou_mean", "iou_std")}
            | {"dice_between_folds_std": summary["between_folds"][lb]["dice_std"]}
            for lb in DRISHTI_LABELS
        },
        "mean_dice": statistics.fmean(labels[lb]["dice_mean"] for lb in DRISHTI_LABELS),
        "per_fold": [
            {
                "fold": f["fold"],
                "n_images": f["n_images"],
                "best_epoch": f["best_epoch"],
                **{f"{lb}_dice": f["labels"][lb]["dice"] for lb in DRISHTI_LABELS},
                "mean_dice": statistics.fmean(f["labels"][lb]["dice"] for lb in DRISHTI_LABELS),
            }
            for f in per_fold
        ],
    }


def images_per_epoch(n_train: int, batch_size: int) -> int:
    """Images one epoch of ``biounet.train_data.array_batches`` shows: a last batch of one is dropped
    (it would break batch norm)."""
    return n_train - 1 if n_train % batch_size == 1 and n_train > batch_size else n_train


def run_throughput(rows: list[dict[str, str]], n_train: int, batch_size: int) -> dict[str, float]:
    """metrics.csv rows of a run -> epochs, seconds (training, augmentation and per-epoch validation;
    not checkpoint writing) and images seen per second."""
    seconds = sum(float(r["seconds"]) for r in rows)
    seen = len(rows) * images_per_epoch(n_train, batch_size)
    return {"epochs": len(rows), "seconds": seconds, "img_s": seen / seconds if seconds else 0.0}


def compare(base: list[float], other: list[float], higher_is_better: bool = True) -> dict[str, Any]:
    """Paired comparison over the same units (folds or slices): ``other - base`` per unit.

    ``spread`` is the baseline's own std over the units (population std). The outcome is "better"
    only when every unit improves and the mean gain exceeds the spread, "worse" symmetrically, and
    "no clear difference" otherwise: with one seed per model and a handful of units, anything less
    is not evidence either way."""
    if len(base) != len(other) or not base:
        raise ValueError(
            f"base and other must be non-empty and paired, got {len(base)} and {len(other)}"
        )
    sign = 1.0 if higher_is_better else -1.0
    deltas = [sign * (o - b) for b, o in zip(base, other, strict=True)]
    mean = statistics.fmean(deltas)
    spread = statistics.pstdev(base)
    if all(d > 0 for d in deltas) and mean > spread:
        outcome = "better"
    elif all(d < 0 for d in deltas) and -mean > spread:
        outcome = "worse"
    else:
        outcome = "no clear difference"
    return {"deltas": deltas, "mean_delta": mean, "spread": spread, "outcome": outcome}


def comparisons(drishti: dict[str, Any], isbi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each non-baseline model against the U-Net: Drishti per fold (mean Dice of disc and cup), ISBI
    per scored slice (V-Rand). Datasets a model or the baseline lacks are left out."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted((set(drishti) | set(isbi)) - {BASELINE}):
        c: dict[str, Any] = {}
        if name in drishti and BASELINE in drishti:
            c["drishti"] = compare(
                [f["mean_dice"] for f in drishti[BASELINE]["per_fold"]],
                [f["mean_dice"] for f in drishti[name]["per_fold"]],
            )
        if name in isbi and BASELINE in isbi:
            slices = sorted(isbi[BASELINE]["per_slice"])
            c["isbi2012"] = compare(
                [isbi[BASELINE]["per_slice"][s][EM_SCORE] for s in slices],
                [isbi[name]["per_slice"][s][EM_SCORE] for s in slices],
            )
        out[name] = c
    return out


def _ratio(speed: dict[str, Any], name: str, key: str) -> str:
    a, b = speed.get(name, {}).get(key), speed.get(BASELINE, {}).get(key)
    return f"{a / b:.2f}x" if a and b else "n/a"


def verdict(
    drishti: dict[str, Any],
    isbi: dict[str, Any],
    speed: dict[str, Any],
    paper: dict[str, Any] | None = None,
) -> str:
    """The conclusion, written from the numbers (see ``compare`` for the rule)."""
    parts = []
    if drishti:
        best = max(drishti, key=lambda n: drishti[n]["mean_dice"])
        parts.append(
            f"Drishti-GS1 cross-validation: highest mean Dice (disc, cup) {best} "
            f"({drishti[best]['mean_dice']:.4f})."
        )
    if isbi:
        best = max(isbi, key=lambda n: isbi[n][EM_SCORE])
        parts.append(
            f"ISBI 2012 slices 25-29: highest V-Rand (thinned) {best} ({isbi[best][EM_SCORE]:.4f})."
        )
    pays = []
    for name, c in comparisons(drishti, isbi).items():
        bits = []
        for data, unit in (("drishti", "fold"), ("isbi2012", "slice")):
            if data in c:
                x = c[data]
                bits.append(
                    f"{data} {x['mean_delta']:+.4f} (every {unit}: "
                    f"{', '.join(f'{d:+.3f}' for d in x['deltas'])}; U-Net {unit}-to-{unit} "
                    f"spread {x['spread']:.4f}) -> {x['outcome']}"
                )
                if x["outcome"] == "better":
                    pays.append(f"{name} on {data}")
        cost = (
            f"at {_ratio(speed, name, 'parameters')} the parameters, "
            f"{_ratio(speed, name, 'train_img_s')} the training and "
            f"{_ratio(speed, name, 'infer_img_s_b1')} the batch-1 inference throughput"
        )
        parts.append(f"{name} vs U-Net: {'; '.join(bits)}; {cost}.")
    parts.append(
        "Pays off (every unit better and the mean gain above the U-Net's spread): "
        + (", ".join(pays) if pays else "nowhere on these data at this budget")
        + ". One seed per model and a short equal time budget: a 'no clear difference' is not a tie "
        "proven, only a difference not shown."
    )
    if paper and isbi:
        parts.append(
            f"The paper's unpadded U-Net (its own protocol, isbi2012_em.json) reaches V-Rand "
            f"(thinned) {paper[EM_SCORE]:.4f} on the same slices."
        )
    return " ".join(parts)


def _f(x: Any, fmt: str = ".4f") -> str:
    return format(x, fmt) if isinstance(x, int | float) else "n/a"


def markdown(d: dict[str, Any]) -> str:
    """benchmarks/results/family.md from family.json."""
    s = d["settings"]
    n_cv = next((m["n_images"] for m in d.get("drishti_cv", {}).values()), 0)
    lines = [
        "# The U-Net family: U-Net vs Attention U-Net vs UNet++",
        "",
        f"commit `{d.get('commit')}`, {d.get('machine')}",
        "",
        f"Same recipe for each model: Adam lr {s['lr']} ({s['lr_schedule']}), seed {s['seed']}, "
        f"{s['precision']} precision, the same time budget; best epoch chosen on a "
        f"{s['val_fraction']:.0%} validation part of the training images.",
        "",
        f"## Drishti-GS1: {s['folds']}-fold cross-validation on {n_cv} training images",
        "",
        f"{s['drishti_size']} px whole images, batch {s['drishti_batch']}, {s['minutes']} min per "
        "fold. Dice/IoU per image at the masks' resolution, over all held-out images (each scored "
        "once); ± is the std over images; 'per fold' is each fold's mean Dice of disc and cup.",
        "",
        "| model | disc Dice | cup Dice | disc IoU | cup IoU | per fold | epochs per fold | train img/s (runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in d.get("drishti_cv", {}).items():
        lines.append(
            f"| {name} | {_f(m['disc']['dice_mean'])} ± {_f(m['disc']['dice_std'], '.3f')} | "
            f"{_f(m['cup']['dice_mean'])} ± {_f(m['cup']['dice_std'], '.3f')} | "
            f"{_f(m['disc']['iou_mean'])} | {_f(m['cup']['iou_mean'])} | "
            + " / ".join(_f(f["mean_dice"], ".3f") for f in m["per_fold"])
            + f" | {' / '.join(str(e) for e in m.get('epochs_per_fold', []))} | "
            f"{_f(m.get('train_img_s_in_runs'), '.1f')} |"
        )
    lines += [
        "",
        "## ISBI 2012 EM membranes: trained on slices 00-24, scored on 25-29",
        "",
        f"{s['isbi_size']} px whole slices, batch {s['isbi_batch']}, {s['isbi_minutes']} min; the "
        "label is the membrane (masks inverted), so the sigmoid output is the membrane probability "
        "that V-Rand segments. Membrane threshold chosen on the run's own validation slices by "
        "V-Rand thinned. V-Rand/V-Info foreground-restricted, thinned: after border thinning (the "
        "challenge's final metrics), and without it (biounet.em.metrics).",
        "",
        "| model | V-Rand thinned | V-Info thinned | V-Rand | V-Info | pixel error | Rand error | "
        "threshold | epochs | train img/s (runs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in d.get("isbi2012", {}).items():
        lines.append(
            f"| {name} | "
            + " | ".join(_f(m.get(k)) for k in EM_KEYS)
            + f" | {_f(m.get('membrane_threshold'), '.2f')} | {m.get('epochs', 'n/a')} | "
            f"{_f(m.get('train_img_s_in_runs'), '.1f')} |"
        )
    p = d.get("isbi2012_paper_unet")
    if p:
        lines.append(
            "| paper_valid_small * | "
            + " | ".join(_f(p.get(k)) for k in EM_KEYS)
            + f" | {_f(p.get('membrane_threshold'), '.2f')} | - | - |"
        )
        lines += ["", f"\\* {p['note']}"]
    lines += [
        "",
        f"## Cost (3 in, 2 out, {s['speed_size']} px, synthetic input, each measure in its own "
        "process)",
        "",
        "| model | parameters | train img/s (batch 8) | infer img/s batch 1 | batch 4 | peak MB train | peak MB infer b1 / b4 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in d.get("speed_memory", {}).items():
        lines.append(
            f"| {name} | {m['parameters']:,} | {_f(m.get('train_img_s'), '.1f')} | "
            f"{_f(m.get('infer_img_s_b1'), '.1f')} | {_f(m.get('infer_img_s_b4'), '.1f')} | "
            f"{_f(m.get('train_peak_mb'), '.0f')} | {_f(m.get('infer_peak_mb_b1'), '.0f')} / "
            f"{_f(m.get('infer_peak_mb_b4'), '.0f')} |"
        )
    lines += ["", "Peak MB: VmHWM of the measuring process (Python and torch included).", ""]
    lines += ["## Verdict", "", d.get("verdict", ""), ""]
    return "\n".join(lines)
