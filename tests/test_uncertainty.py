"""Uncertainty from flip test-time augmentation: hand-computed entropies and scores, and
``predict --uncertainty`` end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biounet.checkpoint import save_checkpoint
from biounet.cli import main
from biounet.infer import preprocess_spec
from biounet.models import build_model, preset
from biounet.uncertainty import (
    band_width,
    binary_entropy,
    entropy_map,
    tta_probabilities,
    uncertainty_scores,
)


def test_binary_entropy_values() -> None:
    p = np.array([0.0, 1.0, 0.5, 0.25])
    h = 0.25 * math.log2(4) + 0.75 * math.log2(4 / 3)  # 0.8113
    np.testing.assert_allclose(binary_entropy(p), [0, 0, 1, h], atol=1e-6)


def test_flip_equivariant_model_has_the_entropy_of_its_own_probability() -> None:
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 1), dtype=np.uint8)
    probs = tta_probabilities(lambda im: im.transpose(2, 0, 1) / 255.0, img)
    assert probs.shape == (4, 1, 5, 7)
    np.testing.assert_allclose(probs, np.broadcast_to(probs[0], probs.shape), atol=1e-6)
    np.testing.assert_allclose(entropy_map(probs), binary_entropy(img.transpose(2, 0, 1) / 255))


def test_position_bound_model_is_undecided_after_flips() -> None:
    # p = column / (W - 1) whatever the image: the left-right flip, flipped back, gives 1 - p,
    # so the mean over the four views is 0.5 everywhere: entropy 1 bit
    img = np.zeros((4, 6, 3), np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 1, 6), (1, 4, 6))
    probs = tta_probabilities(lambda im: ramp.copy(), img, identity=ramp.copy())
    np.testing.assert_allclose(probs.mean(0), 0.5)
    np.testing.assert_allclose(entropy_map(probs), 1.0, atol=1e-6)


def test_score_is_the_mean_entropy_in_the_dilated_band() -> None:
    shape = (60, 60)
    assert band_width(shape) == 2 and band_width((1000, 400)) == 20
    mask = np.zeros(shape, bool)
    mask[20:30, 20:30] = True  # dilated by 2 (cross-shaped steps): 10x10 + 4 * 2 * 10 + 4 corner px
    ent = np.zeros((2, *shape), np.float32)
    ent[0, 10:40, 10:40] = 0.5
    s = uncertainty_scores(ent, {"a": mask, "b": np.zeros(shape, bool)}, ("a", "b"))
    assert s["uncertainty_a"] == pytest.approx(0.5)
    assert s["uncertainty_b"] == 0.0  # nothing predicted: the whole image counts
    region = 100 + 80 + 4
    assert s["uncertainty"] == pytest.approx(0.5 * region / (region + 3600))


@pytest.mark.slow
def test_predict_uncertainty_writes_maps_and_scores(synthetic_data: Path, tmp_path: Path) -> None:
    cfg = preset("small", in_channels=3, out_channels=2)
    ck = tmp_path / "untrained.pt"
    save_checkpoint(ck, build_model(cfg), cfg, ("disc", "cup"), preprocess_spec(64, 3), {})
    images = [synthetic_data / "images" / f"synth_00{i}.png" for i in (6, 7)]
    args = ["predict", "--checkpoint", str(ck), "--out", str(tmp_path / "p"), "--uncertainty"]
    assert main(["-q", *args, "--precision", "fp32", *map(str, images)]) == 0
    for path in images:
        u = np.asarray(Image.open(tmp_path / "p" / f"{path.stem}_uncertainty.png"))
        assert u.shape == (64, 72) and u.dtype == np.uint8
    with open(tmp_path / "p" / "uncertainty.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["stem"] for r in rows] == ["synth_006", "synth_007"]
    assert set(rows[0]) == {"stem", "file", "uncertainty", "uncertainty_disc", "uncertainty_cup"}
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in r if k.startswith("uncertainty"))


@pytest.mark.slow
def test_evaluate_uncertainty_scores_as_predict_and_calibration(
    synthetic_data: Path, tmp_path: Path
) -> None:
    cfg = preset("small", in_channels=3, out_channels=2)
    ck = tmp_path / "untrained.pt"
    save_checkpoint(ck, build_model(cfg), cfg, ("disc", "cup"), preprocess_spec(64, 3), {})
    common = ["--checkpoint", str(ck), "--precision", "fp32", "--uncertainty"]
    ev = ["evaluate", *common, "--data", str(synthetic_data), "--out", str(tmp_path / "e")]
    assert main(["-q", *ev]) == 0
    test = [synthetic_data / "images" / f"synth_00{i}.png" for i in (6, 7, 8)]
    assert main(["-q", "predict", *common, "--out", str(tmp_path / "p"), *map(str, test)]) == 0

    def rows(path: Path) -> dict[str, dict[str, str]]:
        with open(path, newline="") as f:
            return {r["stem"]: r for r in csv.DictReader(f)}

    # evaluate's per-image scores are predict --uncertainty's, to the digit
    by_eval, by_predict = (
        rows(tmp_path / "e" / "per_image_measures.csv"),
        rows(tmp_path / "p" / "uncertainty.csv"),
    )
    assert sorted(by_eval) == sorted(by_predict) == ["synth_006", "synth_007", "synth_008"]
    for stem, r in by_predict.items():
        for k in ("uncertainty", "uncertainty_disc", "uncertainty_cup"):
            assert float(by_eval[stem][k]) == float(r[k])
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    u = summary["uncertainty"]
    assert set(u) >= {"mean_over_labels", "disc", "cup"} and u["dice_below"] == 0.8
    for k in ("mean_over_labels", "disc", "cup"):
        assert u[k]["n_images"] == 3
        assert u[k]["auroc"] is None or 0 <= u[k]["auroc"] <= 1
    cal = json.loads((tmp_path / "e" / "calibration.json").read_text())
    for lb in ("disc", "cup"):
        assert sum(cal["labels"][lb]["count"]) == 3 * 64 * 72  # every pixel, at the mask's size
        assert summary["labels"][lb]["ece"] == cal["labels"][lb]["ece"]
        assert 0 <= summary["labels"][lb]["ece"] <= 1
    page = (tmp_path / "e" / "report.html").read_text()
    assert 'alt="reliability diagram"' in page and 'data-key="uncertainty"' in page
    assert "images with Dice &lt; 0.8</th><th>AUROC</th>" in page  # the uncertainty table
