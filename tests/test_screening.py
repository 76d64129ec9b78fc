"""Glaucoma screening statistics from vCDR, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from biounet.fundus.screening import referral_stats, roc_auc


def test_roc_auc_counts_ordered_pairs_and_half_ties() -> None:
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([0.5, 0.5], [False, True]) == 0.5
    assert roc_auc([0.1, 0.2], [True, True]) is None


def test_referral_stats_by_hand() -> None:
    rows = [
        {"stem": "n1", "vcdr": "0.40", "vcdr_true_masks": "0.35"},
        {"stem": "n2", "vcdr": "0.65", "vcdr_true_masks": "0.45"},
        {"stem": "g1", "vcdr": "0.70", "vcdr_true_masks": "0.75"},
        {"stem": "g2", "vcdr": "nan", "vcdr_true_masks": "0.55"},  # no disc found: refer
        {"stem": "x", "vcdr": "0.5", "vcdr_true_masks": "0.5"},  # no label: skipped
    ]
    diag = {"n1": "normal", "n2": "normal", "g1": "glaucoma", "g2": "glaucoma"}
    s = referral_stats(rows, diag)
    assert (s["n_normal"], s["n_glaucoma"]) == (2, 2)
    assert s["vcdr_bias_normal"] == pytest.approx((0.05 + 0.20) / 2)
    assert s["vcdr_bias_glaucoma"] == pytest.approx(-0.05)  # the NaN row is left out
    assert s["spec_at_vcdr06"] == 0.5 and s["sens_at_vcdr06"] == 1.0
    # predicted scores: normal 0.40, 0.65; glaucoma 0.70, 1.0 (NaN counts as referred) -> AUC 1
    assert s["vcdr_auc"] == 1.0
    assert s["truth_spec_at_vcdr06"] == 1.0 and s["truth_sens_at_vcdr06"] == 0.5
    assert s["truth_vcdr_auc"] == 1.0


def test_referral_stats_without_labels_are_none() -> None:
    s = referral_stats([{"stem": "a", "vcdr": 0.3, "vcdr_true_masks": 0.3}], {})
    assert s["vcdr_auc"] is None and s["n_glaucoma"] == 0
    assert all(v is None or isinstance(v, int) for v in s.values())
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())
