"""The two-stage fundus pipeline: ROI geometry, disc choice, training, prediction on full images and
crops, ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.checkpoint import PipelineCheckpoint, load_any
from biounet.fundus.pipeline import FundusPredictor, _moved, fit_fundus, save_ensemble
from biounet.fundus.roi import Roi, crop_rois, disc_roi, paste_roi, roi_theta
from biounet.metrics import binary_scores


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_disc_roi_is_centred_and_sized_from_the_disc() -> None:
    m = np.zeros((100, 120), bool)
    m[20:40, 50:70] = True  # 20 x 20 box: centre (29.5, 59.5)
    assert disc_roi(m, scale=2.0) == Roi(29.5, 59.5, 40.0)
    assert disc_roi(np.zeros((5, 5), bool)) is None


def test_disc_roi_with_score_prefers_a_compact_blob_over_a_larger_streak() -> None:
    m = np.zeros((200, 200), bool)
    m[5:195, 0:12] = True  # a long bright streak along the edge: 2280 px
    disc = _disc(200, 200, 100, 120, 25)  # a compact disc: ~1960 px
    m |= disc
    assert disc_roi(m).cx < 12  # the largest component is the streak
    roi = disc_roi(m, score=m.astype(float))
    assert abs(roi.cy - 100) <= 1 and abs(roi.cx - 120) <= 1


def test_crop_then_paste_returns_the_mask_exactly() -> None:
    h, w = 90, 130
    d = _disc(h, w, 40, 80, 12)
    roi = disc_roi(d, 2.0)
    t = torch.from_numpy(d.astype(np.float32))[None, None]
    crop = crop_rois(t, roi_theta([roi], [(h, w)]), 64)
    back = paste_roi(crop[0], roi, h, w)
    assert binary_scores(back[0] > 0.5, d)["dice"] > 0.98


def test_roi_moved_thresholds() -> None:
    a = Roi(100, 100, 200)
    assert not _moved(a, Roi(105, 95, 210))
    assert _moved(a, Roi(120, 100, 200))  # 10 % of the side
    assert _moved(a, Roi(100, 100, 150))  # 0.75 x


def test_fit_fundus_then_predict_full_images_crops_and_an_ensemble(
    synthetic_data, tiny_fundus, tmp_path
) -> None:
    ck_path = fit_fundus(tiny_fundus(synthetic_data), tmp_path / "run")
    for sub in ("locator/best.pt", "roi/best.pt", "roi/metrics.csv", "fundus.pt"):
        assert (tmp_path / "run" / sub).is_file(), sub
    ck = load_any(ck_path)
    assert isinstance(ck, PipelineCheckpoint) and set(ck.parts) == {"locator", "roi"}
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    for kind in ("auto", "full", "crop"):
        r = FundusPredictor(ck, precision="fp32", tta=True, input_kind=kind).predict(img)
        assert r.prob.shape == (2, 50, 70)
        assert set(r.masks) == {"disc", "cup"} and r.masks["disc"].shape == (50, 70)
        assert not (
            r.masks["cup"] & ~r.masks["disc"]
        ).any()  # post-processing keeps cup inside disc
    ens = save_ensemble([ck_path, ck_path], tmp_path / "ens.pt")
    e = FundusPredictor(load_any(ens), precision="fp32")
    assert len(e.members) == 2
    one = FundusPredictor(ck, precision="fp32").predict(img)
    two = e.predict(img)
    np.testing.assert_allclose(one.prob, two.prob, atol=1e-5)  # two identical members = one
    from biounet.evaluate import model_description
    from biounet.predictor import PredictOptions, make_predictor

    opts = PredictOptions(precision="fp32")
    assert model_description(make_predictor(ck_path, opts)) == "fundus pipeline"
    assert model_description(make_predictor(ens, opts)) == (
        "fundus pipeline ensemble of 2 pipelines (probabilities averaged)"
    )


def test_ensemble_cli_refuses_mixed_members(synthetic_data, tmp_path, capsys) -> None:
    from biounet.checkpoint import save_checkpoint, save_pipeline
    from biounet.cli import main
    from biounet.infer import preprocess_spec
    from biounet.models import build_model, preset

    cfg = preset("small", in_channels=3, out_channels=2)
    save_checkpoint(
        tmp_path / "m.pt", build_model(cfg), cfg, ("disc", "cup"), preprocess_spec(32, 3)
    )
    pipe = tmp_path / "fundus.pt"
    save_pipeline(pipe, {"locator": tmp_path / "m.pt", "roi": tmp_path / "m.pt"}, {})
    m, e = str(tmp_path / "m.pt"), str(tmp_path / "e.pt")
    assert main(["ensemble", "--out", e, m]) == 2  # one member
    assert "at least two members" in capsys.readouterr().err
    assert main(["ensemble", "--out", e, str(pipe), m]) == 2  # a pipeline, then a single model
    err = capsys.readouterr().err
    assert "m.pt: not a fundus pipeline checkpoint" in err and "Traceback" not in err
    assert main(["ensemble", "--out", e, m, str(pipe)]) == 2  # a single model, then a pipeline
    err = capsys.readouterr().err
    assert "fundus.pt: not a single-model checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "e.pt").exists()


def test_window_crops_equal_whole_image_crops() -> None:
    """crop_roi_windows converts only the reachable window; it must sample exactly what a crop of
    the whole image samples, rotated, flipped, at the border and wholly outside the image."""
    from biounet.fundus.roi import crop_roi_windows

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 90, 130), generator=g, dtype=torch.uint8)
    rois = [Roi(40, 60, 30), Roi(5, 125, 40), Roi(80, 3, 25.5), Roi(300, 300, 20)]
    angle = torch.tensor([0.3, -0.35, 0.0, 0.1])
    flip = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    for mode in ("bilinear", "nearest"):
        whole = crop_rois(
            imgs.float() / 255, roi_theta(rois, [(90, 130)] * 4, angle, flip), 32, mode
        )
        win = crop_roi_windows(imgs, rois, 32, mode, angle, flip, scale=1 / 255)
        torch.testing.assert_close(win, whole, atol=1e-5, rtol=0)
    assert win[3].abs().sum() == 0  # outside the image: zeros


def test_window_crops_of_a_list_of_differently_sized_images_equal_per_image_crops() -> None:
    from biounet.fundus.roi import crop_roi_windows

    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (3, 50, 70), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 90, 40), generator=g, dtype=torch.uint8)
    rois = [Roi(20, 30, 24), Roi(60, 20, 30)]
    both = crop_roi_windows([a, b], rois, 16, scale=1 / 255)
    assert both.shape == (2, 3, 16, 16)
    for k, img in enumerate((a, b)):
        one = crop_roi_windows(img[None], rois[k : k + 1], 16, scale=1 / 255)
        assert torch.equal(both[k], one[0])


def test_reflection_padding_mirrors_the_image_past_its_edges() -> None:
    from biounet.fundus.roi import crop_roi_windows

    row = torch.arange(8, dtype=torch.float32).repeat(8, 1)[None]  # (1, 8, 8): value = column
    roi = Roi(3.5, 3.5, 16.0)  # twice the image, centred: samples reach 4 px past each edge
    z = crop_roi_windows([row], [roi], 16)[0, 0]
    r = crop_roi_windows([row], [roi], 16, padding="reflection")[0, 0]
    torch.testing.assert_close(z[4:12, 4:12], r[4:12, 4:12])  # the same inside the image
    assert z[8, :4].tolist() == [0, 0, 0, 0]  # zeros past the left edge ...
    torch.testing.assert_close(r[8, :4], torch.tensor([3.0, 2, 1, 0]))  # ... or the mirror image
    torch.testing.assert_close(r[8, 12:], torch.tensor([7.0, 6, 5, 4]))


def test_extent_is_the_larger_span() -> None:
    from biounet.fundus.pipeline import _extent

    m = np.zeros((10, 10), bool)
    assert _extent(m) == 0
    m[2:5, 1:8] = True
    assert _extent(m) == 7


class _FakePredictor(FundusPredictor):
    """The predictor's ROI logic with a stand-in ROI model: a disc of ``fill`` x the crop's side
    (the real disc, read at roi_scale 2, fills 0.5), cup half as wide, wherever the crop is."""

    def __init__(self, fill: float, input_kind: str = "auto") -> None:
        self.labels, self.roi_scale, self.roi_size, self.threshold = ("disc", "cup"), 2.0, 64, 0.5
        self.cuts = {"disc": 0.5, "cup": 0.5}
        self.fill, self.input_kind = fill, input_kind
        self.postprocess, self.fit_ellipse = True, False
        self.polar = [False]  # a Cartesian stand-in: image_probs pastes its roi_probs
        self.roi = type("R", (), {"preprocess": {"in_channels": 3}})()
        self.tta_scales = (1.0,)

    def locate(self, img: np.ndarray) -> tuple[Roi, list[str]]:
        return Roi(100.0, 120.0, 60.0), []  # a 30-px disc at (100, 120): plausible in 200 x 240

    def roi_probs(self, img: np.ndarray, roi: Roi) -> torch.Tensor:
        r = self.roi_size
        disc = _disc(r, r, r // 2, r // 2, round(self.fill * r / 2))
        cup = _disc(r, r, r // 2, r // 2, round(self.fill * r / 4))
        return torch.from_numpy(np.stack([disc, cup]).astype(np.float32))


def test_scale_tta_averages_concentric_readings_and_keeps_the_scale_1_roi_and_flags() -> None:
    """The stand-in draws a disc of half the crop's side wherever the crop is: at ROI sides 0.8,
    1 and 1.25 x the found one (320 px), discs of radius 64, 80 and 100 px about one centre. Their
    mean is 1 inside 64 px, 2/3 out to 80, 1/3 out to 100 (6 px left at each edge, where the
    64-px stand-in is blurred by the resampling): the mask (> 0.5) is the scale-1 disc."""
    img = np.full((800, 960, 3), 100, np.uint8)
    plain = _FakePredictor(fill=0.5, input_kind="full")
    multi = _FakePredictor(fill=0.5, input_kind="full")
    multi.tta_scales = (0.8, 1.0, 1.25)
    for p in (plain, multi):
        p.locate = lambda img: (Roi(400.0, 480.0, 320.0), [])  # type: ignore[method-assign]
    a, b = plain.predict(img), multi.predict(img)
    assert b.roi == a.roi and b.flags == a.flags == []
    yy, xx = np.mgrid[:800, :960]
    dist = np.hypot(yy - a.roi.cy, xx - a.roi.cx)
    r = a.roi.side / 4
    for lo, hi, want in ((0, 0.8 * r, 1), (0.8 * r, r, 2 / 3), (r, 1.25 * r, 1 / 3)):
        ring = (dist > lo + 6) & (dist < hi - 6)
        assert ring.sum() > 100
        assert abs(float(np.median(b.prob[0][ring])) - want) < 0.01
        assert np.mean(np.abs(b.prob[0][ring] - want) < 0.05) > 0.9
    assert binary_scores(b.masks["disc"], a.masks["disc"])["dice"] > 0.99


def test_a_disc_cut_by_the_image_edge_is_flagged() -> None:
    """A crop not centred on the disc: the disc reaches the image's edge, so its ratios are not
    the disc's; a disc clear of the edges raises no such flag."""
    from biounet.fundus.pipeline import cut_by_border

    img = np.full((200, 240, 3), 100, np.uint8)
    p = _FakePredictor(fill=0.5, input_kind="full")
    p.locate = lambda img: (Roi(8.0, 120.0, 60.0), [])  # type: ignore[method-assign]
    r = p.predict(img)
    assert r.masks["disc"][0].any() and "disc_cut_by_border" in r.flags
    plain = _FakePredictor(fill=0.5, input_kind="full").predict(img)
    assert "disc_cut_by_border" not in plain.flags
    yy, xx = np.mgrid[:100, :100]
    centred = (yy - 49.5) ** 2 / 52**2 + (xx - 49.5) ** 2 / 40**2 <= 1  # grazes top and bottom
    assert centred[0].any() and not cut_by_border(centred)
    shifted = (yy - 49.5) ** 2 / 30**2 + (xx - 10) ** 2 / 30**2 <= 1  # centre 40 % off: cut
    assert cut_by_border(shifted)
    inside = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2  # off-centre but clear of the edges
    assert not cut_by_border(inside)


