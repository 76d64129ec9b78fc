"""Training the unpadded U-Net on EM slices: tiles, crops, augmentation, loss going down, checkpoint,
and the ISBI 2012 benchmark's --quick path (real data only)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biounet.checkpoint import load_checkpoint
from biounet.config import ModelConfig
from biounet.em.tiles import center_crop_2d, make_slices, sample_batch
from biounet.em.train_em import (
    EmTrainConfig,
    best_threshold,
    choose_threshold,
    cosine_lr,
    make_em_model,
    predict_interior,
    save_em_checkpoint,
    tile_batches,
    train_em,
)
from biounet.infer_tiling import mirror_pad
from biounet.models import build_model, count_parameters, preset
from biounet.models.unet_valid import valid_input_size
from biounet.predictor import PredictOptions, make_predictor


def tiny_cfg(depth: int = 2, width: int = 4) -> ModelConfig:
    return dataclasses.replace(preset("paper_valid_small"), base_width=width, depth=depth)


def synthetic_em(
    n: int = 3, side: int = 96, seed: int = 0, noise: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """(N, side, side) uint8 EM-like images and bool interiors: Voronoi cells whose 2 px borders are
    dark membranes, plus noise. The label is derived from the cells, the image from the label."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    images, interiors = [], []
    for _ in range(n):
        pts = rng.uniform(0, side, size=(12, 2))
        d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
        two = np.sort(np.sqrt(d), axis=-1)[..., :2]
        interior = (two[..., 1] - two[..., 0]) > 2.0  # membrane within ~1 px of a cell border
        img = np.where(interior, 180.0, 60.0) + rng.normal(0, noise, (side, side))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        interiors.append(interior)
    return np.stack(images), np.stack(interiors)


def test_paper_valid_small_parameter_count() -> None:
    # paper_valid (31,030,658 at widths 64..1024) at widths 16..256; 1 in / 2 out, biased convs.
    assert count_parameters(build_model(preset("paper_valid_small"))) == 1_940_834


@pytest.mark.parametrize(
    ("depth", "out"), [(1, 10), (2, 12), (2, 36), (3, 20), (4, 4), (4, 20)]
)  # fmt: skip
def test_target_and_weight_crops_match_the_model_output(depth: int, out: int) -> None:
    images, interior = synthetic_em(2, 64)
    slices = make_slices(images, interior)
    in_size = valid_input_size(out, depth)
    x, target, weight = sample_batch(slices, in_size, out, 2, torch.Generator().manual_seed(0))
    model = build_model(tiny_cfg(depth, width=2))
    with torch.no_grad():
        y = model(x)
    assert x.shape == (2, 1, in_size, in_size)
    assert y.shape == (2, 2, out, out)
    assert target.shape == weight.shape == (2, out, out)
    assert target.dtype == torch.int64


@pytest.mark.parametrize("elastic", [False, True])
def test_tiles_keep_labels_binary_and_centred_on_the_image(elastic: bool) -> None:
    """Noise-free images (60 membrane, 180 interior: z-score sign = label), so the centre of every
    input tile must show the target exactly, or up to bilinear vs nearest on edges when warped."""
    images, interior = synthetic_em(3, 96, noise=0.0)
    slices = make_slices(images, interior)
    x, target, weight = sample_batch(
        slices, 76, 36, 8, torch.Generator().manual_seed(1), elastic=elastic
    )
    assert set(torch.unique(target).tolist()) <= {0, 1}
    c = center_crop_2d(x[:, 0], 36)  # (B, 36, 36)
    mid = (c.amax(dim=(1, 2), keepdim=True) + c.amin(dim=(1, 2), keepdim=True)) / 2
    agree = ((c > mid) == (target == 1)).float().mean().item()
    assert agree > 0.98 if elastic else agree == 1.0
    # the 2 px membranes make a shift visible: one pixel off costs far more than 2 %
    assert ((c[:, 1:] > mid) == (target[:, :-1] == 1)).float().mean().item() < 0.95
    # nearest-neighbour warping only moves weight values around: each one exists in the maps
    assert set(torch.unique(weight).tolist()) <= set(torch.unique(slices.weight).tolist())


