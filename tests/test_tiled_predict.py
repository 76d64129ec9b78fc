"""predict / evaluate / load_model in windows (``--tile``): the rule that picks the window,
windows normalised with the whole image's statistics (so a pixel-wise model gives the same output
tiled or not), and the flags end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from biounet.api import load_model
from biounet.cli import main
from biounet.errors import BiounetError
from biounet.infer import AUTO_TILE, AUTO_TILE_ABOVE, predict_images, resolve_tile
from biounet.predictor import PredictOptions, make_predictor


@pytest.mark.parametrize(
    ("tile", "size", "expected"),
    [
        (None, AUTO_TILE_ABOVE, 0),  # auto: whole up to the limit
        (None, AUTO_TILE_ABOVE + 1, AUTO_TILE),  # then in windows
        (0, 4096, 0),  # 0: always whole
        (600, 512, 0),  # a window at least the image: whole
        (512, 512, 0),
        (256, 512, 256),
    ],
)
def test_resolve_tile_table(tile: int | None, size: int, expected: int) -> None:
    assert resolve_tile(tile, size) == expected


def test_resolve_tile_refuses_a_negative_side() -> None:
    with pytest.raises(ValueError, match="positive side"):
        resolve_tile(-1, 512)


class PixelWise(nn.Module):
    """A 1x1 convolution and a sigmoid-free nonlinearity: each output pixel depends only on its
    own input pixel, so windows change nothing unless they are normalised on their own."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * 3


def test_windows_are_normalised_with_the_whole_image() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    img[:, :35] //= 4  # a dark left half: a window there has other statistics than the image
    spec = {"image_size": 96, "in_channels": 3}
    cpu = torch.device("cpu")
    whole = next(predict_images(PixelWise(), [img], spec, cpu, "fp32", tile=0))
    tiled = next(predict_images(PixelWise(), [img], spec, cpu, "fp32", tile=32, overlap=0.25))
    assert tiled.shape == whole.shape == (2, 90, 70)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_a_window_as_large_as_the_image_is_the_whole_image(disc_cup_checkpoint: Path) -> None:
    img = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    run = lambda tile: make_predictor(  # noqa: E731
        disc_cup_checkpoint, PredictOptions(precision="fp32", tile=tile)
    ).predict(img)
    whole, same, tiled = run(0), run(32), run(16)
    np.testing.assert_array_equal(same.prob, whole.prob)
    assert tiled.prob.shape == whole.prob.shape == (2, 40, 50)
    assert tiled.prob.min() >= 0 and tiled.prob.max() <= 1
    # an untrained U-Net's windows see zero padding at their borders: close to, not equal to whole
    assert np.abs(tiled.prob - whole.prob).mean() < 0.05
    assert not np.array_equal(tiled.prob, whole.prob)


def test_tta_with_windows_keeps_the_shape(disc_cup_checkpoint: Path) -> None:
    img = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    m = load_model(disc_cup_checkpoint, precision="fp32", tta=True, tile=16)
    p = m.predict(img)
    assert p.prob.shape == (2, 40, 50) and set(p.masks) == {"disc", "cup"}


@pytest.mark.parametrize(
    ("tile", "overlap", "match"), [(-2, 0.25, "positive side"), (16, 1.0, "overlap")]
)
def test_load_model_refuses_bad_windows(
    disc_cup_checkpoint: Path, tile: int, overlap: float, match: str
) -> None:
    with pytest.raises(BiounetError, match=match):
        load_model(disc_cup_checkpoint, tile=tile, tile_overlap=overlap)


def test_predict_cli_in_windows_records_the_window(
    disc_cup_checkpoint: Path, tmp_path: Path, png
) -> None:
    img = png(tmp_path / "in" / "a.png", np.full((40, 50, 3), 120, np.uint8))
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(disc_cup_checkpoint), "--out", str(out), str(img)]
    assert main([*args, "--tile", "16", "--tile-overlap", "0.5", "--precision", "fp32"]) == 0
    settings = json.loads((out / "predict_settings.json").read_text())
    assert (settings["tile"], settings["tile_overlap"]) == (16, 0.5)
    assert (out / "a_disc.png").is_file() and (out / "measures.csv").is_file()
    # the same folder with whole images is another job: refused, nothing overwritten
    assert main([*args, "--tile", "0", "--precision", "fp32"]) != 0


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--tile", "-3", "positive side"),
        ("--tile", "big", "whole number or auto"),
        ("--tile-overlap", "1", "[0, 1)"),
    ],
)
def test_predict_cli_refuses_bad_window_flags(
    disc_cup_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    args = ["predict", "--checkpoint", str(disc_cup_checkpoint), "--out", str(tmp_path), "x.png"]
    with pytest.raises(SystemExit):
        main([*args, flag, value])
    assert message in capsys.readouterr().err


def test_validation_runs_images_above_the_limit_in_windows(monkeypatch) -> None:
    from biounet import train

    calls = []
    real = train.sliding_window

    def spy(*args, **kwargs):
        calls.append(args[2])  # the window side
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "sliding_window", spy)
    x = torch.randn(2, 3, AUTO_TILE_ABOVE + 16, AUTO_TILE_ABOVE + 16)
    cpu = torch.device("cpu")
    tiled = train.val_logits(PixelWise(), x, cpu, "fp32", True)
    assert calls == [AUTO_TILE, AUTO_TILE]  # one image at a time, in AUTO_TILE windows
    with torch.no_grad():
        torch.testing.assert_close(tiled, PixelWise()(x), atol=1e-5, rtol=1e-5)
    small = x[..., :64, :64]
    train.val_logits(PixelWise(), small, cpu, "fp32", True)
    assert len(calls) == 2  # whole images up to the limit