def test_scale_tta_is_skipped_without_a_disc_and_bad_factors_are_refused() -> None:
    from biounet.errors import BiounetError
    from biounet.fundus.pipeline import check_scales

    p = _FakePredictor(fill=0.5, input_kind="full")
    p.tta_scales = (0.8, 1.0, 1.25)
    p.locate = lambda img: (p.crop_roi(img), ["disc_not_found"])  # type: ignore[method-assign]
    calls: list[Roi] = []
    inner = p.image_probs
    p.image_probs = lambda img, roi: calls.append(roi) or inner(img, roi)  # type: ignore[method-assign]
    p.predict(np.full((200, 240, 3), 100, np.uint8))
    assert all(r.side == calls[0].side for r in calls)  # no read at 0.8 or 1.25 x
    assert check_scales([1, 1.25]) == (1.0, 1.25)
    for bad in ((), (0.3, 1.0), (1.0, 2.5)):
        with pytest.raises(BiounetError, match="tta scales"):
            check_scales(bad)


class _ScaleBoundPredictor(_FakePredictor):
    """A stand-in ROI model that segments the bright disc of the image exactly, but only when the
    ROI is within 0.8-1.25 x its trained scale (side = 2 x the disc's extent); at any other scale it
    answers a small centred blob, as a real model does when the disc is far from its trained size."""

    def __init__(self, disc_extent: float) -> None:
        super().__init__(fill=0.5, input_kind="crop")
        self.disc_extent = disc_extent

    def roi_probs(self, img: np.ndarray, roi: Roi) -> torch.Tensor:
        from biounet.fundus.roi import crop_roi_windows

        if 0.8 <= roi.side / (2 * self.disc_extent) <= 1.25:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
            disc = crop_roi_windows(x, [roi], self.roi_size, scale=1 / 255)[0, 0] > 0.5
            return torch.stack([disc, disc]).float()
        self.fill = 0.2
        return super().roi_probs(img, roi)


