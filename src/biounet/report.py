"""``report.html``: one self-contained page per training run or evaluation (images embedded as
base64 PNG, CSS and JS inline, nothing fetched from the network).

The page is built from the files a run and an evaluation write (config, metrics.csv, curves.png,
per_image.csv, cases/), so it can be rebuilt from a folder at any time with ``write_report``.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from biounet import __version__
from biounet.config import RunConfig
from biounet.data.dataset import load_masks
from biounet.data.folder import Sample
from biounet.data.io import read_image, save_png
from biounet.metrics import bootstrap_ci
from biounet.report_assets import LEGEND, PAGE
from biounet.report_calibration import calibration_html
from biounet.viz import contour_thumbnail, label_colours

# Per-label table rows: metric column, display name, whether larger is better, decimals.
METRIC_ROWS = [
    ("dice", "Dice", True, 4),
    ("iou", "IoU", True, 4),
    ("precision", "precision", True, 4),
    ("recall", "recall", True, 4),
    ("hd95", "HD95 (px)", False, 2),
    ("asd", "ASD (px)", False, 2),
]
RANKS = ("best", "median", "worst")
log = logging.getLogger(__name__)


def write_report(
    path: Path,
    title: str,
    config: dict[str, Any],
    eval_dir: Path | None = None,
    run_dir: Path | None = None,
    note: str = "",
    numbers: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` from an evaluation folder (per_image.csv, cases/) and/or a run folder
    (curves.png, metrics.csv); ``config`` and ``numbers`` (dataset-level results such as vCDR
    errors) are shown as flat key/value tables."""
    sections = []
    if eval_dir is not None:
        rows = read_csv(eval_dir / "per_image.csv")
        measures = read_csv(eval_dir / "per_image_measures.csv")
        more = config_table(numbers) if numbers else ""
        sections += [
            ("metrics", "Metrics per label", label_table(rows) + more),
            ("cases", "Best, median and worst images", cases_html(eval_dir / "cases")),
        ]
        if (eval_dir / "calibration.json").is_file():
            html = calibration_html(eval_dir)
            sections.append(("calibration", "Calibration and uncertainty", html))
        sections.append(
            ("images", "Per image (click a column to sort)", image_table(rows, measures))
        )
    if run_dir is not None and (run_dir / "curves.png").is_file():
        sections.append(("curves", "Training curves", curves_html(run_dir)))
    sections.append(("config", "Configuration", config_table(config)))
    nav = " · ".join(f'<a href="#{k}">{escape(h)}</a>' for k, h, _ in sections)
    body = "\n".join(
        f'<section id="{k}"><h2>{escape(h)}</h2>\n{html}</section>' for k, h, html in sections
    )
    page = PAGE.substitute(
        title=escape(title),
        meta=escape(f"biounet {__version__}") + (f" · {escape(note)}" if note else ""),
        nav=nav,
        body=body,
    )
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def num(v: str | float | None) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def fmt(v: float, decimals: int) -> str:
    if math.isnan(v):
        return "–"
    return "∞" if math.isinf(v) else f"{v:.{decimals}f}"


def cell(v: float, decimals: int) -> str:
    """A numeric table cell; ``data-v`` keeps the exact value for sorting (Infinity/NaN parse in JS)."""
    key = "NaN" if math.isnan(v) else ("Infinity" if v == math.inf else repr(v))
    return f'<td class="num" data-v="{key}">{fmt(v, decimals)}</td>'


