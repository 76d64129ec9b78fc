"""The report's "Calibration and uncertainty" section, from an evaluation folder's calibration.json,
reliability.png and (after ``evaluate --uncertainty``) summary.json."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any


def calibration_html(eval_dir: Path) -> str:
    """The reliability diagram, each label's ECE and, where evaluated, the uncertainty table."""
    cal = json.loads((eval_dir / "calibration.json").read_text())
    ece = ", ".join(f"{escape(lb)} {t['ece']:.4f}" for lb, t in cal["labels"].items())
    html = ""
    if (eval_dir / "reliability.png").is_file():
        data = base64.b64encode((eval_dir / "reliability.png").read_bytes()).decode("ascii")
        html = f'<img class="curves" src="data:image/png;base64,{data}" alt="reliability diagram">'
    html += (
        f'<p class="note">Expected calibration error (ECE): {ece}. Per label, the pixels of all '
        f"images pooled (each at its mask's resolution) in {cal['ece_bins']} equal-width bins of "
        "the predicted probability; ECE is the pixel-weighted mean gap between a bin's mean "
        "probability (confidence) and the fraction of its pixels inside the mask (accuracy). "
        "A bar above the diagonal: more of those pixels are in the mask than their probability "
        "says (the structure is under-predicted there); below it: over-predicted.</p>"
    )
    summary_path = eval_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if "uncertainty" in summary:
        html += uncertainty_table(summary["uncertainty"])
    return html


def uncertainty_table(u: dict[str, Any]) -> str:
    """One row per Dice (mean over labels, each label): its score, the images below the level,
    the score's AUROC for finding them and its Spearman correlation with Dice."""

    def num(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    head = (
        "<tr><th>Dice of</th><th>score</th><th>images with Dice &lt; "
        f"{u['dice_below']}</th><th>AUROC</th><th>Spearman (score, Dice)</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{escape(k.replace('_', ' '))}</td><td>{escape(v['score'])}</td>"
        f'<td class="num">{v["n_below"]} of {v["n_images"]}</td>'
        f'<td class="num">{num(v["auroc"])}</td><td class="num">{num(v["spearman_vs_dice"])}</td></tr>'
        for k, v in u.items()
        if isinstance(v, dict)
    )
    note = (
        f'<p class="note">Uncertainty score: {escape(u["score"])}. AUROC: the chance that an image '
        "below the Dice level scores higher than one above it (0.5 = no better than chance; – "
        "where no image or every image is below). A useful score has a high AUROC and a negative "
        "Spearman correlation.</p>"
    )
    return f'<table class="stats">{head}{rows}</table>' + note
