"""Ensembles of single models (``biounet ensemble`` of best.pt files or of a cv folder): the
prediction is the mean of the members' probabilities; members that cannot be averaged are
refused naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from biounet.checkpoint import (
    EnsembleCheckpoint,
    load_any,
    load_checkpoint,
    save_checkpoint,
    save_model_ensemble,
    save_with_thresholds,
)
from biounet.cli import main
from biounet.cli_commands import format_summary
from biounet.config import ModelConfig
from biounet.errors import BiounetError
from biounet.infer import preprocess_spec
from biounet.models import build_model
from biounet.predictor import ModelPredictor, PredictOptions, make_predictor


def model_file(
    path: Path, seed: int, size: int = 32, labels: tuple[str, ...] = ("disc", "cup")
) -> Path:
    """An untrained seeded U-Net (width 4, depth 2) saved as a checkpoint at ``path``."""
    cfg = ModelConfig(in_channels=3, out_channels=len(labels), base_width=4, depth=2)
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, build_model(cfg), cfg, labels, preprocess_spec(size, 3))
    return path


FP32 = PredictOptions(precision="fp32")


def test_the_ensemble_predicts_the_mean_of_its_members(tmp_path: Path) -> None:
    # members prepared at different sizes: each runs as its own training did
    a, b = model_file(tmp_path / "a.pt", 0), model_file(tmp_path / "b.pt", 1, size=48)
    ens = save_model_ensemble([a, b], tmp_path / "ens.pt")
    ck = load_any(ens)
    assert isinstance(ck, EnsembleCheckpoint) and len(ck.members) == 2
    assert ck.settings["ensemble_of"] == [str(a), str(b)]
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    pa, pb = (make_predictor(p, FP32).predict(img).prob for p in (a, b))
    pred = make_predictor(ens, FP32)
    assert isinstance(pred, ModelPredictor) and pred.labels == ("disc", "cup")
    p = pred.predict(img)
    np.testing.assert_allclose(p.prob, (pa + pb) / 2, atol=1e-6)
    assert np.array_equal(p.masks["cup"], p.prob[1] > 0.5)
    # with flips too: the mean over members of each member's flip average
    ta, tb = (make_predictor(x, PredictOptions("fp32", tta=True)).predict(img).prob for x in (a, b))
    t = make_predictor(ens, PredictOptions("fp32", tta=True)).predict(img).prob
    np.testing.assert_allclose(t, (ta + tb) / 2, atol=1e-6)


def test_an_ensemble_is_not_loaded_as_a_single_model(tmp_path: Path) -> None:
    ens = save_model_ensemble(
        [model_file(tmp_path / "a.pt", 0), model_file(tmp_path / "b.pt", 1)], tmp_path / "e.pt"
    )
    with pytest.raises(BiounetError, match="an ensemble checkpoint, not a single model"):
        load_checkpoint(ens)


def test_ensemble_refusals_name_the_file(tmp_path: Path, tiny_fundus) -> None:
    a = model_file(tmp_path / "a.pt", 0)
    vessel = model_file(tmp_path / "v.pt", 1, labels=("vessel",))
    with pytest.raises(
        BiounetError, match=r"v\.pt: labels vessel; the first member's are disc, cup"
    ):
        save_model_ensemble([a, vessel], tmp_path / "e1.pt")
    with pytest.raises(BiounetError, match="at least two"):
        save_model_ensemble([a], tmp_path / "e2.pt")
    with pytest.raises(BiounetError, match=r"a\.pt: exists"):
        save_model_ensemble([a, a], a)
    assert not (tmp_path / "e1.pt").exists() and not (tmp_path / "e2.pt").exists()
    ens = save_model_ensemble([a, a], tmp_path / "e3.pt")
    with pytest.raises(BiounetError, match=r"e3\.pt: not a single-model checkpoint"):
        save_model_ensemble([a, ens], tmp_path / "e4.pt")


def test_an_em_model_is_refused(tmp_path: Path) -> None:
    from biounet.em.train_em import make_em_model, save_em_checkpoint
    from biounet.models import preset

    cfg = preset("paper_valid_small", in_channels=1, out_channels=2, base_width=4, depth=2)
    save_em_checkpoint(tmp_path / "em.pt", make_em_model(cfg, seed=0), 12, 0.5)
    a = model_file(tmp_path / "a.pt", 0)
    with pytest.raises(BiounetError, match=r"em\.pt: an unpadded \(EM\) model"):
        save_model_ensemble([a, tmp_path / "em.pt"], tmp_path / "e.pt")


def fake_cv(folder: Path, folds: int, done: int) -> Path:
    """A cv folder whose first ``done`` folds hold a run with best.pt and fold.json."""
    folder.mkdir(parents=True)
    (folder / "cv.json").write_text(json.dumps({"folds": folds}))
    for k in range(done):
        model_file(folder / f"fold_{k}" / "run" / "best.pt", k)
        (folder / f"fold_{k}" / "fold.json").write_text("{}")
    return folder


def test_ensemble_cli_takes_a_cv_folder_and_predict_runs_it(
    tmp_path: Path, png, capsys: pytest.CaptureFixture[str]
) -> None:
    cv = fake_cv(tmp_path / "cv", 3, 3)
    ens = tmp_path / "cv_ens.pt"
    assert main(["ensemble", "--out", str(ens), str(cv)]) == 0
    assert "ensemble of 3 models" in capsys.readouterr().out
    ck = load_any(ens)
    assert isinstance(ck, EnsembleCheckpoint)
    assert ck.settings["ensemble_of"] == [str(cv / f"fold_{k}" / "run") for k in range(3)]
    img = png(tmp_path / "in" / "x.png", np.full((30, 30, 3), 100, np.uint8))
    assert main(["predict", "--checkpoint", str(ens), "--out", str(tmp_path / "o"), str(img)]) == 0
    assert (tmp_path / "o" / "x_cup.png").is_file()


def test_ensemble_cli_refuses_a_cv_folder_with_folds_not_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cv = fake_cv(tmp_path / "cv", 3, 2)
    assert main(["ensemble", "--out", str(tmp_path / "e.pt"), str(cv)]) != 0
    assert "fold(s) [2] of 3 not done yet" in capsys.readouterr().err
    assert not (tmp_path / "e.pt").exists()


def test_saved_thresholds_of_an_ensemble_are_used(tmp_path: Path) -> None:
    ens = save_model_ensemble(
        [model_file(tmp_path / "a.pt", 0), model_file(tmp_path / "b.pt", 1)], tmp_path / "e.pt"
    )
    save_with_thresholds(ens, tmp_path / "site.pt", {"cup": 0.3}, "test")
    pred = make_predictor(tmp_path / "site.pt", FP32)
    assert pred.cuts == {"disc": 0.5, "cup": 0.3}
    assert isinstance(load_any(tmp_path / "site.pt"), EnsembleCheckpoint)


def test_evaluate_an_ensemble(tmp_path: Path, synthetic_data: Path) -> None:
    from biounet.evaluate import evaluate_checkpoint

    ens = save_model_ensemble(
        [model_file(tmp_path / "a.pt", 0), model_file(tmp_path / "b.pt", 1)], tmp_path / "e.pt"
    )
    s = evaluate_checkpoint(ens, synthetic_data, "test", tmp_path / "ev", FP32)
    assert s["n_images"] > 0 and set(s["labels"]) == {"disc", "cup"}
    assert 0 <= s["labels"]["cup"]["dice_mean"] <= 1
    # the summary, the printed table and the report say what was scored
    assert s["model"] == "ensemble of 2 single models (unet; probabilities averaged)"
    assert format_summary(s).splitlines()[0] == f"model: {s['model']}"
    assert s["model"] in (tmp_path / "ev" / "report.html").read_text()
    single = evaluate_checkpoint(tmp_path / "a.pt", synthetic_data, "test", tmp_path / "ev1", FP32)
    assert single["model"] == "single model (unet)"


def test_members_saved_thresholds_are_not_the_ensembles(tmp_path: Path, caplog) -> None:
    a = model_file(tmp_path / "a.pt", 0)
    save_with_thresholds(a, tmp_path / "a_site.pt", {"cup": 0.2}, "test")
    ens = save_model_ensemble(
        [tmp_path / "a_site.pt", model_file(tmp_path / "b.pt", 1)], tmp_path / "e.pt"
    )
    assert "a_site.pt: its saved thresholds are not the ensemble's" in caplog.text
    assert make_predictor(ens, FP32).cuts == {"disc": 0.5, "cup": 0.5}