def test_a_crop_is_read_at_the_scale_where_the_disc_reproduces_its_roi() -> None:
    # a crop whose disc fills 60 % of its area: 70 px across in an 80-px image
    d = _disc(80, 80, 40, 40, 35)
    img = np.repeat(np.where(d, 255, 120).astype(np.uint8)[..., None], 3, axis=2)  # retina round
    r = _ScaleBoundPredictor(disc_extent=71).predict(img)
    assert r.flags == [] and 0.8 <= r.roi.side / 142 <= 1.25
    assert binary_scores(r.masks["disc"], d)["dice"] > 0.95


def test_a_photograph_with_an_implausibly_small_located_disc_is_read_at_a_searched_size() -> None:
    """The locator finds the disc's centre but a 10-px blob (2.5 % of the side: under MIN_DISC_SPAN);
    the ROI model, right only near its trained scale, is tried at DISC_SPANS of the side around
    that centre, and the self-consistent reading (the whole 81-px disc) is kept and flagged."""
    from biounet.fundus.pipeline import MIN_DISC_SPAN

    d = _disc(400, 400, 200, 210, 40)
    img = np.repeat((d * 255).astype(np.uint8)[..., None], 3, axis=2)
    p = _ScaleBoundPredictor(disc_extent=81)
    p.input_kind = "full"
    p.locate = lambda img: (Roi(195.0, 205.0, 20.0), [])  # type: ignore[method-assign]
    located_span = 20.0 / 2 / 400  # ROI side / roi_scale / image side
    assert located_span < MIN_DISC_SPAN
    r = p.predict(img)
    assert r.flags == ["disc_size_searched"] and 0.8 <= r.roi.side / 162 <= 1.25
    assert binary_scores(r.masks["disc"], d)["dice"] > 0.95
    # a plausible located disc (81 px: 20 %) is read as before, no search
    p.locate = lambda img: (Roi(200.0, 210.0, 162.0), [])  # type: ignore[method-assign]
    p.best_reading = lambda *a: pytest.fail("searched a plausible disc")  # type: ignore
    assert p.predict(img).flags == []


