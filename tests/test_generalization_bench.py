"""The pure parts of benchmarks/fundus_generalization.py and its markdown, on hand-made rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import common
    import fundus_generalization as fg
    import generalization_holdout as gh
    import generalization_report as gr
    import generalization_thresholds as gt
finally:
    sys.path.remove(str(BENCH))


def test_flag_value_splits_cup_dice_and_vcdr_error_by_flag() -> None:
    measures = [
        {"stem": "a", "vcdr": "0.5", "vcdr_true_masks": "0.4", "flags": ""},
        {"stem": "b", "vcdr": "0.9", "vcdr_true_masks": "0.5", "flags": "disc_size_unusual"},
        {"stem": "c", "vcdr": "nan", "vcdr_true_masks": "0.5", "flags": "empty_disc"},
    ]
    scores = [
        {"stem": "a", "label": "cup", "dice": "0.9"},
        {"stem": "a", "label": "disc", "dice": "0.95"},
        {"stem": "b", "label": "cup", "dice": "0.2"},
        {"stem": "c", "label": "cup", "dice": "0.0"},
    ]
    out = fg.flag_value(measures, scores)
    assert out["unflagged"] == {
        "n": 1,
        "cup_dice_mean": 0.9,
        "vcdr_abs_err_mean": pytest.approx(0.1),
    }
    assert out["flagged"]["n"] == 2 and out["flagged"]["cup_dice_mean"] == pytest.approx(0.1)
    assert out["flagged"]["vcdr_abs_err_mean"] == pytest.approx(0.4)  # the NaN vCDR is left out


def test_val_dice_is_the_best_epoch_of_the_crop_model(tmp_path: Path) -> None:
    (tmp_path / "roi").mkdir()
    (tmp_path / "roi" / "metrics.csv").write_text("epoch,val_dice_mean\n1,0.5\n2,0.8\n3,0.7\n")
    assert fg.val_dice(tmp_path) == 0.8


def test_markdown_has_a_row_per_run_and_dashes_for_missing_labels(tmp_path: Path) -> None:
    run = {
        "n_images": 3,
        "disc": {"dice_mean": 0.9},
        "cup": {"dice_mean": 0.8},
        "vcdr_mae": 0.05,
        "vcdr_auc": None,
        "flagged_doubtful": 0,
        "doubt_flags": {"flagged": {"n": 0}, "unflagged": {"n": 3}},
    }
    result = {
        "commit": "abc",
        "machine": "m",
        "wall_time_s": 1.0,
        "runs": {"x_to_y": run, "z_to_y": run | {"tta_scales": [0.8, 1.0, 1.25]}},
        "train_time_s": {"x": 10.0},
        "crops_refuge_test": None,
    }
    gr.write_markdown(result, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "| x_to_y | 3 | 1 | 0.900 | 0.800 | 0.050 | - |" in text  # scored before the sizes
    assert "| z_to_y | 3 | 0.8, 1, 1.25 | 0.900 |" in text
    assert "no image flagged" in text and "x 10" in text


def test_a_partial_call_keeps_the_other_runs_and_says_their_commit(tmp_path: Path) -> None:
    """--runs b on top of results holding a and b: a stays (its commit kept), b is replaced, the
    crops table of the old call survives a call that computed none, b's site thresholds go."""
    import json

    old = {
        "commit": "old",
        "runs": {"a_to_x": {"v": 1}, "b_to_x": {"v": 2}, "b_to_y": {"v": 3}},
        "train_time_s": {"a": 1.0, "b": 2.0},
        "both_chosen_by_validation": {"run": "a"},
        "crops_refuge_test": {"c": 1},
        "site_thresholds": {"a_to_x_3": {"run": "a"}, "b_to_x_3": {"run": "b"}},
        "holdout_thresholds": {"run": "h"},
    }
    (tmp_path / "r.json").write_text(json.dumps(old))
    new = {
        "commit": "new",
        "machine": "m",
        "wall_time_s": 5.0,
        "runs": {"b_to_x": {"v": 20}, "b_to_y": {"v": 30}},
        "train_time_s": {"b": 9.0},
        "both_chosen_by_validation": None,
        "crops_refuge_test": None,
    }
    m = fg.merged_with_previous(new, tmp_path / "r.json")
    assert m["runs"] == {"a_to_x": {"v": 1}, "b_to_x": {"v": 20}, "b_to_y": {"v": 30}}
    assert m["train_time_s"] == {"a": 1.0, "b": 9.0}
    assert m["run_commits"] == {"a": "old", "b": "new"}
    assert m["crops_refuge_test"] == {"c": 1} and m["both_chosen_by_validation"] == {"run": "a"}
    assert m["site_thresholds"] == {"a_to_x_3": {"run": "a"}}  # b trained again: its are stale
    assert m["holdout_thresholds"] == {"run": "h"}
    first = fg.merged_with_previous(new, tmp_path / "absent.json")
    assert first["run_commits"] == {"b": "new"} and first["runs"] == new["runs"]


