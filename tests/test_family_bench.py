"""The pure parts of benchmarks/family.py (benchmarks/family_stats.py): the Drishti row from a cv
summary, throughput from metrics.csv rows, the paired comparison, the verdict and the markdown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import family_stats as fs
finally:
    sys.path.remove(str(BENCH))


def cv_summary(fold_dice: list[tuple[float, float]], n: list[int]) -> dict[str, Any]:
    """A cv_summary.json as biounet.cv.summarize writes it; per fold (disc, cup) Dice, IoU = Dice/2."""
    tot = sum(n)
    mean = [sum(d[i] * w for d, w in zip(fold_dice, n, strict=True)) / tot for i in (0, 1)]
    return {
        "folds": len(n),
        "n_images": tot,
        "labels": {
            lb: {"dice_mean": mean[i], "dice_std": 0.1, "iou_mean": mean[i] / 2, "iou_std": 0.05}
            for i, lb in enumerate(("disc", "cup"))
        },
        "between_folds": {"disc": {"dice_std": 0.01}, "cup": {"dice_std": 0.02}},
        "per_fold": [
            {
                "fold": k,
                "best_epoch": 3,
                "n_images": w,
                "labels": {"disc": {"dice": d[0]}, "cup": {"dice": d[1]}},
            }
            for k, (d, w) in enumerate(zip(fold_dice, n, strict=True))
        ],
    }


def test_drishti_entry_means_over_labels_and_folds() -> None:
    e = fs.drishti_entry(cv_summary([(0.9, 0.7), (0.8, 0.6)], [3, 1]))
    assert e["disc"]["dice_mean"] == pytest.approx(0.875)  # (3 * 0.9 + 0.8) / 4
    assert e["cup"]["dice_between_folds_std"] == 0.02
    assert e["mean_dice"] == pytest.approx((0.875 + 0.675) / 2)
    assert [f["mean_dice"] for f in e["per_fold"]] == pytest.approx([0.8, 0.7])
    assert e["n_images"] == 4 and e["folds"] == 2


@pytest.mark.parametrize(("n", "bs", "seen"), [(27, 8, 27), (25, 8, 24), (1, 8, 1), (20, 4, 20)])
def test_images_per_epoch_drops_a_last_batch_of_one(n: int, bs: int, seen: int) -> None:
    assert fs.images_per_epoch(n, bs) == seen


def test_run_throughput() -> None:
    rows = [{"seconds": "2.0"}, {"seconds": "3.0"}]
    r = fs.run_throughput(rows, 25, 8)  # 24 images per epoch
    assert r == {"epochs": 2, "seconds": 5.0, "img_s": pytest.approx(48 / 5)}


def test_compare_needs_every_unit_and_a_gain_above_the_spread() -> None:
    base = [0.80, 0.82, 0.84]  # population std 0.01633
    assert fs.compare(base, [0.85, 0.87, 0.89])["outcome"] == "better"
    assert (
        fs.compare(base, [0.81, 0.83, 0.85])["outcome"] == "no clear difference"
    )  # +0.01 < spread
    assert (
        fs.compare(base, [0.90, 0.95, 0.83])["outcome"] == "no clear difference"
    )  # one fold worse
    worse = fs.compare(base, [0.70, 0.72, 0.74])
    assert worse["outcome"] == "worse"
    assert worse["mean_delta"] == pytest.approx(-0.10)
    assert worse["spread"] == pytest.approx(0.016330, abs=1e-6)
    assert fs.compare([0.1, 0.2], [0.05, 0.1], higher_is_better=False)["outcome"] == "better"
    with pytest.raises(ValueError, match="paired"):
        fs.compare([0.1], [0.1, 0.2])


def isbi_entry(v: list[float]) -> dict[str, Any]:
    return {
        "v_rand_thinned": sum(v) / len(v),
        "per_slice": {f"{25 + i}": {"v_rand_thinned": x} for i, x in enumerate(v)},
    }


def test_verdict_names_the_winner_and_what_pays_off() -> None:
    drishti = {
        "small": fs.drishti_entry(cv_summary([(0.90, 0.70), (0.92, 0.72)], [2, 2])),
        "unetpp_small": fs.drishti_entry(cv_summary([(0.95, 0.80), (0.96, 0.82)], [2, 2])),
    }
    isbi = {"small": isbi_entry([0.9, 0.8]), "unetpp_small": isbi_entry([0.9, 0.8])}
    speed = {
        "small": {"parameters": 100, "train_img_s": 10.0, "infer_img_s_b1": 40.0},
        "unetpp_small": {"parameters": 150, "train_img_s": 5.0, "infer_img_s_b1": 20.0},
    }
    v = fs.verdict(drishti, isbi, speed, {"v_rand_thinned": 0.85})
    assert "highest mean Dice (disc, cup) unetpp_small" in v
    assert "drishti +0.0725 (every fold: +0.075, +0.070" in v and "-> better" in v
    assert "isbi2012 +0.0000" in v and "-> no clear difference" in v
    assert "1.50x the parameters, 0.50x the training" in v
    assert (
        "Pays off (every unit better and the mean gain above the U-Net's spread): unetpp_small on drishti."
        in v
    )
    assert "V-Rand (thinned) 0.8500" in v
    assert "nowhere" in fs.verdict({}, {"small": isbi["small"]}, {})


def test_markdown_has_a_row_per_model() -> None:
    drishti = {"small": fs.drishti_entry(cv_summary([(0.9, 0.7), (0.9, 0.7)], [2, 2]))}
    drishti["small"] |= {"epochs_per_fold": [4, 5], "train_img_s_in_runs": 7.5}
    em = {k: 0.5 for k in (*fs.EM_KEYS, "membrane_threshold")} | {"epochs": 3}
    settings = {"lr": 2e-3, "lr_schedule": "constant", "seed": 0, "precision": "auto"}
    settings |= {"val_fraction": 0.2, "folds": 2, "drishti_size": 256, "drishti_batch": 8}
    settings |= {
        "minutes": 1.5,
        "isbi_size": 512,
        "isbi_batch": 4,
        "isbi_minutes": 1.5,
        "speed_size": 256,
    }
    md = fs.markdown(
        {
            "settings": settings,
            "drishti_cv": drishti,
            "isbi2012": {"small": em},
            "isbi2012_paper_unet": em | {"note": "other protocol"},
            "speed_memory": {"small": {"parameters": 1940834, "train_img_s": 9.0}},
            "verdict": "the verdict",
        }
    )
    assert (
        "| small | 0.9000 ± 0.100 | 0.7000 ± 0.100 | 0.4500 | 0.3500 | 0.800 / 0.800 | 4 / 5 | 7.5 |"
        in md
    )
    assert "| small | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.50 | 3 | n/a |" in md
    assert "| model | V-Rand thinned | V-Info thinned | V-Rand |" in md
    assert "| paper_valid_small * |" in md and "\\* other protocol" in md
    assert "| small | 1,940,834 | 9.0 | n/a | n/a | n/a | n/a / n/a |" in md
    assert "2-fold cross-validation on 4 training images" in md
    assert "## Cost (3 in, 2 out, 256 px" in md
    assert md.rstrip().endswith("the verdict")