def test_a_roi_model_that_oversegments_is_not_followed_but_flagged() -> None:
    img = np.zeros((200, 240, 3), np.uint8)
    # agreeing models: the ROI stays (no noticeable move), nothing flagged
    ok = _FakePredictor(fill=0.5).predict(img)
    assert ok.flags == [] and ok.roi == Roi(100.0, 120.0, 60.0)
    # an ROI model whose disc is 1.5 x the locator's: following it would grow the ROI without end;
    # the locator's ROI is kept, the image flagged, and not re-read as a crop
    fake = _FakePredictor(fill=0.75)
    bad = fake.predict(img)
    assert bad.flags == ["disc_size_mismatch"] and bad.roi == Roi(100.0, 120.0, 60.0)
    assert fake.last_input_kind == "full"
    # a moderate disagreement (1.2 x) is followed: the ROI is re-centred and re-sized
    near = _FakePredictor(fill=0.6).predict(img)
    assert near.flags == [] and near.roi.side > 60.0


def test_fov_border_tells_a_photograph_from_a_crop() -> None:
    from biounet.fundus.pipeline import has_fov_border

    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    fov = (yy - 60) ** 2 + (xx - 80) ** 2 <= 70**2  # a circular field of view, black outside
    photo = np.where(fov[..., None], 150, 3).astype(np.uint8).repeat(3, axis=2)
    assert has_fov_border(photo)
    assert not has_fov_border(photo[30:90, 50:110])  # a crop inside the field of view
    edge = photo.copy()
    edge[:, :40] = 150  # one side of the surround lost: half the corners still dark
    assert not has_fov_border(edge)


