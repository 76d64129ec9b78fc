"""benchmarks/speed_merge.py (a GPU run's results into speed.json, also from the log of a run cut
short) and benchmarks/speed_options.py's augmentation measurement and markdown."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import speed
    import speed_memory
    import speed_merge
    import speed_options
finally:
    sys.path.remove(str(BENCH))

SETTINGS = {"widths": {"classic": 8}, "sizes": [32, 64], "batches": [1], "reps": 1}
PEAK = {"bf16_flops": 1e12, "fp32_flops": 5e11}


def line(label: str, img_s: float, precision: str = "fp32") -> dict:
    return {
        "label": label,
        "img_s": img_s,
        "precision": precision,
        "rss_mb": 100.0,
        "flops_fwd_per_img": 1e9,
    }


def test_section_from_a_cut_log_keeps_what_was_measured_and_lists_the_rest() -> None:
    lines = [
        line("classic 32 b1 train biounet", 30.0, "bf16"),
        line("classic 32 b1 train monai", 10.0),
        line("classic 32 b1 train plain", 20.0),
        line("classic 32 b1 infer biounet", 80.0, "bf16"),
        line("classic 32 b1 infer monai", 20.0),
        {"label": "fundus 1024x900 fast", "seconds": 0.2},
    ]
    sec = speed_merge.section_from_log(lines, PEAK, SETTINGS, "GPU X", "machine Y")
    assert sec["summary"]["train_speedup_vs_monai"] == pytest.approx(3.0)
    assert sec["summary"]["infer_speedup_vs_monai"] == pytest.approx(4.0)
    assert sec["summary"]["predict_fundus_s"] == 0.2
    # MFU: 1e9 FLOPs x 3 (train) x 30 img/s over the 1e12 bf16 peak
    assert sec["rows"][0]["biounet"]["mfu"] == pytest.approx(0.09)
    assert sec["settings"]["partial"] is True
    assert "classic 32 b1 infer plain" in sec["settings"]["missing"]
    assert "classic 64 b1 train biounet" in sec["settings"]["missing"]
    assert "error" in sec["rows"][2]["biounet"]  # classic 64 b1 train: never measured


def test_merge_replaces_only_the_named_section(tmp_path: Path) -> None:
    dst, src = tmp_path / "speed.json", tmp_path / "gpu.json"
    dst.write_text(json.dumps({"cpu": {"x": 1}, "train_speedup_vs_monai": 2.0}))
    src.write_text(json.dumps({"cuda": {"y": 2}}))
    data = speed_merge.merge(src, dst, ["cuda"])
    assert data == {"cpu": {"x": 1}, "train_speedup_vs_monai": 2.0, "cuda": {"y": 2}}
    with pytest.raises(SystemExit, match="no cpu section"):
        speed_merge.merge(src, dst, ["cpu"])


def test_aug_part_measures_both_ways_of_running_augmentation() -> None:
    a = speed_options.aug_part(steps=2, batch=2, size=32)
    assert a["aug_ms_median"] > 0 and a["train_step_ms_median"] > 0
    assert a["img_s_aug_inline"] > 0 and a["img_s_aug_in_worker"] > 0
    assert a["aug_share_of_step"] == pytest.approx(a["aug_ms_median"] / a["train_step_ms_median"])
    assert "in 1 worker process" in speed_options.markdown(
        {"aug": a, "machine": "m", "commit": "c"}
    )


def test_accuracy_table_shows_differences_from_the_reference() -> None:
    rows = []
    for name, d in (("fp32 reference", 0.90), ("bf16 autocast", 0.897)):
        rows.append(
            {
                "arm": name,
                "options": speed_options.ARMS[name],
                "best_epoch": 3,
                "dice_disc": d,
                "dice_cup": 0.8,
                "dice_mean": (d + 0.8) / 2,
                "epoch_s_median": 5.0,
            }
        )
    for r in rows:
        for k in ("dice_disc", "dice_cup", "dice_mean"):
            r[f"delta_{k}"] = r[k] - rows[0][k]
    md = speed_options.markdown(
        {"accuracy": {"epochs": 3, "rows": rows}, "machine": "m", "commit": "c"}
    )
    assert "| bf16 autocast | bf16 | no | loop | 0.8970 | 0.8000 | 0.8485 | -0.0030 |" in md


def test_seed_summary_gives_means_sds_and_the_standard_error_of_the_difference() -> None:
    def row(arm: str, disc: float, cup: float) -> dict:
        return {"arm": arm, "dice_disc": disc, "dice_cup": cup, "dice_mean": (disc + cup) / 2}

    rows = [
        row("fp32 reference", 0.90, 0.70),
        row("bf16 autocast", 0.10, 0.10),  # another arm: not part of either recipe
        row("all (default)", 0.92, 0.74),
        row("all (default), seed 1", 0.94, 0.78),
        row("fp32 reference, seed 1", 0.92, 0.70),
    ]
    s = speed_options.seed_summary(rows)
    assert s["all (default)"]["n"] == 2 and s["fp32 reference"]["n"] == 2
    assert s["all (default)"]["dice_disc"] == pytest.approx(0.93)
    assert s["fp32 reference"]["dice_cup_sd"] == pytest.approx(0.0)
    d = s["difference"]["dice_cup"]
    assert d["mean"] == pytest.approx(0.06)
    # sd of (0.74, 0.78) is 0.02 * sqrt(2); se = sqrt(sd^2 / 2 + 0) = 0.02
    assert d["se"] == pytest.approx(0.02)
    md = speed_options.markdown(
        {"accuracy": {"epochs": 3, "rows": [], "seeds": s}, "machine": "m", "commit": "c"}
    )
    assert "| difference (± standard error) | +0.0200 ± 0.0141 | +0.0600 ± 0.0200 |" in md


def test_a_configuration_runs_in_process_and_a_failure_is_a_result() -> None:
    spec = {"task": "train", "impl": "biounet", "base": 4, "size": 32, "batch": 2, "reps": 1}
    r = speed.run_worker({**spec, "warmup": 0, "in_process": True}, timeout=60)
    assert r["img_s"] > 0 and r["in_process"] is True and r["rss_mb"] is None
    assert "in process" in speed.brief(r)
    bad = speed.run_worker({**spec, "impl": "nope", "warmup": 0, "in_process": True}, timeout=60)
    assert "impl must be biounet, monai or plain" in bad["error"]


def test_speed_refuses_to_overwrite_the_results_without_monai(monkeypatch) -> None:
    monkeypatch.setattr(speed, "has_module", lambda name: name != "monai")
    monkeypatch.setattr(speed, "run_worker", lambda *a, **k: pytest.fail("measured anyway"))
    with pytest.raises(SystemExit, match="monai is not installed.*--without-monai"):
        speed.main([])


def test_speed_memory_ratios_compare_within_one_configuration() -> None:
    def row(impl: str, setting: str, img_s: float, size: int = 64) -> dict:
        return {"widths": "small", "size": size, "batch": 1, "task": "train", "impl": impl} | {
            "reuse_memory": setting,
            "img_s": img_s,
            "rss_mb": 400.0,
            "error": None,
        }

    rows = [row("biounet", "on", 30.0), row("biounet", "off", 24.0), row("monai", "off", 10.0)]
    rows.append(row("monai", "off", 99.0, size=128))  # another configuration: never compared
    assert speed_memory.ratio(rows, rows[0], "biounet", "off") == pytest.approx(1.25)
    assert speed_memory.ratio(rows, rows[0], "monai", "off") == pytest.approx(3.0)
    assert speed_memory.ratio(rows, rows[2], "monai", "on") is None  # no such arm
    md = speed_memory.markdown({"machine": "m", "commit": "c", "rows": rows})
    assert "| small | 64 | 1 | train | biounet | on | 30.00 | 1.25 | 3.00 | 400 |" in md


def test_fundus_precision_table_from_the_fundus_results(tmp_path: Path) -> None:
    """speed_options' page shows bf16 minus fp32 of the fundus cross-validation (hand-computed
    differences) where fundus_drishti.json has the ablation, and nothing where it does not."""
    assert speed_options.fundus_precision_lines(tmp_path / "missing.json") == []
    arm = {"disc_dice_mean": 0.97, "cup_dice_mean": 0.90, "vcdr_mae": 0.040}
    fp32 = {"disc_dice_mean": 0.96, "cup_dice_mean": 0.92, "vcdr_mae": 0.035}
    entry = {
        "folds_evaluated": 2,
        "images_evaluated": 20,
        "base": arm,
        "fp32": fp32,
        "per_fold": {"base": [arm, arm], "fp32": [fp32, arm]},
    }
    path = tmp_path / "fundus_drishti.json"
    path.write_text(json.dumps({"cv_ablation_fp32": entry}))
    text = "\n".join(speed_options.fundus_precision_lines(path))
    assert "| bf16 minus fp32 | +0.0100 | -0.0200 | +0.0050 |" in text
    assert "disc +0.0100, cup -0.0200; disc +0.0000, cup +0.0000" in text
    assert "same 2 folds (20 held-out" in text


def test_speed_options_report_reads_fundus_results_from_results_dir(tmp_path: Path) -> None:
    """--part report with --results-dir rewrites the page from that folder alone: the fundus
    bf16/fp32 table comes from its fundus_drishti.json, not the repository's results."""
    arm = {"disc_dice_mean": 0.5, "cup_dice_mean": 0.5, "vcdr_mae": 0.5}
    entry = {"folds_evaluated": 1, "images_evaluated": 7, "base": arm, "fp32": arm}
    (tmp_path / "fundus_drishti.json").write_text(json.dumps({"cv_ablation_fp32": entry}))
    (tmp_path / "speed_options.json").write_text(json.dumps({"machine": "m", "commit": "c"}))
    assert speed_options.main(["--part", "report", "--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "speed_options.md").read_text()
    assert "same 1 folds (7 held-out" in md
    assert "| bf16 minus fp32 | +0.0000 | +0.0000 | +0.0000 |" in md
