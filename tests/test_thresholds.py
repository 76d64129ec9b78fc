"""Per-label thresholds: the --threshold syntax, the predictors' cut per label, and
``choose-thresholds`` (hand-computed Dice tables, the disc-then-cup rule, the command end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biounet.api import load_model, threshold_options
from biounet.checkpoint import save_checkpoint
from biounet.cli import main
from biounet.config import ModelConfig
from biounet.errors import BiounetError
from biounet.fundus.postprocess import clean_disc_cup
from biounet.infer import preprocess_spec
from biounet.metrics import binary_scores
from biounet.models import build_model
from biounet.predictor import PredictOptions, make_predictor, parse_thresholds, threshold_fields
from biounet.thresholds import best, choose, crop_box, image_dice_table


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.4", (0.4, ())),
        ("cup=0.2", (0.5, (("cup", 0.2),))),
        ("0.4,cup=0.2, disc=0.6", (0.4, (("cup", 0.2), ("disc", 0.6)))),
        ("cup=0.2,cup=0.3", (0.5, (("cup", 0.3),))),
    ],
)
def test_threshold_syntax(text: str, expected: tuple) -> None:
    assert parse_thresholds(text) == expected


@pytest.mark.parametrize("text", ["x", "cup=", "=0.2", "1.5", "cup=0", "0.5,cup=1"])
def test_bad_threshold_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_thresholds(text)


def test_cuts_name_the_unknown_label() -> None:
    o = PredictOptions(threshold=0.4, label_thresholds=(("cup", 0.2),))
    assert o.cuts(("disc", "cup")) == {"disc": 0.4, "cup": 0.2}
    with pytest.raises(BiounetError, match="no label 'cup'.*its labels: vessel"):
        o.cuts(("vessel",))


def test_api_threshold_per_label() -> None:
    """A threshold given (number or per label) replaces the checkpoint's saved ones; None keeps
    them; the CLI's parsed value maps to the same fields."""
    given = {"stored_thresholds": False}
    assert threshold_options(0.3) == {"threshold": 0.3, "label_thresholds": (), **given}
    assert threshold_options({"cup": 0.2}) == {
        "threshold": 0.5, "label_thresholds": (("cup", 0.2),), **given
    }  # fmt: skip
    assert threshold_options(None) == threshold_fields(None)
    assert threshold_fields(None) == {
        "threshold": 0.5, "label_thresholds": (), "stored_thresholds": True
    }  # fmt: skip
    assert threshold_fields(parse_thresholds("cup=0.2")) == threshold_options({"cup": 0.2})
    with pytest.raises(ValueError, match="threshold cup: must be in"):
        threshold_options({"cup": 1.2})


def test_dice_table_hand_computed() -> None:
    """prob [0.1, 0.3, 0.6, 0.9]; target [0, 1, 1, 1]: Dice 1 at 0.2, 4/5 at 0.5, 2/4 at 0.8;
    target [0, 0, 0, 1]: 2/4, 2/3, 1. Means 0.75, 0.7333, 0.75: the tie goes to the threshold
    nearer the default (both 0.3 away: the lower)."""
    prob = np.array([0.1, 0.3, 0.6, 0.9]).reshape(1, 1, 4)
    a = image_dice_table(prob, np.array([0, 1, 1, 1]).reshape(1, 1, 4), ["x"], (0.2, 0.5, 0.8))
    b = image_dice_table(prob, np.array([0, 0, 0, 1]).reshape(1, 1, 4), ["x"], (0.2, 0.5, 0.8))
    assert a["x"] == pytest.approx({"0.2": 1.0, "0.5": 0.8, "0.8": 0.5})
    assert b["x"] == pytest.approx({"0.2": 0.5, "0.5": 2 / 3, "0.8": 1.0})
    c = choose([a, b], ["x"], 0.5, disc_cup=False)["x"]
    assert c["threshold"] == 0.2
    assert c["dice"] == pytest.approx(0.75)
    assert c["dice_at_default"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert best({"0.3": 0.9, "0.5": 0.9, "0.7": 0.8}, 0.5) == 0.5


def blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(2, 40, 40) disc/cup probabilities (smooth blobs + noise) and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20 - rng.integers(-3, 4), xx - 20 - rng.integers(-3, 4))
    disc = np.clip(1.2 - r / 12 + rng.normal(0, 0.15, r.shape), 0, 1)
    cup = np.clip(1.0 - r / 6 + rng.normal(0, 0.15, r.shape), 0, 1)
    target = np.stack([r < 11, r < 4]).astype(np.uint8)
    return np.stack([disc, cup]), target


