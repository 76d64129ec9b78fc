"""benchmarks/fundus_drishti.py: the adopted recipe is the one its cross-validation ablation trained,
and every ablation changes real FundusConfig fields (a typo would silently train the base recipe)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest

from biounet.fundus.pipeline import FundusConfig

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import fundus_drishti as fd
    import fundus_generalization as fg
finally:
    sys.path.remove(str(BENCH))


@pytest.mark.parametrize("name", sorted(fd.ABLATIONS))
def test_each_ablation_changes_fundus_config_fields(name: str) -> None:
    fields = {f.name for f in dataclasses.fields(FundusConfig)}
    assert set(fd.ABLATIONS[name]) <= fields
    base = fd.pipeline_config(Path("data"), fd.ADOPTED)
    changed = dataclasses.replace(base, **fd.ABLATIONS[name])
    for key, value in fd.ABLATIONS[name].items():
        assert getattr(changed, key) == value


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


def _final_args(reuse_final: bool) -> argparse.Namespace:
    """--stage final's arguments with the cv/ablate defaults (120 epochs, 20 % held out, Cartesian)."""
    return argparse.Namespace(
        roi_epochs=120, val_fraction=0.2, polar=False, locator_epochs=40, roi_size=256,
        roi_preset="small", seed=0, reuse_final=reuse_final,
    )  # fmt: skip


def test_final_stage_trains_the_adopted_recipe_whatever_the_flags(monkeypatch, tmp_path) -> None:
    """--stage final with the cv/ablate defaults (120 epochs, 20 % held out, Cartesian) still
    trains ADOPTED: the recipe lives in one place."""
    seen = []

    def stop(fc, out):
        seen.append(fc)
        raise RuntimeError("stop after the config")

    monkeypatch.setattr(fd, "read_splits", lambda root: {"train": ["a"], "test": ["b"]})
    monkeypatch.setattr(fd, "make_view", lambda root, out, splits, labels, **kw: out)
    monkeypatch.setattr(fd, "fit_fundus", stop)
    args = _final_args(reuse_final=False)
    with pytest.raises(RuntimeError, match="stop after the config"):
        fd.stage_final(tmp_path, tmp_path, args)
    assert seen[0] == fd.pipeline_config(tmp_path / "final_view", fd.ADOPTED)


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
    monkeypatch.setattr(fd, "make_view", lambda root, out, splits, labels, **kw: out)
    monkeypatch.setattr(fd, "fit_fundus", no_training)
    monkeypatch.setattr(fd, "evaluate_checkpoint", stop)
    args = _final_args(reuse_final=True)
    with pytest.raises(RuntimeError, match="stop after the first evaluation"):
        fd.stage_final(tmp_path, tmp_path, args)
    assert scored == [tmp_path / "final_run" / "fundus.pt"]
