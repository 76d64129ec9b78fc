"""benchmarks/fundus_drishti.py: the adopted recipe is the one its cross-validation ablation trained,
and every ablation changes real FundusConfig fields (a typo would silently train the base recipe)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from biounet.data.sources import read_spec
from biounet.fundus.pipeline import FundusConfig

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import fundus_drishti as fd
    import fundus_generalization as fg
finally:
    sys.path.remove(str(BENCH))


def _dataset(root: Path, n_train: int) -> Path:
    root.mkdir()
    train = [f"t{i}" for i in range(n_train)]
    (root / "splits.json").write_text(json.dumps({"train": train, "test": ["x"]}))
    return root


@pytest.mark.parametrize("name", sorted(fd.ABLATIONS))
def test_each_ablation_changes_fundus_config_fields(name: str, tmp_path: Path) -> None:
    """Every key is a FundusConfig field (or extra_data, which ablation_config turns into a
    dataset list) and lands in the config ablation_config builds."""
    fields = {f.name for f in dataclasses.fields(FundusConfig)}
    setting = dict(fd.ABLATIONS[name])
    extra = setting.pop("extra_data", False)
    assert set(setting) <= fields
    view = _dataset(tmp_path / "view", 40)
    args = argparse.Namespace(**vars(fd.ADOPTED), extra_data=_dataset(tmp_path / "other", 400))
    changed = fd.ablation_config(view, args, name, tmp_path / "data.yaml")
    for key, value in setting.items():
        if not (extra and key in ("locator_epochs", "roi_epochs")):
            assert getattr(changed, key) == value, key
    assert (changed.data_root == str(tmp_path / "data.yaml")) == bool(extra)


def test_extra_data_trains_on_both_datasets_at_the_two_dataset_runs_draws(tmp_path) -> None:
    """with_refuge: the fold's images and the other dataset's training split, one weight each,
    epochs for EXTRA_DRAWS draws, and otherwise the recipe of fundus_generalization.py's
    ``both_all_polar_grey`` (so that the cross-validation judges the model that run trained; the
    recommended two-dataset run is its colour twin, chosen on held-out training images)."""
    view = _dataset(tmp_path / "view", 40)
    other = _dataset(tmp_path / "other", 400)
    args = argparse.Namespace(**vars(fd.ADOPTED), extra_data=other)
    fc = fd.ablation_config(view, args, "with_refuge", tmp_path / "data.yaml")
    sources = read_spec(fc.data_root)
    assert [(Path(s.root), s.weight) for s in sources] == [(view, 1.0), (other, 1.0)]
    assert (fc.locator_epochs, fc.roi_epochs) == (11, 55)  # ceil(4800 / 440), ceil(24000 / 440)
    run = fg.RUNS["both_all_polar_grey"]
    assert fg.RUNS[fg.ADOPTED] == run._replace(grey=False)
    assert (fg.DRAWS[0] * run.locator_draws_x, fg.DRAWS[1] * run.roi_draws_x) == fd.EXTRA_DRAWS
    assert (fc.camera_augment, fc.polar, fc.polar_area_loss, fc.grey, fc.colour_augment) == (
        run.camera_augment, run.polar, run.area_loss, run.grey, run.colour_augment
    )  # fmt: skip
    assert fc.val_fraction == run.val_fraction and set(run.sources) == {"drishti", "refuge"}


def test_adopted_recipe_is_its_ablation() -> None:
    """The final pipeline (ADOPTED) and the fold pipelines it was chosen with (ADOPTED_ABLATION)
    train with the same settings."""
    fc = fd.pipeline_config(Path("data"), fd.ADOPTED)
    for key, value in fd.ABLATIONS[fd.ADOPTED_ABLATION].items():
        assert getattr(fc, key) == value, key
    assert fc.polar and fc.polar_area_loss and fc.roi_epochs == 300 and fc.val_fraction == 0.0


def test_adopted_two_dataset_run_uses_the_drishti_recipe_crop_kind() -> None:
    run = fg.RUNS[fg.ADOPTED]
    assert set(run.sources) == {"drishti", "refuge"}
    assert run.polar == fd.ADOPTED.polar and run.val_fraction == fd.ADOPTED.val_fraction


def _final_args(reuse_final: bool, extra_data: Path) -> argparse.Namespace:
    """--stage final's arguments with the cv/ablate defaults (120 epochs, 20 % held out, Cartesian)."""
    return argparse.Namespace(
        roi_epochs=120, val_fraction=0.2, polar=False, locator_epochs=40, roi_size=256,
        roi_preset="small", seed=0, reuse_final=reuse_final, extra_data=extra_data,
    )  # fmt: skip


def _fake_view(root, out, splits, labels, **kw) -> Path:
    out.mkdir(exist_ok=True)
    (out / "splits.json").write_text(json.dumps(splits))
    return out


def test_final_stage_trains_the_adopted_recipe_whatever_the_flags(monkeypatch, tmp_path) -> None:
    """--stage final with the cv/ablate defaults (120 epochs, 20 % held out, Cartesian) still
    trains ADOPTED: the recipe lives in one place."""
    seen = []

    def stop(fc, out):
        seen.append(fc)
        raise RuntimeError("stop after the config")

    monkeypatch.setattr(fd, "read_splits", lambda root: {"train": ["a"], "test": ["b"]})
    monkeypatch.setattr(fd, "make_view", _fake_view)
    monkeypatch.setattr(fd, "fit_fundus", stop)
    args = _final_args(reuse_final=False, extra_data=_dataset(tmp_path / "other", 3))
    with pytest.raises(RuntimeError, match="stop after the config"):
        fd.stage_final(tmp_path, tmp_path, args)
    view = tmp_path / "final_view"
    assert seen[0] == fd.adopted_config(view, tmp_path / "final_data.yaml", args.extra_data)
    assert seen[0].roi_epochs != 120 and seen[0].polar  # not the flags' recipe


def test_reuse_final_scores_the_trained_pipeline_without_training(monkeypatch, tmp_path) -> None:
    (tmp_path / "final_run").mkdir()
    (tmp_path / "final_run" / "fundus.pt").write_bytes(b"x")
    scored = []

    def no_training(fc, out):
        raise AssertionError("trained again")

    def stop(ck, *a, **kw):
        scored.append(ck)
        raise RuntimeError("stop after the first evaluation")

    monkeypatch.setattr(fd, "read_splits", lambda root: {"train": ["a"], "test": ["b"]})
    monkeypatch.setattr(fd, "make_view", _fake_view)
    monkeypatch.setattr(fd, "fit_fundus", no_training)
    monkeypatch.setattr(fd, "evaluate_checkpoint", stop)
    args = _final_args(reuse_final=True, extra_data=_dataset(tmp_path / "other", 3))
    with pytest.raises(RuntimeError, match="stop after the first evaluation"):
        fd.stage_final(tmp_path, tmp_path, args)
    assert scored == [tmp_path / "final_run" / "fundus.pt"]