def test_auto_reads_an_image_without_a_fov_border_as_a_crop_first() -> None:
    d = _disc(80, 80, 40, 40, 35)
    img = np.repeat(np.where(d, 255, 120).astype(np.uint8)[..., None], 3, axis=2)
    p = _ScaleBoundPredictor(disc_extent=71)
    p.input_kind = "auto"
    r = p.predict(img)
    assert p.last_input_kind == "crop" and binary_scores(r.masks["disc"], d)["dice"] > 0.95


def test_auto_reads_an_image_with_a_fov_border_as_a_photograph_only() -> None:
    yy, xx = np.mgrid[0:200, 0:240]
    fov = (yy - 100) ** 2 + (xx - 120) ** 2 <= 95**2  # a circular field of view, black outside
    photo = np.where(fov[..., None], 140, 2).astype(np.uint8).repeat(3, axis=2)
    small = _FakePredictor(fill=0.5)
    small.locate = lambda img: (Roi(100.0, 120.0, 30.0), [])  # type: ignore[method-assign]
    # disc 1.5 x the locator's (flagged mismatch); a 15 px disc (flagged unusual); a plausible one
    for p in (_FakePredictor(fill=0.75), small, _FakePredictor(fill=0.5)):
        p.read_crop = lambda img: pytest.fail("a photograph was re-read as a crop")  # type: ignore
        r = p.predict(photo)
        assert p.last_input_kind == "full" and r.masks["disc"].any()
    assert small.predict(photo).flags == ["disc_size_unusual"]


