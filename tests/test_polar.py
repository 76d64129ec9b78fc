"""Polar resampling of disc-centred crops: geometry checked by hand, the round trip, and a fundus
pipeline trained on polar crops that predict maps back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from biounet.fundus.polar import from_polar, to_polar


def _centres(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(size, size) x and y of each pixel centre in grid_sample coordinates (-1..1 = outer edges)."""
    c = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return xx, yy


def test_a_centred_disc_becomes_a_band_of_rows() -> None:
    # a disc of radius 0.5 (x the half side) -> rows with r_i = (i + 0.5) / 64 < 0.5: rows 0..31
    xx, yy = _centres(64)
    disc = (xx**2 + yy**2 <= 0.5**2).float()[None, None]
    p = to_polar(disc, "nearest")[0, 0]
    assert p.shape == (64, 64)
    assert bool((p[:31] == 1).all()) and bool((p[33:] == 0).all())  # one row of rasterisation slack


def test_rows_are_radius_and_columns_are_angle_counter_clockwise_from_plus_x() -> None:
    xx, yy = _centres(64)
    img = torch.stack([xx, yy])[None]  # each pixel holds its own coordinates
    p = to_polar(img)[0]
    i, j = 31, 15  # r = 31.5 / 64, theta = 2 pi 15.5 / 64 (87.2 degrees: y down)
    r, t = 31.5 / 64, 2 * math.pi * 15.5 / 64
    assert abs(float(p[0, i, j]) - r * math.cos(t)) < 1e-4
    assert abs(float(p[1, i, j]) - r * math.sin(t)) < 1e-4


def test_polar_round_trip_returns_a_smooth_image_inside_the_circle() -> None:
    xx, yy = _centres(96)
    img = torch.stack([torch.sin(3 * xx) + yy, torch.cos(2 * yy) * xx])[None]
    back = from_polar(to_polar(img))
    inside = xx**2 + yy**2 < 0.95**2
    assert back.shape == img.shape
    assert float((back - img)[0][:, inside].abs().max()) < 0.01
    # across the angle's wrap-around (theta = 0, the +x axis) there is no seam either
    assert float((back - img)[0][:, 40:56, 60:90].abs().max()) < 0.01


def test_non_square_crops_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        to_polar(torch.zeros(1, 1, 8, 10))
    with pytest.raises(ValueError, match="square"):
        from_polar(torch.zeros(1, 1, 8, 10))


def test_a_polar_pipeline_records_it_and_predicts_in_image_coordinates(
    synthetic_data, tiny_fundus, tmp_path
) -> None:
    from biounet.checkpoint import load_any
    from biounet.fundus.pipeline import FundusPredictor, fit_fundus, save_ensemble
    from biounet.fundus.roi import Roi

    polar_ck = fit_fundus(tiny_fundus(synthetic_data, polar=True), tmp_path / "polar")
    plain_ck = fit_fundus(tiny_fundus(synthetic_data), tmp_path / "plain")
    ck = load_any(polar_ck)
    assert ck.parts["roi"].preprocess["polar"] is True
    assert "polar" not in load_any(plain_ck).parts["roi"].preprocess
    pred = FundusPredictor(ck, precision="fp32", tta=True)
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    r = pred.predict(img)
    assert r.prob.shape == (2, 50, 70) and not (r.masks["cup"] & ~r.masks["disc"]).any()
    # the crop's probabilities are the polar model's output mapped back to the crop
    roi = Roi(25.0, 35.0, 30.0)
    from biounet.fundus.roi import crop_roi_windows
    from biounet.infer import forward_probs

    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    crop = crop_roi_windows(x, [roi], 32, scale=1 / 255, padding="reflection")
    want = from_polar(
        forward_probs(pred.roi_models[0], to_polar(crop), pred.device, pred.precision)
    )[0]
    pred.tta = False
    torch.testing.assert_close(pred.roi_probs(img, roi), want)
    # an ensemble of a polar and a Cartesian member runs each its own way
    mixed = FundusPredictor(load_any(save_ensemble([polar_ck, plain_ck], tmp_path / "e.pt")))
    assert mixed.polar == [True, False]
    assert mixed.predict(img).prob.shape == (2, 50, 70)
