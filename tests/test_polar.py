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
    # on the whole image: the polar maps read straight into the image's pixels, flips undone, agree
    # with the crop's probabilities pasted (one resampling fewer, so not to the last bit)
    from biounet.fundus.roi import paste_roi

    for pred.tta in (False, True):
        direct = pred.image_probs(img, roi)
        via_crop = paste_roi(pred.roi_probs(img, roi), roi, 50, 70)
        assert direct.shape == (2, 50, 70)
        assert float(np.abs(direct - via_crop).mean()) < 0.01, pred.tta
    # an ensemble of a polar and a Cartesian member runs each its own way
    mixed = FundusPredictor(load_any(save_ensemble([polar_ck, plain_ck], tmp_path / "e.pt")))
    assert mixed.polar == [True, False]
    assert mixed.predict(img).prob.shape == (2, 50, 70)


def test_paste_polar_reads_each_flip_back_to_the_image_like_the_crop_itself() -> None:
    from biounet.fundus.roi import Roi, paste_polar, paste_roi

    xx, yy = _centres(64)
    crop = torch.stack([torch.sin(3 * xx) + yy, torch.cos(2 * yy) * xx])  # (2, 64, 64), smooth
    flips = [(), (-1,), (-2,), (-2, -1)]
    polar = torch.cat([to_polar(crop.flip(f)[None] if f else crop[None]) for f in flips])
    roi = Roi(60.0, 75.0, 100.0)  # a 100-px ROI, partly past the image's top edge
    got = paste_polar(polar, flips, roi, 110, 150)
    want = paste_roi(crop, roi, 110, 150)
    assert got.shape == want.shape == (2, 110, 150)
    yy_img, xx_img = np.mgrid[:110, :150]
    r = np.hypot(yy_img - 60.0, xx_img - 75.0) / 50
    # away from the centre, where the innermost polar ring (r = 0.5 / 64) stands for r = 0
    inside = (r > 0.05) & (r < 0.8)
    assert float(np.abs(got - want)[:, inside].max()) < 0.01
    assert (got[:, :, :20] == 0).all() and (got[:, :, 130:] == 0).all()  # 0 outside the ROI


def test_paste_polar_keeps_a_sharp_disc_edge_where_the_crop_round_trip_moves_it() -> None:
    """A disc as a hard step between polar rows 12 and 13 (radius 13 / 32 x the ROI's half side,
    where bilinear sampling crosses 0.5): read straight into a 400-px ROI its edge stays within a
    pixel of the 81.25-px circle; through a 32-px Cartesian crop (12.5 image px per crop px) the
    area moves several times more."""
    from biounet.fundus.roi import Roi, paste_polar, paste_roi

    s = 32
    polar = torch.zeros(1, 1, s, s)
    polar[..., :13, :] = 1
    roi = Roi(200.0, 200.0, 400.0)
    direct = paste_polar(polar, [()], roi, 400, 400)[0] > 0.5
    via_crop = paste_roi(from_polar(polar)[0], roi, 400, 400)[0] > 0.5
    true_area = math.pi * (13 / 32 * 200) ** 2
    assert abs(direct.sum() / true_area - 1) < 2 / 81.25  # radius within 1 px
    assert 4 * abs(direct.sum() - true_area) < abs(via_crop.sum() - true_area)


def test_the_area_weighted_loss_reaches_the_crop_model_only_and_needs_polar_crops() -> None:
    from biounet.errors import BiounetError
    from biounet.fundus.pipeline import FundusConfig, stage_configs

    loc, roi = stage_configs(FundusConfig(polar=True, polar_area_loss=True))
    assert roi.train.pixel_weight == "polar_area" and loc.train.pixel_weight == "uniform"
    assert stage_configs(FundusConfig(polar=True))[1].train.pixel_weight == "uniform"
    with pytest.raises(BiounetError, match="polar"):
        FundusConfig(polar_area_loss=True)


def test_a_pipeline_trained_with_the_area_weighted_loss_records_it(
    synthetic_data, tiny_fundus, tmp_path
) -> None:
    import yaml

    from biounet.checkpoint import load_any
    from biounet.fundus.pipeline import fit_fundus

    ck = fit_fundus(tiny_fundus(synthetic_data, polar=True, polar_area_loss=True), tmp_path / "r")
    saved = yaml.safe_load((tmp_path / "r" / "roi" / "config.yaml").read_text())
    assert saved["train"]["pixel_weight"] == "polar_area"
    assert load_any(ck).parts["roi"].preprocess["polar"] is True