def _reading(h: int, w: int, cy: int, cx: int, r: int, flags: list[str] | None = None):
    """A stand-in reading: (ROI, (2, H, W) probabilities of a disc of radius r at (cy, cx) and a
    cup half as wide, flags)."""
    disc, cup = _disc(h, w, cy, cx, r), _disc(h, w, cy, cx, r // 2)
    prob = np.stack([disc, cup]).astype(np.float32)
    return Roi(float(cy), float(cx), 4.0 * r), prob, list(flags or [])


def test_a_crop_reading_whose_disc_fills_the_image_or_hardly_any_of_it_is_doubtful() -> None:
    """No disc-centred crop has a disc filling the image (a featureless picture) or under 7 % of
    it (a texture taken for a disc); an image read as a crop and a photograph that find different
    plausible discs is flagged; a photograph given as a crop is flagged."""
    img = np.full((100, 100, 3), 120, np.uint8)
    cases = {  # crop reading, photograph reading -> kind, flags
        "fills": (_reading(100, 100, 50, 50, 70), _reading(100, 100, 50, 50, 8, ["disc_not_found"]),
                  "crop", ["disc_size_unusual"]),
        "speck": (_reading(100, 100, 50, 50, 6), _reading(100, 100, 50, 50, 8, ["disc_low_confidence"]),
                  "crop", ["disc_size_unusual"]),
        "doubtful crop, sure photograph": (_reading(100, 100, 50, 50, 70), _reading(100, 100, 30, 60, 9),
                                            "full", []),
        "two plausible discs": (_reading(100, 100, 50, 50, 30), _reading(100, 100, 30, 70, 9),
                                "crop", ["crop_or_photograph_unclear"]),
        "one disc, two readings": (_reading(100, 100, 50, 50, 30), _reading(100, 100, 50, 50, 29),
                                   "crop", []),
        "a disc and a smaller one": (_reading(100, 100, 50, 50, 30), _reading(100, 100, 50, 50, 26),
                                     "crop", ["crop_or_photograph_unclear"]),
    }  # fmt: skip
    for name, (crop, photo, kind, flags) in cases.items():
        p = _FakePredictor(fill=0.5)
        p.read_crop = lambda img, c=crop: (c[0], c[1], list(c[2]))  # type: ignore[method-assign]
        p.read_photo = lambda img, f=photo: (f[0], f[1], list(f[2]))  # type: ignore[method-assign]
        r = p.predict(img)
        assert (p.last_input_kind, r.flags) == (kind, flags), name
    yy, xx = np.mgrid[0:100, 0:100]
    photo_img = np.where(((yy - 50) ** 2 + (xx - 50) ** 2 <= 48**2)[..., None], 140, 2)
    p = _FakePredictor(fill=0.5, input_kind="crop")
    p.read_crop = lambda img: _reading(100, 100, 50, 50, 30)  # type: ignore[method-assign]
    r = p.predict(photo_img.astype(np.uint8).repeat(3, axis=2))
    assert r.flags == ["looks_like_a_photograph"]


def test_training_crops_stay_inside_the_kept_window_at_any_scale_jitter(tmp_path) -> None:
    """load_full keeps only a window around the disc; a wide scale jitter (crops up to 2.5 x the ROI,
    rotated, shifted) must still sample image everywhere, never the zeros past the window: on a
    uniform photograph every crop stays uniform (photometric augmentation is per image)."""
    import math

    from PIL import Image

    from biounet.config import DataConfig, RunConfig, TrainConfig
    from biounet.data.folder import Sample
    from biounet.fundus.train_roi import load_full, roi_batches, window_half

    assert window_half(1.25) == 1.0  # the default jitter keeps the window it always had
    assert window_half(1.6) == pytest.approx(1.6 / math.sqrt(2) + 0.08)
    Image.fromarray(np.full((400, 400, 3), 204, np.uint8)).save(tmp_path / "im.png")
    disc = _disc(400, 400, 200, 200, 20)
    Image.fromarray(disc.astype(np.uint8) * 255).save(tmp_path / "disc.png")
    Image.fromarray(_disc(400, 400, 200, 200, 8).astype(np.uint8) * 255).save(tmp_path / "cup.png")
    s = Sample(
        "im", tmp_path / "im.png", {"disc": tmp_path / "disc.png", "cup": tmp_path / "cup.png"}
    )
    cfg = RunConfig(data=DataConfig(image_size=32), train=TrainConfig(batch_size=8))
    gen = torch.Generator().manual_seed(0)
    wide = (2.0, 2.5)  # crops 2-2.5 x the ROI: their corners reach past the 1.0 window
    full = load_full([s] * 8, ("disc", "cup"), 3, 2.0, max_scale=wide[1])
    assert full.images[0].shape[-1] >= 2 * 82 * window_half(2.5)  # disc extent 41: ROI side 82
    for x, y in roi_batches(full, cfg, gen, scale=wide):
        spread = x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))
        assert float(spread.max()) < 1e-4
        assert y.shape == (8, 2, 32, 32) and bool((y[:, 1] <= y[:, 0]).all())
    narrow = load_full([s] * 8, ("disc", "cup"), 3, 2.0)  # the 1.0 window: too small for 2 x
    spread = [
        float((x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).max())
        for _ in range(4)
        for x, _ in roi_batches(narrow, cfg, gen, scale=wide)
    ]
    assert max(spread) > 0.5


