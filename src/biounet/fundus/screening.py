"""Glaucoma screening from the vertical cup-to-disc ratio: ROC AUC of vCDR as a score, and the
sensitivity / specificity of a referral rule "vCDR >= threshold means refer". Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half): the
    area under the ROC curve. None when either class is empty."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def referral_stats(
    rows: Sequence[Mapping[str, str | float]],
    diagnosis: Mapping[str, str],
    threshold: float = 0.6,
) -> dict[str, float | int | None]:
    """rows: per image ``stem``, predicted ``vcdr`` and ``vcdr_true_masks``; diagnosis: stem ->
    "glaucoma" / "normal" (missing stems are skipped). Returns the vCDR bias (predicted - true,
    mean) on normal and on glaucoma eyes, the ROC AUC of predicted vCDR for glaucoma, and for
    "vCDR >= threshold means refer" the specificity on normal and sensitivity on glaucoma eyes,
    for the prediction and, as a reference, for the ground-truth masks' vCDR. All None without
    labels. An image whose predicted vCDR is NaN (no disc found) counts as referred."""
    keys = (
        "vcdr_bias_normal",
        "vcdr_bias_glaucoma",
        "vcdr_auc",
        "spec_at_vcdr06",
        "sens_at_vcdr06",
        "truth_vcdr_auc",
        "truth_spec_at_vcdr06",
        "truth_sens_at_vcdr06",
    )
    lab = [(r, diagnosis[str(r["stem"])]) for r in rows if str(r["stem"]) in diagnosis]
    if not lab:
        return {k: None for k in keys} | {"n_normal": 0, "n_glaucoma": 0}
    pred = np.array([_num(r["vcdr"]) for r, _ in lab])
    true = np.array([_num(r["vcdr_true_masks"]) for r, _ in lab])
    glauc = np.array([d == "glaucoma" for _, d in lab])
    pred_ref = np.where(np.isnan(pred), 1.0, pred)

    def spec_sens(v: np.ndarray) -> tuple[float | None, float | None]:
        refer = v >= threshold
        spec = float((~refer[~glauc]).mean()) if (~glauc).any() else None
        sens = float(refer[glauc].mean()) if glauc.any() else None
        return spec, sens

    def bias(mask: np.ndarray) -> float | None:
        d = (pred - true)[mask]
        d = d[~np.isnan(d)]
        return float(d.mean()) if d.size else None

    spec, sens = spec_sens(pred_ref)
    t_spec, t_sens = spec_sens(true)
    return {
        "n_normal": int((~glauc).sum()),
        "n_glaucoma": int(glauc.sum()),
        "vcdr_bias_normal": bias(~glauc),
        "vcdr_bias_glaucoma": bias(glauc),
        "vcdr_auc": roc_auc(pred_ref, glauc),
        "spec_at_vcdr06": spec,
        "sens_at_vcdr06": sens,
        "truth_vcdr_auc": roc_auc(true, glauc),
        "truth_spec_at_vcdr06": t_spec,
        "truth_sens_at_vcdr06": t_sens,
    }


def _num(v: str | float) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