@pytest.mark.parametrize("fit_ellipse", [False, True])
def test_disc_cup_table_is_clean_disc_cup_at_each_pair(fit_ellipse: bool) -> None:
    """The sweep's cleaning (disc cleaned once per threshold, the cup per pair) gives the Dice
    that predict's clean_disc_cup gives at the same pair of thresholds."""
    prob, target = blobs(0)
    grid = (0.3, 0.5, 0.7)
    t = image_dice_table(prob, target, ["disc", "cup"], grid, True, fit_ellipse)
    for td in grid:
        for tc in grid:
            d, c = clean_disc_cup(prob[0] > td, prob[1] > tc, fit_ellipse)
            assert t["disc"][f"{td:g}"] == pytest.approx(binary_scores(d, target[0] > 0)["dice"])
            assert t["cup"][f"{td:g}"][f"{tc:g}"] == pytest.approx(
                binary_scores(c, target[1] > 0)["dice"]
            )


def test_disc_then_cup_choice() -> None:
    """The cup's threshold is chosen with the disc at its chosen threshold; its default Dice is
    the one with both at the default."""
    tables = [image_dice_table(*blobs(s), ["disc", "cup"], (0.3, 0.5, 0.7), True) for s in range(3)]
    c = choose(tables, ["disc", "cup"], 0.5, disc_cup=True)
    td = f"{c['disc']['threshold']:g}"
    cup_curve = {k: np.mean([t["cup"][td][k] for t in tables]) for k in ("0.3", "0.5", "0.7")}
    assert c["cup"]["table"] == pytest.approx(cup_curve)
    assert c["cup"]["dice"] == pytest.approx(max(cup_curve.values()))
    assert c["cup"]["dice_at_default"] == pytest.approx(
        np.mean([t["cup"]["0.5"]["0.5"] for t in tables])
    )


def test_crop_box_keeps_every_foreground_pixel_with_a_margin() -> None:
    prob = np.zeros((1, 30, 30))
    prob[0, 10, 12] = 0.5
    target = np.zeros((1, 30, 30))
    target[0, 20, 5] = 1
    rows, cols = crop_box(prob, target, 0.05)
    assert (rows, cols) == (slice(8, 23), slice(3, 15))
    assert crop_box(np.zeros((1, 5, 5)), np.zeros((1, 5, 5)), 0.05) == (slice(0, 1), slice(0, 1))


@pytest.fixture
def disc_cup_ck(disc_cup_checkpoint: Path) -> Path:
    return disc_cup_checkpoint


