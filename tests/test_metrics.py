"""Metrics per image and label against hand-computed values, and their dataset summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biounet.metrics import METRICS, bce, binary_scores, image_metrics, summarize

PRED = np.array([[1, 1], [0, 0]])
TARGET = np.array([[1, 0], [1, 0]])  # tp = 1, fp = 1, fn = 1, tn = 1


def test_binary_scores_hand_example() -> None:
    s = binary_scores(PRED, TARGET)
    assert s["dice"] == pytest.approx(0.5)  # 2*1 / (2*1 + 1 + 1)
    assert s["iou"] == pytest.approx(1 / 3)  # 1 / (1 + 1 + 1)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)


def test_binary_scores_asymmetric_example() -> None:
    pred = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    target = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)  # tp 3, fp 1, fn 1
    s = binary_scores(pred, target)
    assert s == pytest.approx({"dice": 6 / 8, "iou": 3 / 5, "precision": 3 / 4, "recall": 3 / 4})
    s = binary_scores(pred, np.array([1, 0, 0, 0, 0, 0, 0, 0]))  # tp 1, fp 3, fn 0
    assert s == pytest.approx({"dice": 2 / 5, "iou": 1 / 4, "precision": 1 / 4, "recall": 1.0})


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        # both empty: a perfect answer, never NaN
        (0, 0, {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}),
        # nothing predicted, something missed: precision 0 (module docstring), recall 0
        (0, 1, {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0}),
        # something predicted on an empty target: all false positives
        (1, 0, {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0}),
        (1, 1, {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}),
    ],
)
def test_empty_mask_conventions(pred: int, target: int, expected: dict) -> None:
    s = binary_scores(np.full((3, 4), pred), np.full((3, 4), target))
    assert s == expected


def test_bce_hand_values() -> None:
    assert bce(np.full((4, 4), 0.5), np.zeros((4, 4))) == pytest.approx(math.log(2))
    expected = -(math.log(0.9) + math.log(0.8)) / 2
    assert bce(np.array([0.9, 0.2]), np.array([1, 0])) == pytest.approx(expected)


def test_bce_is_finite_on_certain_wrong_answers() -> None:
    # probabilities are clipped to [1e-7, 1 - 1e-7]
    assert bce(np.array([0.0]), np.array([1])) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert bce(np.array([1.0, 0.0]), np.array([1, 0])) == pytest.approx(0.0, abs=1e-6)


def test_image_metrics_rows_per_label() -> None:
    prob = np.stack([PRED * 0.9, np.full((2, 2), 0.5)])  # label b: 0.5 is not above 0.5
    target = np.stack([TARGET, np.ones((2, 2))]).astype(np.uint8)
    rows = image_metrics(prob, target, ("a", "b"), threshold=0.5)
    assert [r["label"] for r in rows] == ["a", "b"]
    assert set(rows[0]) == {"label", *METRICS}
    assert rows[0]["dice"] == pytest.approx(0.5)
    # pixels (p, t): (0.9, 1), (0.9, 0), (0 -> 1e-7, 1), (0 -> 1e-7, 0)
    assert rows[0]["bce"] == pytest.approx(
        -(math.log(0.9) + math.log(0.1) + math.log(1e-7) + math.log(1 - 1e-7)) / 4, rel=1e-6
    )
    assert rows[1]["dice"] == 0.0 and rows[1]["recall"] == 0.0
    assert rows[1]["bce"] == pytest.approx(math.log(2))
    # a lower threshold makes 0.5 a prediction
    assert image_metrics(prob, target, ("a", "b"), threshold=0.4)[1]["dice"] == 1.0


def test_image_metrics_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 2, 2\).*\(2, 2, 2\)"):
        image_metrics(np.zeros((1, 2, 2)), np.zeros((2, 2, 2)), ("a",))


def test_summarize_mean_std_median_min_per_label() -> None:
    rows = [
        {"stem": "x", "label": "disc", "dice": 0.2, "iou": 0.1},
        {"stem": "y", "label": "disc", "dice": 0.4, "iou": 0.3},
        {"stem": "z", "label": "disc", "dice": 0.9, "iou": 0.5},
        {"stem": "x", "label": "cup", "dice": 1.0, "iou": 1.0},
    ]
    s = summarize(rows)
    assert set(s) == {"disc", "cup"}
    d = s["disc"]
    assert d["dice_mean"] == pytest.approx(0.5)
    # population std: sqrt((0.3^2 + 0.1^2 + 0.4^2) / 3)
    assert d["dice_std"] == pytest.approx(math.sqrt(0.26 / 3))
    assert d["dice_median"] == pytest.approx(0.4)
    assert d["dice_min"] == pytest.approx(0.2)
    assert d["iou_mean"] == pytest.approx(0.3)
    # Dice 0.2, 0.4, 0.9: every resampled mean lies between the smallest and the largest value
    assert 0.2 <= d["dice_ci95_low"] < 0.5 < d["dice_ci95_high"] <= 0.9
    assert s["cup"] == {
        "dice_mean": 1.0, "dice_std": 0.0, "dice_median": 1.0, "dice_min": 1.0,
        "dice_ci95_low": 1.0, "dice_ci95_high": 1.0,
        "iou_mean": 1.0, "iou_std": 0.0, "iou_median": 1.0, "iou_min": 1.0,
        "iou_ci95_low": 1.0, "iou_ci95_high": 1.0,
    }  # fmt: skip


def test_summarize_skips_text_bools_and_non_finite_values() -> None:
    rows = [
        {"label": "a", "stem": "s1", "dice": 0.5, "flag": True},
        {"label": "a", "stem": "s2", "dice": float("nan")},
        {"label": "a", "stem": "s3", "dice": 1.0},
    ]
    s = summarize(rows)["a"]
    assert set(s) == {
        "dice_mean", "dice_std", "dice_median", "dice_min", "dice_ci95_low", "dice_ci95_high"
    }  # fmt: skip
    assert s["dice_mean"] == pytest.approx(0.75)
    assert s["dice_std"] == pytest.approx(0.25)


def test_pixel_auc_hand_computed_and_equal_to_the_pairwise_count() -> None:
    """Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered -> 0.75; a tie
    counts half; a class that is empty gives None; on random scores it is the pairwise count."""
    from biounet.fundus.screening import roc_auc
    from biounet.metrics import pixel_auc

    assert pixel_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert pixel_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert pixel_auc(np.array([0.2, 0.3]), np.array([1, 1])) is None
    rng = np.random.default_rng(0)
    s = rng.integers(0, 20, (30, 40)) / 20  # many ties
    y = rng.random((30, 40)) < 0.3
    assert pixel_auc(s, y) == pytest.approx(roc_auc(s.ravel().tolist(), y.ravel().tolist()))


def test_confusion_scores_hand_computed() -> None:
    """pred 1 1 0 0 1, target 1 0 0 1 1: tp 2, fp 1, fn 1, tn 1."""
    from biounet.metrics import confusion_scores

    c = confusion_scores(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
    assert c == pytest.approx(
        {"accuracy": 0.6, "sensitivity": 2 / 3, "specificity": 0.5, "f1": 2 / 3}
    )
    empty = confusion_scores(np.zeros(4, bool), np.zeros(4, bool))
    assert empty == {"accuracy": 1.0, "sensitivity": 1.0, "specificity": 1.0, "f1": 1.0}


def test_bootstrap_ci_edge_cases_and_determinism() -> None:
    from biounet.metrics import bootstrap_ci

    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([0.8]) == (0.8, 0.8)
    assert bootstrap_ci([0.3] * 10) == pytest.approx((0.3, 0.3))
    v = np.random.default_rng(1).random(30)
    assert bootstrap_ci(v) == bootstrap_ci(v)  # seeded: the same interval every time
    lo, hi = bootstrap_ci(v)
    assert lo < v.mean() < hi
    lo90, hi90 = bootstrap_ci(v, level=0.9)
    assert lo < lo90 < hi90 < hi  # a lower level, a narrower interval


def test_bootstrap_ci_matches_the_normal_interval_on_a_large_sample() -> None:
    """For n values the mean's 95 % interval is about mean -+ 1.96 sd / sqrt(n): with n = 400
    standard normal values, half-width 1.96 * sd / 20 ~ 0.098."""
    from biounet.metrics import bootstrap_ci

    v = np.random.default_rng(0).standard_normal(400)
    lo, hi = bootstrap_ci(v, draws=4000)
    half = 1.96 * v.std() / 20
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(v.mean(), abs=0.02)