def test_a_whole_slice_target_is_the_slice_up_to_rotation_and_flip() -> None:
    """Output tile = slice: the input tile reaches 20 px past every border (mirrored) and the
    target is the whole label, so every pixel, border pixels included, is trained on."""
    images, interior = synthetic_em(1, 64)
    slices = make_slices(images, interior)
    _, target, _ = sample_batch(slices, 104, 64, 4, torch.Generator().manual_seed(2))
    lab = torch.from_numpy(interior[0]).long()
    variants = [torch.rot90(v, k) for v in (lab, lab.flip(1)) for k in range(4)]
    for t in target:
        assert any(torch.equal(t, v) for v in variants)


def test_center_crop_rejects_odd_margins() -> None:
    with pytest.raises(ValueError, match="centre-crop"):
        center_crop_2d(torch.zeros(10, 10), 5)


def test_weight_map_off_leaves_class_balance_only() -> None:
    images, interior = synthetic_em(2, 64)
    s = make_slices(images, interior, w0=0.0)
    f_in = interior.mean()
    w_in, w_mem = (1 - f_in) / f_in, 1.0  # membrane is the rarer class here -> weight 1
    expected = np.where(interior, w_in, w_mem)
    np.testing.assert_allclose(s.weight.numpy(), expected, rtol=1e-5)
    assert make_slices(images, interior, w0=10.0).weight.max() > 5  # border term on