def test_a_single_model_cuts_each_label_at_its_threshold(disc_cup_ck: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    base = make_predictor(disc_cup_ck, PredictOptions(precision="fp32")).predict(img)
    low = load_model(disc_cup_ck, {"cup": 0.01}, precision="fp32").predict(img)
    np.testing.assert_array_equal(low.prob, base.prob)
    np.testing.assert_array_equal(low.masks["disc"], base.prob[0] > 0.5)
    np.testing.assert_array_equal(low.masks["cup"], base.prob[1] > 0.01)
    with pytest.raises(BiounetError, match="no label 'vessel'"):
        make_predictor(disc_cup_ck, PredictOptions(label_thresholds=(("vessel", 0.3),)))


def test_choose_thresholds_command_end_to_end(
    disc_cup_ck: Path, synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """choose-thresholds writes thresholds.json whose flag evaluate takes back; evaluate's
    summary then names each label's threshold, and its Dice is the one chosen."""
    out = tmp_path / "th"
    args = ["--checkpoint", str(disc_cup_ck), "--data", str(synthetic_data), "--precision", "fp32"]
    assert main(["choose-thresholds", *args, "--split", "test", "--out", str(out)]) == 0
    r = json.loads((out / "thresholds.json").read_text())
    assert r["n_images"] == 3 and set(r["labels"]) == {"disc", "cup"}
    for lb in ("disc", "cup"):
        c = r["labels"][lb]
        assert c["dice"] == max(c["table"].values()) >= c["dice_at_default"]
    printed = capsys.readouterr().out
    assert f"use: --threshold {r['flag']}" in printed
    ev = tmp_path / "ev"
    cmd = ["evaluate", *args, "--split", "test", "--out", str(ev), "--threshold", r["flag"]]
    assert main(cmd) == 0
    s = json.loads((ev / "summary.json").read_text())
    assert s["label_thresholds"] == {lb: r["labels"][lb]["threshold"] for lb in ("disc", "cup")}
    for lb in ("disc", "cup"):
        assert s["labels"][lb]["dice_mean"] == pytest.approx(r["labels"][lb]["dice"])


def test_choose_thresholds_refuses_bad_input(disc_cup_ck: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope"
    cmd = ["choose-thresholds", "--checkpoint", str(disc_cup_ck), "--data", str(missing)]
    assert main([*cmd, "--out", str(tmp_path / "o")]) != 0
    assert f"{missing}: not a dataset folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", *cmd[1:], "--out", str(tmp_path / "o"), "--threshold", "cup="])
    assert "'cup=' is not a number or label=number" in capsys.readouterr().err


def test_choose_thresholds_refuses_an_em_model(tmp_path: Path, synthetic_data: Path) -> None:
    """unet_valid models cut at the membrane threshold train-em chose and stored: the command says
    so instead of choosing thresholds that predict would not use."""
    from biounet.thresholds import choose_thresholds

    cfg = ModelConfig(
        arch="unet_valid", in_channels=1, out_channels=2, base_width=2, depth=2, norm="none"
    )
    ck = tmp_path / "em.pt"
    spec = {**preprocess_spec(32, 1), "output": "softmax"}
    save_checkpoint(ck, build_model(cfg), cfg, ("membrane", "cell"), spec)
    with pytest.raises(BiounetError, match="membrane threshold"):
        choose_thresholds(ck, synthetic_data, "test", tmp_path / "o")


def test_saved_thresholds_travel_with_the_checkpoint(
    disc_cup_ck: Path, synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """choose-thresholds --save writes a checkpoint copy that predict and evaluate cut at the
    chosen thresholds; a --threshold given replaces them; the weights are the source's; an
    existing --save path is refused before any work."""
    site = tmp_path / "site.pt"
    args = ["--checkpoint", str(disc_cup_ck), "--data", str(synthetic_data), "--precision", "fp32"]
    th = ["choose-thresholds", *args, "--split", "test", "--out", str(tmp_path / "th")]
    assert main([*th, "--save", str(site)]) == 0
    assert f"saved: {site}" in capsys.readouterr().out
    r = json.loads((tmp_path / "th" / "thresholds.json").read_text())
    chosen = {lb: c["threshold"] for lb, c in r["labels"].items()}
    pred = make_predictor(site, PredictOptions(precision="fp32"))
    assert pred.cuts == chosen
    assert make_predictor(site, PredictOptions(label_thresholds=(("cup", 0.3),))).cuts == {
        "disc": 0.5,
        "cup": 0.3,
    }  # given ones replace the saved ones
    assert make_predictor(site, PredictOptions(stored_thresholds=False)).cuts == {
        "disc": 0.5,
        "cup": 0.5,
    }
    img = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    base = make_predictor(disc_cup_ck, PredictOptions(precision="fp32")).predict(img)
    np.testing.assert_array_equal(pred.predict(img).prob, base.prob)  # same weights
    ev = ["evaluate", *args[2:], "--checkpoint", str(site), "--split", "test"]
    assert main([*ev, "--out", str(tmp_path / "e1")]) == 0
    assert json.loads((tmp_path / "e1/summary.json").read_text())["label_thresholds"] == chosen
    shown = ", ".join(f"{lb} {t:g}" for lb, t in chosen.items() if t != 0.5)
    assert shown  # the seeded untrained model's choice is not 0.5 for both labels
    # the printed table and the report say what the masks were cut at
    assert f"threshold 0.5 ({shown})" in capsys.readouterr().out
    assert f"threshold 0.5 ({shown})" in (tmp_path / "e1/report.html").read_text()
    assert main([*ev, "--out", str(tmp_path / "e2"), "--threshold", "0.5"]) == 0
    s2 = json.loads((tmp_path / "e2/summary.json").read_text())
    assert s2["label_thresholds"] == {"disc": 0.5, "cup": 0.5}
    capsys.readouterr()
    assert main([*th, "--save", str(site)]) != 0
    assert f"{site}: exists" in capsys.readouterr().err


def test_a_pipeline_keeps_saved_thresholds_in_its_settings(
    synthetic_data: Path, tmp_path: Path, tiny_fundus
) -> None:
    from biounet.checkpoint import load_any, save_with_thresholds, stored_thresholds
    from biounet.fundus.pipeline import fit_fundus

    ck = fit_fundus(tiny_fundus(synthetic_data), tmp_path / "run")
    site = tmp_path / "site.pt"
    save_with_thresholds(ck, site, {"cup": 0.2}, "by hand")
    loaded = load_any(site)
    assert stored_thresholds(loaded) == {"cup": 0.2}
    assert loaded.settings["label_thresholds_chosen"] == "by hand"
    assert stored_thresholds(load_any(ck)) == {}
    pred = make_predictor(site, PredictOptions(precision="fp32"))
    assert pred.cuts == {"disc": 0.5, "cup": 0.2} and pred.inner.cuts == pred.cuts


def test_threshold_text_names_the_labels_cut_elsewhere() -> None:
    from biounet.evaluate import threshold_text

    s = {"threshold": 0.5, "label_thresholds": {"disc": 0.5, "cup": 0.01}}
    assert threshold_text(s) == "threshold 0.5 (cup 0.01)"
    assert threshold_text({"threshold": 0.4, "label_thresholds": {"disc": 0.4}}) == "threshold 0.4"
    assert threshold_text({"threshold": 0.5}) == "threshold 0.5"  # summaries from before