def label_table(rows: list[dict[str, str]]) -> str:
    """Mean, std, median over the finite values (as summary.json) and the worst image, per label."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    head = (
        "<tr><th>label</th><th>metric</th><th>mean</th><th>95 % CI of the mean</th><th>std</th>"
        "<th>median</th><th>worst (image)</th><th>n</th></tr>"
    )
    out = []
    for lb in labels:
        mine = [r for r in rows if r["label"] == lb]
        for key, name, higher, dec in METRIC_ROWS:
            if key not in mine[0]:
                continue
            vals = np.array([num(r[key]) for r in mine])
            finite = vals[np.isfinite(vals)]
            worst = int(np.nanargmin(vals) if higher else np.nanargmax(vals))
            stats = (
                [finite.mean(), finite.std(), np.median(finite)] if finite.size else [math.nan] * 3
            )
            lo, hi = bootstrap_ci(finite)
            ci = f'<td class="num">{fmt(lo, dec)} - {fmt(hi, dec)}</td>'
            out.append(
                f"<tr><td>{escape(lb)}</td><td>{escape(name)}</td>{cell(float(stats[0]), dec)}{ci}"
                + "".join(cell(float(s), dec) for s in stats[1:])
                + f'<td class="num">{fmt(vals[worst], dec)} ({escape(mine[worst]["stem"])})</td>'
                f'<td class="num">{finite.size}</td></tr>'
            )
    note = (
        '<p class="note">Per image, at each mask\'s own resolution; std is the population std; '
        "the confidence interval is a bootstrap over the images (2000 resamplings): how far the "
        "mean could move on another set of images like these. "
        "HD95 and ASD are infinite where a mask is empty: such images count in “worst” but not "
        "in mean, std, median and n.</p>"
    )
    return f'<table class="stats">{head}\n' + "\n".join(out) + "</table>" + note


def image_table(rows: list[dict[str, str]], measures: list[dict[str, str]]) -> str:
    """One row per image: mean Dice, then Dice, IoU and HD95 per label, then fundus measures."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    by_stem: dict[str, dict[str, dict[str, str]]] = {}
    for r in rows:
        by_stem.setdefault(r["stem"], {})[r["label"]] = r
    extra = {m["stem"]: m for m in measures}
    names = {"vcdr": "vCDR", "vcdr_true_masks": "vCDR (true masks)", "uncertainty": "uncertainty"}
    mcols = [k for k in names if measures and k in measures[0]]
    cols = [("n", "#"), ("stem", "image"), ("dice_mean", "Dice mean")]
    cols += [
        (f"{m}_{lb}", f"{name} {lb}")
        for m, name in [("dice", "Dice"), ("iou", "IoU"), ("hd95", "HD95")]
        for lb in labels
    ]
    cols += [(k, names[k]) for k in mcols]
    head = "".join(f'<th data-key="{escape(k)}" title="sort">{escape(h)}</th>' for k, h in cols)
    body = []
    for i, (stem, per) in enumerate(by_stem.items(), 1):
        dice = [num(per[lb]["dice"]) for lb in labels if lb in per]
        tds = [cell(i, 0), f"<td>{escape(stem)}</td>", cell(float(np.mean(dice)), 4)]
        for m, dec in (("dice", 4), ("iou", 4), ("hd95", 2)):
            tds += [cell(num(per.get(lb, {}).get(m)), dec) for lb in labels]
        tds += [cell(num(extra.get(stem, {}).get(k)), 3) for k in mcols]
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<table class="sortable" id="per-image"><thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def cases_html(folder: Path) -> str:
    path = folder / "cases.json"
    if not path.is_file():
        return '<p class="note">No thumbnails (cases/cases.json missing).</p>'
    cases = json.loads(path.read_text())
    labels = list(cases[0]["dice"]) if cases else []
    swatches = "".join(
        f'<span class="sw" style="background:rgb{c}"></span>prediction {escape(lb)} '
        for lb, c in label_colours(labels).items()
    )
    figs = []
    for c in cases:
        scores = ", ".join(f"{escape(lb)} {d:.3f}" for lb, d in c["dice"].items())
        uri = png_uri((folder / c["file"]).read_bytes())
        figs.append(
            f'<figure><img src="{uri}" alt="{escape(c["rank"])}: {escape(c["stem"])}">'
            f"<figcaption><b>{escape(c['rank'])}</b>: {escape(c['stem'])}<br>Dice {scores}"
            "</figcaption></figure>"
        )
    return LEGEND.substitute(swatches=swatches) + '<div class="cases">' + "".join(figs) + "</div>"


def curves_html(run_dir: Path) -> str:
    uri = png_uri((run_dir / "curves.png").read_bytes())
    html = f'<img class="curves" src="{uri}" alt="training curves">'
    epochs = read_csv(run_dir / "metrics.csv")
    if epochs and "val_dice_mean" in epochs[0]:
        best = max(epochs, key=lambda r: num(r["val_dice_mean"]))
        dice = ", ".join(
            f"{escape(k[9:])} {num(v):.4f}"
            for k, v in best.items()
            if k.startswith("val_dice_") and k != "val_dice_mean"
        )
        secs = sum(num(r.get("seconds")) for r in epochs)
        html += (
            f'<p class="note">{len(epochs)} epochs in {secs:.0f} s; best epoch {escape(best["epoch"])} '
            f"(best.pt): validation Dice {dice} at the network's resolution.</p>"
        )
    return html


def flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def config_table(config: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in flatten(config)
    )
    return f'<table class="config">{rows}</table>'


def save_cases(
    out_dir: Path,
    pred: Any,
    samples: list[Sample],
    labels: tuple[str, ...],
    invert: tuple[str, ...],
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Thumbnails of the best, median and worst images by mean Dice over the labels: writes
    ``out_dir/cases/{best,median,worst}.png`` and ``cases.json``. ``rows`` are evaluate's per-image
    rows; the three images are predicted again (cheaper than keeping every prediction)."""
    dice: dict[str, dict[str, float]] = {}
    for r in rows:
        dice.setdefault(r["stem"], {})[r["label"]] = float(r["dice"])
    order = sorted(dice, key=lambda s: -float(np.mean(list(dice[s].values()))))  # stable
    picks = dict(zip(RANKS, (order[0], order[len(order) // 2], order[-1]), strict=True))
    by_stem = {s.stem: s for s in samples}
    folder = Path(out_dir) / "cases"
    folder.mkdir(parents=True, exist_ok=True)
    thumbs: dict[str, np.ndarray] = {}
    cases = []
    for rank, stem in picks.items():
        if stem not in thumbs:
            s = by_stem[stem]
            img = read_image(s.image)
            target = load_masks(s, labels, invert, img.shape[:2])
            truth = {lb: target[i] > 0 for i, lb in enumerate(labels)}
            thumbs[stem] = contour_thumbnail(img, truth, pred.predict(img).masks)
        save_png(folder / f"{rank}.png", thumbs[stem])
        cases.append({"rank": rank, "stem": stem, "file": f"{rank}.png", "dice": dice[stem]})
    (folder / "cases.json").write_text(json.dumps(cases, indent=1))
    return cases


def write_evaluation_report(
    out_dir: Path, summary: dict[str, Any], train_config: dict[str, Any], checkpoint: Path
) -> Path:
    """``out_dir/report.html`` of ``evaluate``; with the training curves when the checkpoint sits in
    its run folder."""
    settings = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    config = {"evaluation": settings, "training": train_config or "not recorded in the checkpoint"}
    numbers = {
        k: v
        for k, v in summary.items()
        if isinstance(v, dict) and k not in ("labels", "calibration", "uncertainty")  # own section
    }
    run_dir = checkpoint.parent if (checkpoint.parent / "curves.png").is_file() else None
    title = f"biounet evaluation: {checkpoint.name} on {Path(summary['data']).name}"
    from biounet.evaluate import threshold_text

    note = f"split {summary['split']}, {summary['n_images']} images, {threshold_text(summary)}"
    return write_report(out_dir / "report.html", title, config, out_dir, run_dir, note, numbers)


def write_run_report(run_dir: Path, cfg: RunConfig) -> Path | None:
    """A training run's report.html: best.pt evaluated on the run's validation images (into
    ``run_dir/val``) at each mask's own resolution, the curves and the configuration."""
    from biounet.evaluate import evaluate_checkpoint
    from biounet.predictor import PredictOptions
    from biounet.train_data import split_samples

    if not (run_dir / "best.pt").is_file():  # no epoch had a finite validation Dice
        log.warning("%s: no best.pt, so no report.html", run_dir)
        return None
    from biounet.data.sources import is_spec

    if is_spec(cfg.data.root):  # evaluate reads one folder; run it per dataset instead
        log.info("%s: trained on a dataset list, so no report.html", run_dir)
        return None
    _, val, _ = split_samples(cfg)
    evaluate_checkpoint(
        run_dir / "best.pt",
        Path(cfg.data.root),
        "all",
        run_dir / "val",
        PredictOptions(precision=cfg.train.precision, threshold=cfg.train.threshold),
        stems=[s.stem for s in val],
        report=False,
    )
    note = f"{len(val)} validation images (held out of the training split), scored with best.pt"
    return write_report(
        run_dir / "report.html",
        f"biounet training run: {run_dir.name}",
        cfg.to_dict(),
        eval_dir=run_dir / "val",
        run_dir=run_dir,
        note=note,
    )