def test_update_results_keeps_each_sections_commit(tmp_path: Path, monkeypatch) -> None:
    """Sections written at different commits keep theirs in ``commits``; one written before
    ``commits`` existed inherits the file's previous ``commit``."""
    import json

    common = sys.modules["common"]  # imported by fundus_generalization
    (tmp_path / "r.json").write_text(json.dumps({"commit": "aaa", "test": {"x": 1}}))
    monkeypatch.setattr(common, "git_commit", lambda: "bbb")
    common.update_results("r", "cv", {"y": 2}, results=tmp_path)
    monkeypatch.setattr(common, "git_commit", lambda: "ccc")
    d = common.update_results("r", "cv_ablation", {"z": 3}, results=tmp_path)
    assert d["commit"] == "ccc"
    assert d["commits"] == {"test": "aaa", "cv": "bbb", "cv_ablation": "ccc"}
    assert json.loads((tmp_path / "r.json").read_text())["test"] == {"x": 1}


def test_select_scores_runs_on_drishti_training_photographs_and_refuses_drishti_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    calls = []

    def fake_train(name, roots, work, args):
        (work / name).mkdir(parents=True, exist_ok=True)
        (work / name / "train_seconds.txt").write_text("12.5\n")
        return work / name / "fundus.pt"

    def fake_eval(ck, test, root, work, labels_csv, split="test"):
        calls.append((ck.parent.name, test, split))
        return {
            "disc": {"dice_mean": 0.96},
            "cup": {"dice_mean": 0.78},
            "vcdr_mae": 0.15,
            "flagged_doubtful": 1,
        }

    monkeypatch.setattr(fg, "train_run", fake_train)
    monkeypatch.setattr(fg, "evaluate_run", fake_eval)
    args = argparse.Namespace(
        runs="refuge_small,refuge_small_grey",
        work=tmp_path,
        quick=True,
        locator_draws=40,
        roi_draws=40,
    )
    fg.select(args, {"drishti": tmp_path / "d", "refuge": tmp_path / "r"}, 0.0)
    assert calls == [
        ("refuge_small", "drishti", "train"),
        ("refuge_small_grey", "drishti", "train"),
    ]
    md = (tmp_path / "fundus_generalization_selection_quick.md").read_text()
    assert "| refuge_small_grey | 0.960 | 0.780 | 0.150 | 1 | 12 |" in md
    args.runs = "both_all_polar"
    with pytest.raises(SystemExit, match="trained on Drishti-GS1"):
        fg.select(args, {}, 0.0)


def test_cup_threshold_sweep_cuts_only_the_cup() -> None:
    import numpy as np

    yy, xx = np.mgrid[:40, :40]
    r2 = (yy - 19.5) ** 2 + (xx - 19.5) ** 2
    disc, cup = r2 < 10**2, r2 < 5**2  # circles: the ellipse fit keeps them
    p = np.stack([disc * 0.9, cup * 0.55]).astype(np.float32)  # the cup's probability: 0.55
    table = gt.sweep([p], [(disc, cup)], [0.5], grid=(0.5, 0.6))
    assert table["0.5"]["disc_dice_mean"] == table["0.6"]["disc_dice_mean"] > 0.95
    assert table["0.5"]["cup_dice_mean"] > 0.95  # 0.55 > 0.5: the cup is kept
    assert table["0.6"]["cup_dice_mean"] == 0.0  # 0.55 < 0.6: no cup left
    assert table["0.5"]["vcdr_mae"] == pytest.approx(0.0, abs=0.06)  # the masks' own vCDR