def test_soft_targets_read_the_agreement_maps_and_name_a_missing_one(tmp_path) -> None:
    """load_full(soft=True): the ROI from the binary disc, the targets from softmaps/<label>/ scaled
    to [0, 1] (Drishti-GS1's levels 0/64/128/191/255 -> 0, 0.25, 0.5, 0.75, 1)."""
    from PIL import Image

    from biounet.config import DataConfig, RunConfig, TrainConfig
    from biounet.data.folder import Sample
    from biounet.errors import BiounetError
    from biounet.fundus.train_roi import load_full, roi_batches, soft_map_path

    for d in ("images", "masks/disc", "masks/cup", "softmaps/disc", "softmaps/cup"):
        (tmp_path / d).mkdir(parents=True)
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(tmp_path / "images/a.png")
    disc, cup = _disc(120, 120, 60, 60, 20), _disc(120, 120, 60, 60, 8)
    for lb, m in (("disc", disc), ("cup", cup)):
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / f"masks/{lb}/a.png")
    # agreement: 255 inside the mask, 64 (one expert of four) in a 3-px ring outside it
    ring_d, ring_c = _disc(120, 120, 60, 60, 23) & ~disc, _disc(120, 120, 60, 60, 11) & ~cup
    for lb, m, ring in (("disc", disc, ring_d), ("cup", cup, ring_c)):
        soft = np.where(m, 255, np.where(ring, 64, 0)).astype(np.uint8)
        Image.fromarray(soft).save(tmp_path / f"softmaps/{lb}/a.png")
    s = Sample(
        "a",
        tmp_path / "images/a.png",
        {"disc": tmp_path / "masks/disc/a.png", "cup": tmp_path / "masks/cup/a.png"},
    )
    assert soft_map_path(s.masks["cup"], "cup") == tmp_path / "softmaps/cup/a.png"
    hard, soft = (load_full([s], ("disc", "cup"), 3, 2.0, soft=v) for v in (False, True))
    assert hard.rois == soft.rois  # the ROI comes from the binary disc either way
    assert set(torch.unique(soft.masks[0]).tolist()) == {0, 64, 255}
    cfg = RunConfig(data=DataConfig(image_size=64, augment=False), train=TrainConfig(batch_size=1))
    _, y = next(roi_batches(soft, cfg, torch.Generator().manual_seed(0), jitter=0, scale=(1, 1)))
    torch.testing.assert_close(torch.unique(y), torch.tensor([0.0, 64 / 255, 1.0]))
    (tmp_path / "softmaps/cup/a.png").unlink()
    with pytest.raises(BiounetError, match=r"softmaps/cup/a.png: soft targets need"):
        load_full([s], ("disc", "cup"), 3, 2.0, soft=True)


