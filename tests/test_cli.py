"""End to end through ``biounet.cli.main`` on the tiny synthetic dataset: train, evaluate, predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biounet.checkpoint import load_checkpoint
from biounet.cli import main
from biounet.config import DataConfig, ModelConfig, RunConfig
from biounet.data.folder import Sample
from biounet.models import build_model
from biounet.train import save_epoch
from biounet.train_data import holds_out
from biounet.train_state import TrainState

pytestmark = pytest.mark.slow

FAST = ["--image-size", "64", "--batch-size", "4", "--preset", "small", "--precision", "fp32"]


def train(data: Path, out: Path, epochs: int, *extra: str) -> int:
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", str(epochs)]
    return main(["-q", *args, *FAST, *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def held_out(synthetic_data: Path) -> list[str]:
    return json.loads((synthetic_data / "splits.json").read_text())["test"]


@pytest.fixture(scope="module")
def run(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert train(synthetic_data, out, 2) == 0
    return out


@pytest.fixture(scope="module")
def evaluated(run: Path, synthetic_data: Path) -> Path:
    out = run.parent / "eval"
    args = ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(synthetic_data)]
    assert main(["-q", *args, "--out", str(out), "--precision", "fp32"]) == 0
    return out


@pytest.fixture(scope="module")
def predicted(run: Path, synthetic_data: Path, held_out: list[str]) -> Path:
    folder = run.parent / "test_images"
    folder.mkdir()
    for stem in held_out:
        shutil.copy(synthetic_data / "images" / f"{stem}.png", folder)
    out = run.parent / "pred"
    args = ["predict", "--checkpoint", str(run / "best.pt"), "--out", str(out), str(folder)]
    assert main(["-q", *args, "--precision", "fp32"]) == 0
    return out


def test_train_writes_the_run_folder(run: Path) -> None:
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "curves.png", "best.pt", "last.pt"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.size == (1000, 400)


def test_metrics_csv_has_one_row_per_epoch(run: Path) -> None:
    rows = read_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    cols = set(rows[0])
    assert {"train_loss", "val_loss", "val_dice_disc", "val_dice_cup", "lr", "seconds"} <= cols
    for r in rows:
        assert 0 <= float(r["val_dice_disc"]) <= 1 and 0 <= float(r["val_dice_cup"]) <= 1
        assert float(r["lr"]) == pytest.approx(2e-3)  # the small preset's recipe
        assert float(r["seconds"]) > 0 and np.isfinite(float(r["train_loss"]))


def test_config_and_checkpoints_describe_the_run(run: Path) -> None:
    cfg = RunConfig.load_yaml(run / "config.yaml")
    assert cfg.preset == "small"
    assert cfg.data.labels == ("cup", "disc")  # every label of the dataset, sorted
    assert cfg.data.image_size == 64
    assert (cfg.model.in_channels, cfg.model.out_channels, cfg.model.base_width) == (3, 2, 16)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.precision) == (2, 4, "fp32")
    last = load_checkpoint(run / "last.pt")
    assert last.extra["epoch"] == 2
    assert last.model_config == cfg.model
    assert last.labels == ("cup", "disc")
    assert last.preprocess["image_size"] == 64 and last.preprocess["in_channels"] == 3
    assert load_checkpoint(run / "best.pt").extra["epoch"] in (1, 2)


def test_evaluate_writes_per_image_rows_and_summary(evaluated: Path, held_out: list[str]):
    assert len(held_out) == 3
    rows = read_csv(evaluated / "per_image.csv")
    assert len(rows) == len(held_out) * 2
    assert {"stem", "label", "dice", "iou", "bce", "precision", "recall"} <= set(rows[0])
    assert sorted((r["stem"], r["label"]) for r in rows) == [
        (s, lb) for s in held_out for lb in ("cup", "disc")
    ]
    for r in rows:
        assert all(0 <= float(r[m]) <= 1 for m in ("dice", "iou", "precision", "recall"))
    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["n_images"] == len(held_out)
    assert summary["split"] == "test"  # the default with a splits.json
    disc = [float(r["dice"]) for r in rows if r["label"] == "disc"]
    assert summary["labels"]["disc"]["dice_mean"] == pytest.approx(np.mean(disc))
    assert summary["labels"]["disc"]["dice_std"] == pytest.approx(np.std(disc))


def test_predict_writes_masks_probabilities_and_overlays(
    predicted: Path, synthetic_data: Path, held_out: list[str]
) -> None:
    for stem in held_out:
        with Image.open(synthetic_data / "images" / f"{stem}.png") as im:
            w, h = im.size
        assert (w, h) == (72, 64)
        for kind in ("disc", "cup", "prob_disc", "prob_cup"):
            arr = np.asarray(Image.open(predicted / f"{stem}_{kind}.png"))
            assert arr.shape == (h, w) and arr.dtype == np.uint8, kind
        for lb in ("disc", "cup"):
            mask = np.asarray(Image.open(predicted / f"{stem}_{lb}.png"))
            prob = np.asarray(Image.open(predicted / f"{stem}_prob_{lb}.png"))
            assert set(np.unique(mask).tolist()) <= {0, 255}
            # the mask is the probability thresholded at 0.5 (stored as round(p * 255))
            assert (prob[mask == 255] >= 128).all() and (prob[mask == 0] <= 128).all()
        with Image.open(predicted / f"{stem}_overlay.png") as im:
            assert im.mode == "RGB" and im.size == (w, h)


def test_predict_skips_unreadable_files_and_says_so(
    run: Path, synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(synthetic_data / "images" / "synth_000.png", tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"")
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(run / "best.pt"), "--out", str(out), str(tmp_path)]
    assert main(["-q", *args, "--precision", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "biounet: skipped: " in err and "broken.png: file is empty" in err
    assert (out / "good_overlay.png").is_file() and not (out / "broken_overlay.png").exists()


def test_model_info_prints_the_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model-info", "--preset", "seed"]) == 0
    assert "34,527,106" in capsys.readouterr().out


def test_zero_epochs_is_an_argparse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "0"])
    assert e.value.code == 2
    assert "--epochs: must be > 0, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "says"), [("0.3,1", "must be in [0.5, 2]"), ("1,x", "expected numbers")]
)
def test_bad_tta_scales_are_an_argparse_error(
    value: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["predict", "--checkpoint", str(tmp_path), str(tmp_path), "--tta-scales", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--tta-scales" in err and says in err


def test_unknown_preset_returns_2_and_names_it(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        "--data",
        str(synthetic_data),
        "--out",
        str(tmp_path / "r"),
        "--preset",
        "nope",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "seed, paper, small, medium" in err


def test_evaluate_missing_checkpoint_is_a_one_line_error(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = tmp_path / "no_such.pt"
    args = ["evaluate", "--checkpoint", str(ck), "--data", str(synthetic_data)]
    assert main([*args, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("biounet: error: ") and str(ck) in err


def test_evaluate_unknown_split(
    run: Path, synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(synthetic_data)]
    assert main([*args, "--split", "val", "--out", str(tmp_path / "e")]) == 2
    assert "no split 'val'; it has ['test', 'train']" in capsys.readouterr().err


def test_training_is_repeatable_with_the_same_seed(
    run: Path, synthetic_data: Path, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(synthetic_data, a, 1) == 0
    assert train(synthetic_data, b, 1) == 0
    ra, rb = read_csv(a / "metrics.csv"), read_csv(b / "metrics.csv")
    numbers = [k for k in ra[0] if k.startswith("val_") or k == "train_loss"]
    assert len(numbers) >= 6
    assert [{k: r[k] for k in numbers} for r in ra] == [{k: r[k] for k in numbers} for r in rb]
    # the first epoch of the longer run is the same epoch too: nothing depends on the epoch count
    first = read_csv(run / "metrics.csv")[0]
    assert {k: first[k] for k in numbers} == {k: ra[0][k] for k in numbers}
    # and the comparison can tell runs apart: another seed gives another loss
    assert train(synthetic_data, tmp_path / "c", 1, "--seed", "1") == 0
    assert read_csv(tmp_path / "c" / "metrics.csv")[0]["train_loss"] != ra[0]["train_loss"]


def test_tensorboard_flag_without_the_package_is_a_clean_error(
    synthetic_data, tmp_path, capsys
) -> None:
    import importlib.util

    from biounet.cli import main

    if importlib.util.find_spec("tensorboard") is not None:
        import pytest

        pytest.skip("tensorboard is installed here; the missing-package error cannot be shown")
    rc = main(
        ["train", "--data", str(synthetic_data), "--out", str(tmp_path / "r"), "--tensorboard"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--tensorboard" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_no_held_out_images_keeps_the_last_epoch(synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "all"
    assert train(synthetic_data, out, 3, "--val-fraction", "0") == 0
    assert load_checkpoint(out / "best.pt").extra["epoch"] == 3
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4  # header + 3 epochs, validated on a training image as a sanity check


def test_holds_out_tells_a_split_that_kept_no_image_aside() -> None:
    a, b = Sample("a", Path("a.png")), Sample("b", Path("b.png"))
    assert holds_out([a], [b])
    assert not holds_out([a, b], [a])  # val_fraction 0: the "validation" image is a training one


@pytest.mark.parametrize(("keep_last", "best_epoch"), [(False, 1), (True, 2)])
def test_best_pt_follows_the_score_unless_the_last_epoch_is_kept(
    tmp_path: Path, keep_last: bool, best_epoch: int
) -> None:
    cfg = RunConfig(model=ModelConfig(base_width=4, depth=2), data=DataConfig(labels=("a",)))
    model = build_model(cfg.model)
    opt = torch.optim.Adam(model.parameters())
    state = TrainState()
    for epoch, score in ((1, 0.9), (2, 0.5)):  # the score falls in epoch 2
        row = {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "seconds": 1.0}
        row |= {"val_dice_a": score, "val_dice_mean": score}
        state = TrainState(epoch, state.best, [*state.rows, row])
        save_epoch(cfg, model, state, tmp_path, {}, None, opt, None, None, keep_last)
    assert load_checkpoint(tmp_path / "best.pt").extra["epoch"] == best_epoch


def test_predict_and_evaluate_flags_become_one_options_object() -> None:
    from biounet.cli import parser
    from biounet.cli_commands import predict_options
    from biounet.predictor import PredictOptions

    a = parser().parse_args(
        ["predict", "--checkpoint", "m.pt", "x.png", "--out", "o", "--threshold", "0.4",
         "--tta", "--tta-scales", "0.9,1", "--no-postprocess", "--ellipse", "--input", "crop",
         "--no-fast", "--precision", "fp32"]
    )  # fmt: skip
    assert predict_options(a) == PredictOptions(
        precision="fp32",
        threshold=0.4,
        tta=True,
        postprocess=False,
        fit_ellipse=True,
        input_kind="crop",
        fast=False,
        tta_scales=(0.9, 1.0),
        stored_thresholds=False,  # a --threshold given replaces the checkpoint's saved ones
    )
    e = parser().parse_args(
        ["evaluate", "--checkpoint", "m.pt", "--data", "d", "--out", "o", "--tta"]
    )
    assert predict_options(e) == PredictOptions(tta=True)  # the flags evaluate lacks: defaults
