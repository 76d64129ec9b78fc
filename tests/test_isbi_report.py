"""benchmarks/isbi2012_em.py's markdown: every section present in the JSON is rendered, and a
results file holding only the longer runs renders too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import isbi2012_em as isbi
finally:
    sys.path.remove(str(BENCH))

SCORES = {
    "pixel_error": 0.1,
    "rand_error": 0.05,
    "adapted_rand_error": 0.2,
    "v_rand": 0.8,
    "v_info": 0.85,
    "v_rand_thinned": 0.9,
    "v_info_thinned": 0.92,
}


def arm(iters: int, v_rand: float) -> dict:
    return {
        "iterations": iters,
        "loss_first_20": 0.5,
        "loss_last_20": 0.1,
        "membrane_threshold": 0.3,
        "held_out_20_24": {**SCORES, "v_rand": v_rand},
    }


def write(tmp_path: Path, **parts: object) -> str:
    settings = {
        "base_width": 16,
        "parameters": 1940834,
        "minutes_per_run": 4.5,
        "max_iters": 0,
        "out_tile": 260,
        "lr": 1e-3,
        "precision": "fp32",
    }
    doc = {"commit": "abc", "machine": "m", "settings": settings, **parts}
    (tmp_path / "isbi2012_em.json").write_text(json.dumps(doc))
    isbi.report(tmp_path)
    return (tmp_path / "isbi2012_em.md").read_text()


def test_long_runs_section_names_the_chosen_arm_and_its_val_scores(tmp_path: Path) -> None:
    val = {**SCORES, "arm": "neither", "membrane_threshold": 0.4, "v_rand": 0.91}
    long_runs = {
        "minutes_per_run": 20.0,
        "arms": {"weightmap_elastic": arm(4000, 0.88), "neither": arm(4500, 0.9)},
        "val": val,
    }
    md = write(tmp_path, long_runs=long_runs)
    assert "## Longer training (20.0 min per arm)" in md
    assert "| neither | 4500 | 0.500 / 0.100 | 0.30 | off | 0.1000 | 0.9000 | 0.9000 |" in md
    assert "Chosen on 20-24: neither; slices 25-29: V_rand thinned 0.9000" in md
    assert "V_rand 0.9100" in md and "TTA off" in md
    assert "## Val (slices 25-29" not in md  # the short runs' sections are absent, not broken


def test_longer_budgets_get_their_own_sections_in_budget_order(tmp_path: Path) -> None:
    val = {**SCORES, "arm": "neither", "membrane_threshold": 0.4}
    sixty = {"minutes_per_run": 60.0, "arms": {"neither": arm(15000, 0.93)}, "val": val}
    twenty = {"minutes_per_run": 20.0, "arms": {"neither": arm(4500, 0.9)}, "val": val}
    md = write(tmp_path, long_runs_60min=sixty, long_runs=twenty)
    assert md.index("(20.0 min per arm)") < md.index("(60.0 min per arm)")
    assert "| neither | 15000 |" in md and "| neither | 4500 |" in md
    assert isbi.long_key(20) == ("long_runs", "long_") and isbi.long_key(60)[0] == "long_runs_60min"


def test_short_run_sections(tmp_path: Path) -> None:
    val = {**SCORES, "arm": "neither", "membrane_threshold": 0.3, "note": "the note"}
    md = write(
        tmp_path,
        val=val,
        ablation={"neither": arm(1192, 0.84)},
        overlap_tile_2048={"image_side": 2048, "tiles": 49},
    )
    assert (
        "| neither | 0.30 | off | 0.1000 | 0.0500 | 0.2000 | 0.8000 | 0.8500 | 0.9000 | 0.9200 |"
        in md
    )
    row = "| neither | 1192 | 0.500 / 0.100 | 0.30 | off | 0.1000 | 0.0500 | 0.2000 | 0.8400 |"
    assert row in md
    assert "- tiles: 49" in md and "Longer training" not in md


def test_the_refit_takes_its_choices_from_the_longer_run_with_the_best_held_out_score() -> None:
    val = {**SCORES, "arm": "neither"}
    d = {
        "long_runs": {"minutes_per_run": 20.0, "arms": {"neither": arm(4500, 0.9)}, "val": val},
        "long_runs_25min": {
            "minutes_per_run": 25.0,
            "arms": {"neither": {**arm(9000, 0.9), "held_out_20_24": {"v_rand_thinned": 0.95}}},
            "val": val,
        },
        "long_runs_40min": {
            "minutes_per_run": 40.0,
            "arms": {"neither": {**arm(9000, 0.9), "held_out_20_24": {"v_rand_thinned": 0.94}}},
            "val": val,
        },
    }
    assert isbi.refit_source(d)[0] == "long_runs_25min"
    try:
        isbi.refit_source({"val": val})
    except SystemExit as e:
        assert "--long first" in str(e)
    else:
        raise AssertionError("a refit without longer runs must stop with a message")


def test_refit_section_names_its_source_and_val_scores(tmp_path: Path) -> None:
    val = {
        **SCORES,
        "arm": "neither",
        "membrane_threshold": 0.2,
        "tta": True,
        "pixel_error_threshold": 0.7,
        "pixel_error_at_own_threshold": 0.0791,
    }
    refit = {
        "source": "long_runs_25min",
        "arm": "neither",
        "minutes_per_run": 25.0,
        "iterations": 12000,
        "loss_first_20": 0.25,
        "loss_last_20": 0.08,
        "val": val,
    }
    md = write(tmp_path, refit_00_24=refit)
    assert "## Final refit on slices 00-24 (25.0 min)" in md
    assert "from long_runs_25min (chosen on 20-24)" in md
    assert "V_rand thinned 0.9000" in md and "threshold (0.70): 0.0791" in md


def test_challenge_pixel_error_line_and_a_tagged_gpu_run(tmp_path: Path) -> None:
    val = {
        **SCORES,
        "arm": "weightmap_elastic",
        "membrane_threshold": 0.2,
        "pixel_error_threshold": 0.9,
        "pixel_error_at_own_threshold": 0.079,
        "pixel_error_fscore": 0.061,
        "pixel_fscore_threshold": 0.7,
        "pixel_error_fscore_at_own_threshold": 0.048,
        "leaderboard_style_max_over_thresholds": {
            "threshold": 0.3,
            "v_rand_thinned": 0.95,
            "pixel_error_fscore": 0.047,
        },
    }
    setup = {
        "base_width": 64,
        "parameters": 31030658,
        "batch_size": 4,
        "out_tile": 388,
        "lr": 3e-4,
        "precision": "bf16",
        "device_name": "NVIDIA H100 80GB HBM3",
    }
    run = {"minutes_per_run": 3.2, "tag": "gpu_w64", "setup": setup, "note": "on a lent GPU"}
    run |= {"arms": {"weightmap_elastic": arm(7846, 0.91)}, "val": val}
    md = write(tmp_path, **{"long_runs_3.2min_gpu_w64": run})
    assert "## Longer training (3.2 min per arm, gpu_w64)" in md
    assert "Base width 64 (31,030,658 parameters), batch 4" in md and "on NVIDIA H100" in md
    assert "on a lent GPU" in md
    assert "**0.0480** at its own threshold (0.70, chosen on 20-24), 0.0610 at the V_rand" in md
    assert "(lowest over thresholds on 25-29 itself): 0.0470" in md
    assert isbi.long_key(3.2, "gpu_w64") == ("long_runs_3.2min_gpu_w64", "long3.2_gpu_w64_")


def test_a_stacks_challenge_pixel_error_pools_the_slices_counts() -> None:
    from biounet.em.train_em import mean_scores, score_slices

    interior = np.array([[[True, True], [True, False]], [[True, True], [True, True]]])
    p = np.where(interior, 0.9, 0.1).astype(np.float32)  # P(interior), perfect at 0.5
    assert mean_scores(score_slices(list(p), interior, 0.5))["pixel_error_fscore"] == 0.0
    p[1, 0, 0] = 0.2  # one interior pixel of slice 1 missed: pooled tp 6, fp 0, fn 1
    rows = score_slices(list(p), interior, 0.5)
    assert mean_scores(rows)["pixel_error_fscore"] == pytest.approx(1 - 12 / 13)
    per_slice = (rows[0]["pixel_error_fscore"] + rows[1]["pixel_error_fscore"]) / 2
    assert per_slice == pytest.approx((0 + (1 - 6 / 7)) / 2)  # not what the challenge scored


def test_the_refit_source_is_taken_among_runs_of_the_same_setup_tag() -> None:
    val = {**SCORES, "arm": "neither"}
    cpu = {"minutes_per_run": 25.0, "arms": {"neither": arm(9000, 0.9)}, "val": val}
    gpu = {"minutes_per_run": 3.2, "tag": "gpu_w64", "arms": {"neither": arm(8000, 0.9)}}
    gpu["arms"]["neither"]["held_out_20_24"] = {"v_rand_thinned": 0.99}
    d = {"long_runs_25min": cpu, "long_runs_3.2min_gpu_w64": gpu | {"val": val}}
    assert isbi.refit_source(d)[0] == "long_runs_25min"
    assert isbi.refit_source(d, "gpu_w64")[0] == "long_runs_3.2min_gpu_w64"
