"""Calibration and ranking maths against hand-computed values: ECE with 15 bins, AUROC with ties,
Spearman, and the uncertainty-vs-Dice summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biounet.calibration import (
    ReliabilityBins,
    auroc,
    bin_sums,
    ece_from_sums,
    score_vs_dice,
    spearman,
)


def test_bins_and_ece_by_hand() -> None:
    # 0.05 -> bin 0 (0.75), 0.95 -> bin 14 (14.25), 0.5 -> bin 7 (7.5), 1.0 -> bin 14 (closed end)
    prob = np.array([0.05, 0.05, 0.95, 0.95, 0.5, 1.0])
    target = np.array([0, 1, 1, 1, 0, 1])
    count, prob_sum, pos = bin_sums(prob, target)
    assert count.tolist() == [2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3]
    assert prob_sum[[0, 7, 14]] == pytest.approx([0.1, 0.5, 2.9])
    assert pos[[0, 7, 14]].tolist() == [1, 0, 3]
    # |1 - 0.1| + |0 - 0.5| + |3 - 2.9| over 6 pixels
    assert ece_from_sums(count, prob_sum, pos) == pytest.approx(1.5 / 6)


def test_calibrated_probabilities_have_zero_ece() -> None:
    prob = np.full((2, 2), 0.25)  # a quarter of the pixels in the mask, predicted 0.25
    target = np.array([[1, 0], [0, 0]])
    assert ece_from_sums(*bin_sums(prob, target)) == pytest.approx(0.0)


def test_accumulator_pools_pixels_of_images_of_different_sizes() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 5, 7)), rng.random((2, 3, 4))
    ta, tb = rng.random((2, 5, 7)) > 0.5, rng.random((2, 3, 4)) > 0.5
    acc = ReliabilityBins(("disc", "cup"))
    acc.add(a, ta)
    acc.add(b, tb)
    for i, lb in enumerate(("disc", "cup")):
        pooled = np.concatenate([a[i].ravel(), b[i].ravel()])
        truth = np.concatenate([ta[i].ravel(), tb[i].ravel()])
        assert acc.ece()[lb] == pytest.approx(ece_from_sums(*bin_sums(pooled, truth)))
    t = acc.table()["cup"]
    assert sum(t["count"]) == 35 + 12 and len(t["confidence"]) == 15
    for k, n in enumerate(t["count"]):
        if n:
            assert k / 15 <= t["confidence"][k] <= (k + 1) / 15
        else:
            assert t["confidence"][k] is None and t["accuracy"][k] is None


def test_empty_accumulator_and_bad_shapes() -> None:
    assert math.isnan(ReliabilityBins(("a",)).ece()["a"])
    with pytest.raises(ValueError, match="labels"):
        ReliabilityBins(("a",)).add(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="shape"):
        bin_sums(np.zeros((3, 3)), np.zeros((3, 4)))


def test_auroc_by_hand() -> None:
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([3, 2, 1], [True, False, False]) == 1.0
    assert auroc([3, 2, 1], [False, True, True]) == 0.0


def test_auroc_ties_count_one_half() -> None:
    # pairs (pos 1 vs neg 1): tie = 0.5; (pos 2 vs neg 1): 1 -> 1.5 / 2
    assert auroc([1, 1, 2], [True, False, True]) == pytest.approx(0.75)
    assert auroc([5, 5, 5, 5], [True, False, True, False]) == pytest.approx(0.5)


def test_auroc_is_none_when_a_class_is_empty() -> None:
    assert auroc([0.1, 0.2], [False, False]) is None
    assert auroc([0.1, 0.2], [True, True]) is None
    with pytest.raises(ValueError, match="positives"):
        auroc([0.1, 0.2], [True])


def test_spearman_by_hand() -> None:
    # rank differences 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [9, 5, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, float("nan"), 4, 5], [2, 4, 0, 8, 10]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [1, 2]) is None


def test_score_vs_dice_summary() -> None:
    scores = {
        "a": {"uncertainty": 0.1, "uncertainty_disc": 0.1, "uncertainty_cup": 0.2},
        "b": {"uncertainty": 0.3, "uncertainty_disc": 0.2, "uncertainty_cup": 0.5},
        "c": {"uncertainty": 0.2, "uncertainty_disc": 0.3, "uncertainty_cup": 0.1},
    }
    dice = {
        "a": {"disc": 0.95, "cup": 0.90},  # mean 0.925
        "b": {"disc": 0.90, "cup": 0.50},  # mean 0.70: below 0.8
        "c": {"disc": 0.85, "cup": 0.75},  # mean 0.80: not below
    }
    s = score_vs_dice(scores, dice, ("disc", "cup"))
    assert s["mean_over_labels"]["n_below"] == 1
    assert s["mean_over_labels"]["auroc"] == 1.0  # b scores highest
    # score ranks a, b, c = 1, 3, 2; Dice ranks 3, 1, 2: rho = 1 - 6 * 8 / (3 * 8) = -1
    assert s["mean_over_labels"]["spearman_vs_dice"] == pytest.approx(-1.0)
    assert s["disc"]["n_below"] == 0 and s["disc"]["auroc"] is None
    assert s["disc"]["spearman_vs_dice"] == pytest.approx(-1.0)
    # cup: below are b (0.5) and c (0.1); a (0.2) is not: pairs b>a yes, c>a no -> 0.5
    assert s["cup"]["n_below"] == 2 and s["cup"]["auroc"] == pytest.approx(0.5)
    # score ranks 2, 3, 1; Dice ranks 3, 1, 2: rho = 1 - 6 * 6 / (3 * 8) = -0.5
    assert s["cup"]["spearman_vs_dice"] == pytest.approx(-0.5)
    assert s["cup"]["score"] == "uncertainty_cup"
