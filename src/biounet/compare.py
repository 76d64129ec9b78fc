"""``biounet compare A B``: is model B better than model A on the same images?

Reads two ``evaluate`` output folders (their ``per_image.csv``), pairs the rows by image and
label, and per label gives both means, the mean of the per-image differences (B - A) with its 95 %
paired bootstrap confidence interval (``metrics.bootstrap_ci`` of the differences: the images
resampled, each keeping its own pair), how many images each model wins, and a verdict that says
"no clear difference" unless the interval leaves zero. Pairing matters: two models scored on
the same hard and easy images differ far less than their two means' own intervals suggest.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError
from biounet.metrics import bootstrap_ci

# metric -> whether a larger value is better
METRICS = {
    "dice": True, "iou": True, "precision": True, "recall": True,
    "hd95": False, "asd": False, "bce": False,
}  # fmt: skip


def read_per_image(folder: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(stem, label) -> row of ``folder``/per_image.csv; BiounetError naming the file when it is
    missing or not evaluate's."""
    path = Path(folder) / "per_image.csv"
    if not path.is_file():
        raise BiounetError(f"{path}: not found; compare takes two folders written by evaluate")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"stem", "label"} <= set(rows[0]):
        raise BiounetError(f"{path}: no per-image rows with stem and label (not evaluate's)")
    return {(r["stem"], r["label"]): r for r in rows}


def compare_evaluations(a: Path, b: Path, metric: str = "dice") -> dict[str, Any]:
    """Paired comparison of evaluate folders ``a`` and ``b`` on ``metric`` (see the module's
    docstring). BiounetError where the two did not score the same images and labels."""
    if metric not in METRICS:
        raise BiounetError(f"--metric {metric!r}: one of {', '.join(METRICS)}")
    ra, rb = read_per_image(a), read_per_image(b)
    if set(ra) != set(rb):
        only_a = sorted({s for s, _ in set(ra) - set(rb)})
        only_b = sorted({s for s, _ in set(rb) - set(ra)})
        raise BiounetError(
            f"{a} and {b} scored other images or labels (only in the first: "
            f"{', '.join(only_a[:5]) or '-'}; only in the second: {', '.join(only_b[:5]) or '-'}); "
            "compare needs both models evaluated on the same split"
        )
    if metric not in next(iter(ra.values())):
        raise BiounetError(f"{a}/per_image.csv: no column {metric!r}")
    higher = METRICS[metric]
    labels = list(dict.fromkeys(lb for _, lb in ra))
    out: dict[str, Any] = {"a": str(a), "b": str(b), "metric": metric, "labels": {}}
    for lb in labels:
        keys = sorted(k for k in ra if k[1] == lb)
        va = np.array([float(ra[k][metric]) for k in keys])
        vb = np.array([float(rb[k][metric]) for k in keys])
        ok = np.isfinite(va) & np.isfinite(vb)  # HD95 is infinite where a mask is empty
        out["labels"][lb] = paired_stats(va[ok], vb[ok], higher) | {
            "n_not_finite": int((~ok).sum())
        }
    return out


def paired_stats(va: np.ndarray, vb: np.ndarray, higher: bool) -> dict[str, Any]:
    """Per-image values of A and B (same images, same order) -> means, the mean difference B - A
    with its 95 % bootstrap interval, wins of each, ties, and the verdict."""
    d = vb - va
    lo, hi = bootstrap_ci(d)
    if not d.size:
        verdict = "no images to compare"
    elif lo > 0 or hi < 0:
        b_better = (lo > 0) == higher
        verdict = f"{'B' if b_better else 'A'} better (the interval leaves 0)"
    else:
        verdict = "no clear difference (the interval includes 0)"
    sign = 1 if higher else -1
    return {
        "n": int(d.size),
        "mean_a": float(va.mean()) if d.size else math.nan,
        "mean_b": float(vb.mean()) if d.size else math.nan,
        "diff_mean": float(d.mean()) if d.size else math.nan,
        "diff_ci95": [lo, hi],
        "b_wins": int((sign * d > 0).sum()),
        "a_wins": int((sign * d < 0).sum()),
        "ties": int((d == 0).sum()),
        "verdict": verdict,
    }


def format_comparison(c: dict[str, Any]) -> str:
    """The terminal table of ``compare_evaluations``."""
    m = c["metric"]
    lines = [
        f"A = {c['a']}",
        f"B = {c['b']}",
        f"{'label':<12}{'n':>5}{'A ' + m:>12}{'B ' + m:>12}{'B - A':>10}  {'95 % CI':<20}"
        f"{'B wins':>7}{'A wins':>7}  verdict",
    ]
    for lb, s in c["labels"].items():
        lo, hi = s["diff_ci95"]
        lines.append(
            f"{lb:<12}{s['n']:>5}{s['mean_a']:>12.4f}{s['mean_b']:>12.4f}{s['diff_mean']:>+10.4f}  "
            f"{f'{lo:+.4f} to {hi:+.4f}':<20}{s['b_wins']:>7}{s['a_wins']:>7}  {s['verdict']}"
        )
    return "\n".join(lines)