def test_soft_targets_without_agreement_maps_stop_before_training(
    synthetic_data, tmp_path, capsys
) -> None:
    """The CLI names the missing map and trains nothing; --soft-targets is refused where it would
    be ignored (the plain pipeline, cv)."""
    from biounet.cli import main

    out = tmp_path / "run"
    args = ["--data", str(synthetic_data), "--out", str(out), "--soft-targets"]
    assert main(["train", "--pipeline", "fundus", *args, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "softmaps/disc/synth_" in err and "soft targets need" in err
    assert "Traceback" not in err and not (out / "locator").exists()
    assert main(["train", *args]) == 2
    assert "only with --pipeline fundus" in capsys.readouterr().err
    assert main(["cv", *args]) == 2
    assert "--soft-targets, --polar" in capsys.readouterr().err


def test_polar_area_loss_without_polar_crops_is_refused_before_training(
    synthetic_data, tmp_path, capsys
) -> None:
    from biounet.cli import main

    out = tmp_path / "run"
    args = ["--data", str(synthetic_data), "--out", str(out), "--polar-area-loss"]
    assert main(["train", "--pipeline", "fundus", *args, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs polar crops" in err and "Traceback" not in err and not out.exists()
    assert main(["train", *args]) == 2
    assert "only with --pipeline fundus" in capsys.readouterr().err
    assert main(["cv", *args, "--polar"]) == 2
    assert "--polar-area-loss and --locator-grey are not available" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fields, channels",
    [({}, (0, 0)), ({"grey": True}, (1, 1)), ({"locator_grey": True}, (1, 0)),
     ({"locator_grey": True, "in_channels": 3}, (1, 3)), ({"in_channels": 3}, (3, 3))],
)  # fmt: skip
def test_stage_input_channels(fields: dict, channels: tuple[int, int]) -> None:
    """(locator, crop model) input channels; 0 = the images' own."""
    from biounet.fundus.pipeline import FundusConfig, stage_configs

    loc, roi = stage_configs(FundusConfig(**fields))
    assert (loc.model.in_channels, roi.model.in_channels) == channels


def test_locator_grey_trains_a_grey_locator_and_a_colour_crop_model(
    synthetic_data, tmp_path, capsys
) -> None:
    """--locator-grey end to end: the bundle's locator reads one channel, its crop model the
    photographs' three; predict runs it on an RGB image; the plain pipeline and cv refuse it."""
    from biounet.checkpoint import load_any
    from biounet.cli import main

    out = tmp_path / "run"
    tiny = ["--image-size", "32", "--epochs", "1", "--locator-epochs", "1", "--precision", "fp32"]
    args = ["--data", str(synthetic_data), "--out", str(out), "--locator-grey"]
    assert main(["train", "--pipeline", "fundus", *args, *tiny]) == 0
    ck = load_any(out / "fundus.pt")
    assert ck.parts["locator"].model_config.in_channels == 1
    assert ck.parts["roi"].model_config.in_channels == 3
    assert ck.settings["locator_grey"] is True
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    assert FundusPredictor(ck, precision="fp32").predict(img).prob.shape == (2, 50, 70)
    capsys.readouterr()
    assert main(["train", *args[:-1], "--out", str(tmp_path / "p"), "--locator-grey"]) == 2
    assert "--locator-grey: only with --pipeline fundus" in capsys.readouterr().err
    assert main(["cv", *args[:-1], "--out", str(tmp_path / "c"), "--locator-grey"]) == 2
    assert "--locator-grey are not available" in capsys.readouterr().err


def test_measures_of_a_crop_leave_nasal_and_temporal_open_and_of_no_disc_are_not_written() -> None:
    import math

    from biounet.fundus.pipeline import FundusResult
    from biounet.predictor import FundusPipelinePredictor

    roi, prob, _ = _reading(100, 100, 50, 50, 30)
    masks = {"disc": prob[0] > 0.5, "cup": prob[1] > 0.5}

    class Inner:
        last_input_kind, flags = "crop", []

        def predict(self, img):
            return FundusResult(prob, masks, roi, list(self.flags))

    p = object.__new__(FundusPipelinePredictor)
    p.inner = Inner()
    m = p.predict(np.zeros((100, 100, 3), np.uint8)).measures
    assert m["vcdr"] == pytest.approx(0.5, abs=0.05) and m["input_kind"] == "crop"
    assert math.isnan(m["rim_nasal"]) and math.isnan(m["rim_temporal"]) and m["rim_superior"] > 0
    assert m["isnt_rule"] is False  # as for any image whose nasal side is unknown
    p.inner.last_input_kind = "full"
    assert not math.isnan(p.predict(np.zeros((100, 100, 3), np.uint8)).measures["rim_left"])
    from biounet.predict import reported_measures

    p.inner.flags = ["disc_not_found"]
    pred = p.predict(np.zeros((100, 100, 3), np.uint8))
    assert pred.measures["vcdr"] == pytest.approx(0.5, abs=0.05)  # evaluate counts every image
    m = reported_measures(pred)  # what predict writes: no ratios of a disc never found
    assert math.isnan(m["vcdr"]) and math.isnan(m["disc_area_px"]) and m["roi_side"] == 120.0


def test_overlay_text_says_when_no_disc_was_measured_and_lists_each_doubt_on_its_own_line() -> None:
    import math

    from biounet.predict import overlay_text
    from biounet.predictor import Prediction

    sure = Prediction(np.zeros((2, 4, 4)), {}, {"vcdr": 0.51, "hcdr": 0.4, "acdr": 0.3})
    assert overlay_text(sure) == "vCDR 0.51  hCDR 0.40  aCDR 0.30"
    none = Prediction(np.zeros((2, 4, 4)), {}, {"vcdr": math.nan}, ["disc_not_found", "empty_disc"])
    assert overlay_text(none).splitlines() == [
        "no disc measured",
        "DOUBTFUL:",
        "  disc_not_found",
        "  empty_disc",
    ]
    assert overlay_text(none, short=True) == "no disc\nDOUBTFUL"
    assert overlay_text(sure, short=True) == "vCDR 0.51"


def test_each_doubt_is_named_once() -> None:
    """segment's and crop_doubts' size checks may both find an empty disc implausible."""
    img = np.full((100, 100, 3), 120, np.uint8)
    for kind in ("crop", "auto"):
        r = _FakePredictor(fill=0.0, input_kind=kind).predict(img)
        assert len(r.flags) == len(set(r.flags)) and "disc_size_unusual" in r.flags