def test_site_thresholds_choose_on_training_photographs_and_score_the_test_set(
    tmp_path: Path, synthetic_data: Path, tiny_fundus
) -> None:
    """--site-thresholds end to end on a tiny pipeline (no mocks: evaluate_run and
    choose_thresholds run for real): thresholds chosen on the first 3 training images of the
    dataset the run did not train on, that dataset's test split scored with them into its own
    folder, the results file keeps its other keys and its page gets the table; a run trained on
    every dataset is refused."""
    import argparse
    import json

    from biounet.fundus.pipeline import fit_fundus

    work = tmp_path / "work"
    fit_fundus(tiny_fundus(synthetic_data), work / "refuge_small")
    results = work / "fundus_generalization_quick.json"
    base = {"commit": "c", "machine": "m", "wall_time_s": 1.0, "runs": {}, "train_time_s": {}}
    results.write_text(json.dumps(base))
    args = argparse.Namespace(runs="refuge_small", work=work, quick=True)
    fg.site_thresholds(args, {"drishti": synthetic_data})
    out = json.loads(results.read_text())
    s = out["site_thresholds"]["refuge_small_to_drishti_3"]
    chosen = json.loads(
        (work / "thresholds_refuge_small_drishti_train_3/thresholds.json").read_text()
    )
    assert chosen["n_images"] == 3 and chosen["split"] == "train"
    assert s["thresholds"] == {lb: c["threshold"] for lb, c in chosen["labels"].items()}
    assert s["test"]["n_images"] == 3  # the synthetic test split
    at = "".join(f"_{lb}{t:g}" for lb, t in s["thresholds"].items())
    summary = json.loads(
        next(work.glob(f"eval_refuge_small_on_drishti_scales_*{at}/summary.json")).read_text()
    )
    assert summary["label_thresholds"] == s["thresholds"]
    assert out["commit"] == "c"  # the rest of the file kept
    md = (work / "fundus_generalization_quick.md").read_text()
    assert "## Thresholds chosen on a few labelled images of the new site" in md
    t = s["thresholds"]
    assert f"| refuge_small -> drishti | 3 | {t['disc']:g} / {t['cup']:g} |" in md
    args.runs = "both_all_polar"
    with pytest.raises(SystemExit, match="trained on every dataset"):
        fg.site_thresholds(args, {"drishti": synthetic_data, "refuge": synthetic_data})


def test_holdout_thresholds_choose_on_each_sites_held_out_images(
    tmp_path: Path, synthetic_data: Path, tiny_fundus, monkeypatch
) -> None:
    """--holdout-thresholds end to end on a tiny pipeline (trained by train_run with the run's
    fifth held out): the held-out stems are the crop model's validation images, thresholds are
    chosen on exactly those, each test set is scored at 0.5 and at them, and the page says so."""
    import argparse
    import json

    from biounet.data.folder import read_splits

    work = tmp_path / "work"
    (work).mkdir()
    results = work / "fundus_generalization_quick.json"
    base = {"commit": "c", "machine": "m", "wall_time_s": 1.0, "runs": {}, "train_time_s": {}}
    results.write_text(json.dumps(base))
    # the run's recipe at the tiny pipeline's budget: one source, a fifth held out
    tiny = tiny_fundus(synthetic_data)
    run = fg.Run(("drishti",), False, 1, 1, val_fraction=0.2)
    monkeypatch.setitem(fg.RUNS, fg.HOLDOUT, run)
    args = argparse.Namespace(work=work, quick=True, locator_draws=8, roi_draws=8, seed=0)
    monkeypatch.setattr(
        fg, "fundus_config",
        lambda name, roots, w, a, r=None: tiny.__class__(**{**tiny.__dict__, "val_fraction": 0.2}),
    )  # fmt: skip
    roots = {"drishti": synthetic_data}
    held = fg.held_out_stems(fg.HOLDOUT, roots, args)["drishti"]
    assert held and set(held) <= set(read_splits(synthetic_data)["train"])
    fg.holdout_thresholds(args, roots)
    h = json.loads(results.read_text())["holdout_thresholds"]
    chosen = json.loads(
        (work / f"thresholds_{fg.HOLDOUT}_drishti_held_out" / "thresholds.json").read_text()
    )
    assert chosen["n_images"] == len(held) == h["drishti"]["held_out_images"]
    assert h["drishti"]["thresholds"] == {lb: c["threshold"] for lb, c in chosen["labels"].items()}
    assert h["drishti"]["test_at_0.5"]["n_images"] == 3
    md = (work / "fundus_generalization_quick.md").read_text()
    assert "## Site thresholds from held-out training images" in md
    assert md.count("| drishti | " + str(len(held)) + " |") == 2


def _evaluate_folder(root: Path, rows: dict[str, tuple[float, float, str, str]]) -> Path:
    """An evaluate-like folder: stem -> (disc Dice, cup Dice, vcdr, vcdr_true_masks)."""
    root.mkdir()
    (root / "per_image.csv").write_text(
        "stem,label,dice\n"
        + "".join(f"{s},disc,{d}\n{s},cup,{c}\n" for s, (d, c, _, _) in rows.items())
    )
    (root / "per_image_measures.csv").write_text(
        "stem,vcdr,vcdr_true_masks,flags\n"
        + "".join(f"{s},{v},{t},\n" for s, (_, _, v, t) in rows.items())
    )
    return root


