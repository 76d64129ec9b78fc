"""benchmarks/drive_vessels.py's scoring inside the field of view and its page, on hand-made maps."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import drive_vessels as dv
finally:
    sys.path.remove(str(BENCH))


def test_fov_scores_pool_field_of_view_pixels_only() -> None:
    """Image 1: fov = left half; inside it prob 0.9 on the 2 vessel pixels and on 1 background
    pixel, 0.1 elsewhere; outside it every pixel predicted vessel (ignored). Image 2: all in the
    field of view, its 1 vessel pixel missed. Pooled inside: tp 2, fp 1, fn 1, tn 4."""
    t1 = np.zeros((2, 4), bool)
    t1[0, 0] = t1[1, 0] = True
    p1 = np.full((2, 4), 0.1)
    p1[0, 0] = p1[1, 0] = p1[0, 1] = 0.9
    p1[:, 2:] = 0.95  # outside the field of view
    f1 = np.zeros((2, 4), bool)
    f1[:, :2] = True
    t2 = np.array([[True, False], [False, False]])
    p2 = np.full((2, 2), 0.2)
    f2 = np.ones((2, 2), bool)
    s = dv.fov_scores([p1, p2], [t1, t2], [f1, f2])
    # inside: 8 pixels; vessels 3 (2 found, 1 missed), background 5 (1 false positive)
    assert s["pixels"] == 8
    assert s["sensitivity"] == pytest.approx(2 / 3)
    assert s["specificity"] == pytest.approx(4 / 5)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["f1"] == pytest.approx(4 / 6)
    assert s["f1_per_image_mean"] == pytest.approx((4 / 5 + 0.0) / 2)
    # AUC over the field of view's pixels: vessels 0.9, 0.9, 0.2; background 0.9, 0.1, 0.2 x 3
    neg = np.array([0.9, 0.1, 0.2, 0.2, 0.2])
    pos = np.array([0.9, 0.9, 0.2])
    pairs = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    assert s["auc"] == pytest.approx(pairs / 15)


def variant(val: float, f1: float) -> dict:
    fov = {"accuracy": 0.95, "sensitivity": 0.8, "specificity": 0.97, "f1": f1, "auc": 0.97,
           "f1_per_image_mean": 0.8}  # fmt: skip
    return {
        "commit": "c", "params": 1000, "best_epoch": 9, "n_val": 4, "train_time_s": 60.0,
        "val_dice": val, "settings": {"preset": "small", "image_size": 576, "epochs": 10},
        "test": {"fov": fov, "dice_mean": 0.8, "predict_s_per_image": 0.1, "n_images": 20},
        "test_tta": {"fov": fov, "dice_mean": 0.81, "predict_s_per_image": 0.3, "n_images": 20},
    }  # fmt: skip


def test_the_variant_of_the_best_validation_dice_is_reported() -> None:
    """A results file from before variants is read as the "whole" variant; the variant of the
    higher validation Dice is copied to the top level, whatever its test F1."""
    old = {**variant(0.70, 0.79), "machine": "m"}
    r = dv.merged(old, "patch192", variant(0.72, 0.75))
    assert set(r["variants"]) == {"whole", "patch192"}
    assert r["chosen_by_validation"] == "patch192" and r["test"]["fov"]["f1"] == 0.75
    r2 = dv.merged(r, "patch128", variant(0.60, 0.90))
    assert r2["chosen_by_validation"] == "patch192" and len(r2["variants"]) == 3


def test_page_has_a_row_per_variant_and_the_human_reference() -> None:
    r = dv.merged({}, "whole", variant(0.7, 0.81))
    r |= {"machine": "m", "quick": False, "second_observer": {**variant(0, 0.79)["test"]["fov"],
          "auc": None}}  # fmt: skip
    md = dv.markdown(r)
    assert "| whole (chosen), flip TTA | 0.7000 | 0.9500 | 0.8000 | 0.9700 | 0.8100 |" in md
    assert "| second observer vs first | - | 0.9500 | 0.8000 | 0.9700 | 0.7900 | - |" in md
    assert "whole images at 576 px, 10 epochs" in md and "| whole | 60 | 9 |" in md


def test_page_has_the_cv_ensemble_rows() -> None:
    r = dv.merged({}, "patch192", variant(0.7, 0.81))
    fov = variant(0, 0.805)["test"]["fov"]
    r |= {"machine": "m", "quick": False, "second_observer": {**fov, "auc": None},
          "cv_ensembles": {"patch192": {"commit": "e", "folds": 5, "cv_dice": 0.77,
                                        "test": {"fov": fov, "predict_s_per_image": 0.25,
                                                 "vs_single": {"diff_mean": 0.004, "diff_ci95": [0.001, 0.007],
                                                               "b_wins": 15, "n": 20,
                                                               "verdict": "B better (the interval leaves 0)"}},
                                        "test_tta": {"fov": fov, "predict_s_per_image": 0.75}}}}  # fmt: skip
    md = dv.markdown(r)
    row = "| patch192: 5 CV folds as one ensemble, no TTA | - | 0.9500 | 0.8000 | 0.9700 | 0.8050 |"
    assert row in md
    assert "out-of-fold Dice 0.7700; 0.250 s per test image (0.750 with TTA)" in md
    assert (
        "(no TTA): F1 inside the field of view +0.0040 (95 % paired bootstrap interval +0.0010"
        in md
    )
    assert "better on 15 of 20 images: ensemble better (the interval leaves 0)." in md
