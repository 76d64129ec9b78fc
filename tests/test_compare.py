"""``biounet compare``: paired per-image differences of two evaluate folders, hand-made tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from biounet.cli import main
from biounet.compare import compare_evaluations, paired_stats
from biounet.errors import BiounetError
from biounet.metrics import bootstrap_ci


def eval_folder(path: Path, dice: dict[str, list[float]], hd95: list[float] | None = None) -> Path:
    """An evaluate-like folder: per_image.csv with one row per image (i0, i1, ...) and label."""
    path.mkdir(parents=True)
    with open(path / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["stem", "label", "dice", "hd95"])
        w.writeheader()
        for lb, values in dice.items():
            for i, v in enumerate(values):
                h = hd95[i] if hd95 is not None else 1.0
                w.writerow({"stem": f"i{i}", "label": lb, "dice": v, "hd95": h})
    return path


def test_paired_stats_by_hand() -> None:
    # B beats A by 0.02 on every image: the interval is the single value 0.02
    a = np.array([0.80, 0.60, 0.90, 0.70])
    s = paired_stats(a, a + 0.02, higher=True)
    assert s["diff_mean"] == pytest.approx(0.02)
    assert s["diff_ci95"] == pytest.approx([0.02, 0.02])
    assert (s["b_wins"], s["a_wins"], s["ties"]) == (4, 0, 0)
    assert s["verdict"].startswith("B better")
    # lower is better (HD95): B larger everywhere -> A better
    s = paired_stats(np.array([2.0, 3.0]), np.array([4.0, 5.0]), higher=False)
    assert (s["b_wins"], s["a_wins"]) == (0, 2) and s["verdict"].startswith("A better")


def test_pairing_finds_a_small_consistent_gain_that_the_means_hide() -> None:
    """Images of very different difficulty, B a little better on each: the two means' own
    intervals overlap widely, the paired interval of the differences does not include 0."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.3, 0.95, 40)
    b = a + rng.uniform(0.005, 0.015, 40)
    ahi, blo = bootstrap_ci(a)[1], bootstrap_ci(b)[0]
    assert blo < ahi  # unpaired: the intervals overlap
    s = paired_stats(a, b, higher=True)
    assert s["diff_ci95"][0] > 0 and s["verdict"].startswith("B better")


def test_no_clear_difference_when_wins_split() -> None:
    a = np.array([0.8, 0.7, 0.9, 0.6, 0.85, 0.75])
    b = a + np.array([0.05, -0.05, 0.04, -0.04, 0.01, -0.01])
    s = paired_stats(a, b, higher=True)
    assert s["diff_ci95"][0] < 0 < s["diff_ci95"][1]
    assert s["verdict"].startswith("no clear difference") and s["b_wins"] == s["a_wins"] == 3


def test_compare_folders_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = eval_folder(tmp_path / "a", {"disc": [0.9, 0.8, 0.7], "cup": [0.5, 0.6, 0.7]})
    b = eval_folder(
        tmp_path / "b", {"disc": [0.92, 0.82, 0.72], "cup": [0.5, 0.6, 0.7]}, [1.0, 2.0, np.inf]
    )
    c = compare_evaluations(a, b)
    assert c["labels"]["disc"]["diff_mean"] == pytest.approx(0.02)
    assert c["labels"]["cup"]["ties"] == 3 and c["labels"]["cup"]["verdict"].startswith("no clear")
    # an infinite HD95 (an empty mask) is left out of the pairs and counted
    h = compare_evaluations(a, b, "hd95")["labels"]["disc"]
    assert (h["n"], h["n_not_finite"]) == (2, 1) and h["diff_mean"] == pytest.approx(0.5)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "disc" in out and "+0.0200" in out and "B better" in out
    assert json.loads((tmp_path / "c.json").read_text())["labels"]["disc"]["b_wins"] == 3


def test_compare_refuses_other_images_and_bad_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = eval_folder(tmp_path / "a", {"disc": [0.9, 0.8, 0.7]})
    b = eval_folder(tmp_path / "b", {"disc": [0.9, 0.8]})
    with pytest.raises(BiounetError, match="only in the first: i2; only in the second: -"):
        compare_evaluations(a, b)
    with pytest.raises(BiounetError, match="per_image.csv: not found"):
        compare_evaluations(a, tmp_path / "nothing")
    with pytest.raises(BiounetError, match="--metric 'f1'"):
        compare_evaluations(a, a, "f1")
    assert main(["compare", str(a), str(b)]) != 0
    err = capsys.readouterr().err
    assert "same split" in err and "Traceback" not in err


def test_evaluate_table_prints_the_interval_of_the_mean() -> None:
    from biounet.cli_commands import format_summary
    from biounet.metrics import summarize

    rows = [{"stem": f"i{k}", "label": "disc", "dice": v, "iou": v, "precision": v, "recall": v,
             "bce": 0.1} for k, v in enumerate([0.9, 0.8, 0.7])]  # fmt: skip
    s = {"n_images": 3, "split": "test", "threshold": 0.5, "labels": summarize(rows),
         "article_metrics": {"bce": 0.1, "dice_loss_pooled": 0.2, "iou_pooled": 0.7}}  # fmt: skip
    lo, hi = bootstrap_ci([0.9, 0.8, 0.7])
    assert f"Dice 95 % CI of the mean (bootstrap over the images): disc {lo:.4f}-{hi:.4f}" in (
        format_summary(s)
    )


def test_cv_label_stats_carry_the_interval() -> None:
    from biounet.cv import label_stats

    rows = [{"stem": f"i{k}", "label": "cup", "dice": str(v), "iou": str(v / 2)}
            for k, v in enumerate([0.6, 0.8])]  # fmt: skip
    s = label_stats(rows)["cup"]
    assert (s["dice_ci95_low"], s["dice_ci95_high"]) == bootstrap_ci([0.6, 0.8])
    assert 0.6 <= s["dice_ci95_low"] <= s["dice_ci95_high"] <= 0.8