def test_holdout_comparison_and_the_adoption_rule(tmp_path: Path) -> None:
    base = gh.per_image(_evaluate_folder(tmp_path / "a", {
        "x": (0.9, 0.8, "0.5", "0.4"), "y": (0.95, 0.85, "0.6", "0.7"), "z": (0.9, 0.8, "", "0.5"),
    }))  # fmt: skip
    assert base["x"] == pytest.approx({"disc": 0.9, "cup": 0.8, "vcdr_err": 0.1})
    cand = {s: dict(v) for s, v in base.items()}
    cand["x"]["vcdr_err"], cand["y"]["cup"] = 0.05, 0.95  # better vCDR on x, better cup on y
    c = gh.compare(base, cand)
    assert c["paired"]["vcdr_err"]["n"] == 2 and c["paired"]["vcdr_err"]["n_not_finite"] == 1
    assert c["paired"]["vcdr_err"]["diff_mean"] == pytest.approx(-0.025)
    assert c["mean_dice"]["candidate"] - c["mean_dice"]["base"] == pytest.approx(0.05 / 3)
    assert gh.decide({"refuge": c, "drishti": c})["adopt_colour"]
    worse = gh.compare(cand, base)  # the other way round: higher vCDR error, lower Dice
    verdict = gh.decide({"refuge": worse, "drishti": c})
    assert verdict["checks"] == {
        "refuge_vcdr_lower": False,
        "refuge_mean_dice_not_lower": False,
        "drishti_mean_dice_within_0.01": True,
    }
    assert not verdict["adopt_colour"]
    result = {
        "commit": "abc", "machine": "test", "train_time_s": {}, "decision": verdict,
        "held_out": {"refuge": worse, "drishti": c},
    }  # fmt: skip
    gh.write_markdown(result, tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert "| refuge (3) | vcdr_err | 0.0750 | 0.1000 | +0.0250 |" in md and "grey kept" in md


def test_a_runs_own_seed_overrides_the_command_lines(tmp_path: Path) -> None:
    """The reseeded twin of the adopted run trains with seed 1 whatever --seed says; every other
    run takes --seed; the twin differs from the adopted run in nothing else."""
    import argparse
    import json

    args = argparse.Namespace(locator_draws=1600, roi_draws=4800, seed=7)
    roots = {"drishti": tmp_path / "d", "refuge": tmp_path / "r"}
    for root, n in ((roots["drishti"], 50), (roots["refuge"], 400)):
        root.mkdir()
        (root / "splits.json").write_text(json.dumps({"train": [str(i) for i in range(n)]}))
    twin = fg.fundus_config("both_all_polar_colour_seed1", roots, tmp_path, args)
    adopted = fg.fundus_config(fg.ADOPTED, roots, tmp_path, args)
    assert (twin.seed, adopted.seed) == (1, 7)
    same = {"seed": 7, "data_root": adopted.data_root}  # each run lists its sources in its yaml
    assert twin.__class__(**{**twin.__dict__, **same}) == adopted
    assert Path(twin.data_root).read_text() == Path(adopted.data_root).read_text()
    assert (adopted.roi_epochs, adopted.locator_epochs) == (54, 11)  # 24000 / 450, 4800 / 450
    hybrid = fg.fundus_config("both_all_polar_locator_grey", roots, tmp_path, args)
    assert hybrid.locator_grey and not adopted.locator_grey and not hybrid.grey


def test_make_view_links_masks_of_any_extension_and_suffix(tmp_path: Path) -> None:
    """A view of a dataset whose masks are JPEG and ``<stem>_mask.png`` pairs them as discover
    would; an image without a mask gets none."""
    import numpy as np
    from PIL import Image

    from biounet.data.folder import discover

    root = tmp_path / "data"
    for d in ("images", "masks/disc", "masks/cup"):
        (root / d).mkdir(parents=True)
    img = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    for s in ("a", "b", "c"):
        Image.fromarray(img).save(root / "images" / f"{s}.png")
    Image.fromarray(mask).save(root / "masks" / "disc" / "a.JPG", quality=95)
    Image.fromarray(mask).save(root / "masks" / "disc" / "b.png")
    for s in ("a", "b"):
        Image.fromarray(mask).save(root / "masks" / "cup" / f"{s}_mask.png")
    view = common.make_view(
        root, tmp_path / "view", {"train": ["a", "b"], "test": ["c"]}, ("disc", "cup")
    )
    found = {x.stem: {lb: p.name for lb, p in x.masks.items()} for x in discover(view)}
    assert found == {
        "a": {"disc": "a.JPG", "cup": "a.png"},
        "b": {"disc": "b.png", "cup": "b.png"},
        "c": {},
    }