def test_cosine_lr_by_hand() -> None:
    assert cosine_lr(1.0, 0.0) == pytest.approx(1.0)
    assert cosine_lr(1.0, 0.5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert cosine_lr(1.0, 1.0) == pytest.approx(0.01)
    assert cosine_lr(2.0, 0.25) == pytest.approx(2 * (0.01 + 0.99 * 0.5 * (1 + math.sqrt(0.5))))


def test_a_few_iterations_reduce_the_weighted_loss() -> None:
    images, interior = synthetic_em(3, 96)
    slices = make_slices(images, interior)
    model = make_em_model(tiny_cfg(), seed=0)
    cfg = EmTrainConfig(out_tile=36, lr=3e-3, minutes=0, max_iters=60, batch_size=2)
    cfg = dataclasses.replace(cfg, lr_schedule="constant", precision="fp32")
    rows = train_em(model, slices, cfg)
    assert len(rows) == 60
    first = np.mean([r["loss"] for r in rows[:10]])
    last = np.mean([r["loss"] for r in rows[-10:]])
    assert last < 0.7 * first


def test_prefetched_batches_are_the_same_draws_in_the_same_order() -> None:
    """The GPU path cuts the next batch in a worker thread; the draws must not change."""
    images, interior = synthetic_em(3, 96)
    slices = make_slices(images, interior, w0=10.0)
    cfg = EmTrainConfig(out_tile=36, batch_size=2, elastic=True)
    in_tile = valid_input_size(36, tiny_cfg().depth)
    plain = tile_batches(slices, cfg, in_tile, torch.Generator().manual_seed(3), prefetch=False)
    ahead = tile_batches(slices, cfg, in_tile, torch.Generator().manual_seed(3), prefetch=True)
    for _ in range(4):
        for a, b in zip(next(plain), next(ahead), strict=True):
            assert a.shape == b.shape
            assert torch.equal(a, b)
    ahead.close()  # the worker thread is shut down with the generator


def test_an_error_in_training_closes_the_batch_stream(monkeypatch) -> None:
    """A failing step (here the loss) must not leave the prefetch thread running."""
    import biounet.em.train_em as te

    images, interior = synthetic_em(2, 96)
    slices = make_slices(images, interior, w0=10.0)
    closed = []
    real = te.tile_batches

    def watched(*a, **kw):
        try:
            yield from real(*a, **kw)
        finally:
            closed.append(True)

    def failing_loss(*a, **kw):
        raise RuntimeError("loss failed")

    monkeypatch.setattr(te, "tile_batches", watched)
    monkeypatch.setattr(te, "weighted_cross_entropy", failing_loss)
    cfg = EmTrainConfig(out_tile=36, minutes=0, max_iters=5, batch_size=2, precision="fp32")
    try:
        train_em(make_em_model(tiny_cfg(), 0), slices, cfg)
    except RuntimeError as e:  # its traceback still holds train_em's frame: no garbage collection
        assert "loss failed" in str(e)
        assert closed == [True]
    else:
        raise AssertionError("the failing loss did not stop training")


def test_train_em_needs_a_budget() -> None:
    images, interior = synthetic_em(1, 64)
    with pytest.raises(ValueError, match="never stops"):
        train_em(make_em_model(tiny_cfg(), 0), make_slices(images, interior),
                 EmTrainConfig(minutes=0, max_iters=0))  # fmt: skip


def test_predict_interior_is_one_forward_pass_of_the_mirrored_slice() -> None:
    model = make_em_model(tiny_cfg(), seed=0).eval()
    img = synthetic_em(1, 40)[0][0]
    prob = predict_interior(model, img, out_tile=12)  # 12 px tiles stepping 12: 4 x 4 tiles
    x = torch.from_numpy(img).float()[None]
    x = (x - x.mean()) / (x.std() + 1e-6)
    # 40 px + 20 + 24 mirrored = 84 px, a valid input whose output is 44 px; keep the first 40
    with torch.no_grad():
        direct = F.softmax(model(mirror_pad(x, 20, 24, 20, 24)[None]), dim=1)[0, 1, :40, :40]
    np.testing.assert_allclose(prob, direct.numpy(), atol=1e-5)


def test_predict_interior_tta_is_the_mean_over_the_eight_views() -> None:
    model = make_em_model(tiny_cfg(), seed=0).eval()
    img = synthetic_em(1, 36)[0][0]
    views = []
    for k in range(4):
        for flip in (False, True):
            v = np.rot90(img, k)
            p = predict_interior(model, np.ascontiguousarray(v[:, ::-1] if flip else v), 12)
            views.append(np.rot90(p[:, ::-1] if flip else p, -k))
    tta = predict_interior(model, img, 12, tta=True)
    np.testing.assert_allclose(tta, np.mean(views, axis=0), atol=1e-6)
    # averaging over the whole group makes the prediction equivariant: rotate in, rotate out
    rotated = predict_interior(model, np.ascontiguousarray(np.rot90(img)), 12, tta=True)
    np.testing.assert_allclose(np.rot90(rotated, -1), tta, atol=1e-5)
    assert not np.allclose(predict_interior(model, img, 12), tta, atol=1e-4)


def test_best_threshold_highest_or_lowest_ties_nearest_half() -> None:
    means = {0.2: {"v": 0.9, "e": 0.2}, 0.5: {"v": 0.8, "e": 0.1}, 0.7: {"v": 0.9, "e": 0.1}}
    assert best_threshold(means, "v") == 0.7  # 0.2 and 0.7 tie at 0.9; 0.7 is nearer 0.5
    assert best_threshold(means, "e", lower=True) == 0.5  # 0.5 and 0.7 tie at 0.1; 0.5 is nearer
    assert best_threshold({0.2: {"v": 1.0}, 0.6: {"v": 1.0}}, "v") == 0.6


def test_choose_threshold_and_checkpoint_round_trip(tmp_path: Path) -> None:
    _, interior = synthetic_em(2, 64)
    # A perfect interior probability of 0.8 inside cells, 0.2 on membranes: any threshold between
    # 0.2 and 0.8 scores V_rand = 1; ties go to the one nearest 0.5.
    probs = [np.where(m, 0.8, 0.2) for m in interior]
    thr, table = choose_threshold(probs, interior, (0.1, 0.3, 0.5, 0.9))
    assert thr == 0.5 and table[0.3] == pytest.approx(1.0) and table[0.9] < 1.0
    model = make_em_model(tiny_cfg(), seed=0)
    save_em_checkpoint(tmp_path / "em.pt", model, 12, thr, {"arm": "x"})
    c = load_checkpoint(tmp_path / "em.pt")
    assert c.labels == ("membrane", "interior") and c.extra["membrane_threshold"] == 0.5
    assert c.preprocess["in_tile"] == 52 and c.model_config == model.cfg
    x = torch.randn(1, 1, 52, 52)
    with torch.no_grad():
        torch.testing.assert_close(c.build()(x), model.eval()(x))
    img = np.repeat(synthetic_em(1, 40)[0][0][..., None], 3, axis=2)  # RGB input is made grey
    p = make_predictor(tmp_path / "em.pt", PredictOptions(precision="fp32")).predict(img)
    want = predict_interior(c.build(), img[..., 0], out_tile=12)
    np.testing.assert_allclose(p.prob[1], want, atol=1e-6)
    assert np.array_equal(p.masks["membrane"], 1 - want > 0.5)
    assert np.array_equal(p.masks["interior"], ~p.masks["membrane"])


def test_predict_cli_on_an_em_checkpoint_writes_masks(tmp_path: Path) -> None:
    from PIL import Image

    from biounet.cli import main

    save_em_checkpoint(tmp_path / "em.pt", make_em_model(tiny_cfg(), seed=0), 12, 0.5)
    (tmp_path / "in").mkdir()
    Image.fromarray(synthetic_em(1, 40)[0][0]).save(tmp_path / "in" / "s.png")
    rc = main(["predict", "--checkpoint", str(tmp_path / "em.pt"), "--out", str(tmp_path / "o"),
               "--precision", "fp32", str(tmp_path / "in")])  # fmt: skip
    assert rc == 0
    m = np.asarray(Image.open(tmp_path / "o" / "s_membrane.png"))
    assert m.shape == (40, 40) and set(np.unique(m)) <= {0, 255}


@pytest.mark.slow
def test_benchmark_quick_path(real_dataset: Callable[[str], Path], tmp_path: Path) -> None:
    """The benchmark end to end with a 1-iteration, width-2 model (skipped without the real data)."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import isbi2012_em
    finally:
        sys.path.remove(str(bench))
    root = real_dataset("isbi2012_em")
    isbi2012_em.main(
        ["--quick", "--data", str(root), "--work", str(tmp_path), "--max-iters", "1",
         "--base-width", "2"]
    )  # fmt: skip
    res = json.loads((tmp_path / "results" / "isbi2012_em.json").read_text())
    assert res["val"]["slices"] == [25, 26, 27, 28, 29]
    assert set(res["ablation"]) == {
        "weightmap_elastic",
        "weightmap_only",
        "elastic_only",
        "neither",
    }
    assert res["overlap_tile_2048"]["max_abs_diff_vs_direct"] < 1e-4
    assert (tmp_path / "overlap_tile_corner.png").is_file()
    # a longer run, then the final refit on 00-24 with its choices
    common = ["--quick", "--data", str(root), "--work", str(tmp_path), "--max-iters", "1",
              "--base-width", "2"]  # fmt: skip
    isbi2012_em.main([*common, "--long", "0.1", "--long-arms", "neither"])
    isbi2012_em.main([*common, "--refit", "0"])
    res = json.loads((tmp_path / "results" / "isbi2012_em.json").read_text())
    r = res["refit_00_24"]
    assert r["source"] == "long_runs_0.1min" and r["train_slices"] == list(range(25))
    assert r["val"]["membrane_threshold"] == res["long_runs_0.1min"]["val"]["membrane_threshold"]
    assert (tmp_path / "refit_00_24_neither.pt").is_file()


def test_biounet_train_refuses_an_unpadded_unet_with_a_pointer(
    synthetic_data, tmp_path, capsys
) -> None:
    from biounet.cli import main

    rc = main(["train", "--data", str(synthetic_data), "--out", str(tmp_path / "r"),
               "--preset", "paper_valid_small", "--epochs", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "biounet.em.train_em" in err and "Traceback" not in err


def test_train_em_cli_on_a_folder_then_predict(tmp_path: Path, capsys) -> None:
    import json

    from PIL import Image

    from biounet.cli import main

    images, interior = synthetic_em(4, 64)
    for sub in ("images", "masks"):
        (tmp_path / "em" / sub).mkdir(parents=True)
    for i, (im, m) in enumerate(zip(images, interior, strict=True)):
        Image.fromarray(im).save(tmp_path / "em" / "images" / f"s{i}.png")
        Image.fromarray((~m).astype(np.uint8) * 255).save(tmp_path / "em" / "masks" / f"s{i}.png")
    rc = main(["train-em", "--data", str(tmp_path / "em"), "--out", str(tmp_path / "run"),
               "--membrane-masks", "--max-iters", "2", "--minutes", "1", "--width", "2",
               "--out-tile", "20", "--val-fraction", "0.25"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "V-Rand" in out and "model.pt" in out
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["iterations"] == 2 and len(s["val_stems"]) == 1 and len(s["train_stems"]) == 3
    # the lowest pixel error over the sweep, at its own threshold: never above the V-Rand one's
    assert s["pixel_error_at_pixel_threshold"] <= s["val"]["pixel_error"]
    assert f"at its own threshold {s['pixel_error_threshold']:.2f}" in out
    assert s["pixel_error_fscore_at_its_threshold"] <= s["val"]["pixel_error_fscore"]
    assert (
        f"{s['pixel_error_fscore_at_its_threshold']:.4f} at {s['pixel_fscore_threshold']:.2f}"
        in out
    )
    ck = load_checkpoint(tmp_path / "run" / "model.pt")
    assert ck.extra["pixel_fscore_threshold"] == s["pixel_fscore_threshold"]
    rc = main(["predict", "--checkpoint", str(tmp_path / "run" / "model.pt"),
               "--out", str(tmp_path / "p"), str(tmp_path / "em" / "images")])  # fmt: skip
    assert rc == 0 and (tmp_path / "p" / "s0_membrane.png").is_file()
    # --tta asks for the 8-view average even where the held-out slices did not choose it

    assert make_predictor(tmp_path / "run" / "model.pt", PredictOptions("fp32", tta=True)).tta


def test_train_em_takes_the_one_complete_label_and_says_which_it_leaves(tmp_path, caplog) -> None:
    import logging

    from PIL import Image

    from biounet.em.fit_em import read_folder_slices

    images, interior = synthetic_em(3, 32)
    for sub in ("images", "masks/interior", "masks/mito"):
        (tmp_path / sub).mkdir(parents=True)
    for i, (im, m) in enumerate(zip(images, interior, strict=True)):
        Image.fromarray(im).save(tmp_path / "images" / f"s{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "masks/interior" / f"s{i}.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks/mito" / "s0.png")
    with caplog.at_level(logging.WARNING):
        stems, imgs, inter = read_folder_slices(tmp_path, "train", False)
    assert stems == ["s0", "s1", "s2"] and inter.shape == (3, 32, 32)
    np.testing.assert_array_equal(inter, interior)
    assert "training on 'interior'; 'mito' lack masks for some images" in caplog.text


def test_train_em_refuses_rgb_slices_naming_the_file(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from biounet.cli import main

    for sub in ("images", "masks"):
        (tmp_path / "em" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "em" / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "em" / "masks" / "a.png")
    rc = main(["train-em", "--data", str(tmp_path / "em"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "a.png" in err and "grey" in err and "Traceback" not in err


@pytest.mark.parametrize("shape", [(1, 50), (50, 1), (1, 1)])
def test_predict_interior_takes_one_pixel_wide_images_with_tta(shape: tuple[int, int]) -> None:
    """The TTA views of a 1-px-wide slice are numpy views with negative strides; torch refuses
    those unless copied."""
    model = make_em_model(tiny_cfg(), seed=0).eval()
    img = np.full(shape, 120, np.uint8)
    prob = predict_interior(model, img, out_tile=12, tta=True)
    assert prob.shape == shape and np.isfinite(prob).all()


def test_evaluate_reports_the_membrane_cut_stored_in_an_em_checkpoint(tmp_path: Path) -> None:
    import json

    from PIL import Image

    from biounet.evaluate import evaluate_checkpoint, threshold_text

    save_em_checkpoint(tmp_path / "em.pt", make_em_model(tiny_cfg(), seed=0), 12, 0.3)
    images, interior = synthetic_em(2, 40)
    for sub in ("images", "masks/membrane", "masks/interior"):
        (tmp_path / "em" / sub).mkdir(parents=True)
    for i, (im, m) in enumerate(zip(images, interior, strict=True)):
        Image.fromarray(im).save(tmp_path / "em" / "images" / f"s{i}.png")
        Image.fromarray((~m).astype(np.uint8) * 255).save(
            tmp_path / "em/masks/membrane" / f"s{i}.png"
        )
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "em/masks/interior" / f"s{i}.png")
    s = evaluate_checkpoint(
        tmp_path / "em.pt", tmp_path / "em", "all", tmp_path / "ev", PredictOptions("fp32")
    )
    # membrane where its probability exceeds 0.3; interior everywhere else (>= 1 - 0.3)
    assert s["label_thresholds"] == {"membrane": 0.3, "interior": pytest.approx(0.7)}
    assert (
        json.loads((tmp_path / "ev" / "summary.json").read_text())["label_thresholds"]["membrane"]
        == 0.3
    )
    assert "membrane 0.3, interior 0.7" in threshold_text(s)
