"""Tiled inference: pure tiling helpers, sliding window == direct forward, overlap-tile == one
forward pass of the mirror-padded image."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from biounet.config import ModelConfig
from biounet.infer_tiling import (
    gaussian_weights,
    mirror_indices,
    mirror_pad,
    overlap_tile,
    predict_overlap_tile,
    sliding_window,
    tile_starts,
)
from biounet.models import build_model
from biounet.models.unet_valid import valid_input_size


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        (10, 4, 0.5, [0, 2, 4, 6]),  # step 2 fits exactly
        (10, 4, 0.25, [0, 3, 6]),  # step 3
        (11, 4, 0.25, [0, 2, 5, 7]),  # 4 tiles needed, spread evenly: 7/3 apart, rounded
        (8, 4, 0.0, [0, 4]),
        (5, 8, 0.5, [0]),  # tile larger than the image
    ],
)
def test_tile_starts_by_hand(size: int, tile: int, overlap: float, expected: list[int]) -> None:
    assert tile_starts(size, tile, overlap) == expected


@pytest.mark.parametrize("size", [7, 16, 33, 100, 257])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_tile_starts_cover_the_image_with_the_overlap(size: int, overlap: float) -> None:
    tile = 16
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(size - tile, 0)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert all(b - a <= max(int(tile * (1 - overlap)), 1) for a, b in itertools.pairwise(starts))


def test_gaussian_weights_by_hand() -> None:
    g = gaussian_weights((17, 9))  # sigma = 17/8 along H, 9/8 along W
    assert g.shape == (17, 9) and g.dtype == torch.float32
    assert g[8, 4] == 1.0 == g.max()
    torch.testing.assert_close(g, g.flip(0).flip(1))
    assert g[8 + 2, 4].item() == pytest.approx(math.exp(-(2**2) / (2 * (17 / 8) ** 2)))
    assert g[8 + 2, 4 + 1].item() == pytest.approx(
        math.exp(-(2**2) / (2 * (17 / 8) ** 2) - 1 / (2 * (9 / 8) ** 2))
    )
    assert g.min() > 0


def test_mirror_indices_match_numpy_reflect_beyond_the_image() -> None:
    for size in (1, 2, 3, 5):
        expected = (
            np.pad(np.arange(size), (7, 10), mode="reflect") if size > 1 else np.zeros(17 + size)
        )
        assert mirror_indices(-7, 17 + size, size).tolist() == expected.tolist()


def test_mirror_pad_matches_torch_reflect_where_it_applies() -> None:
    x = torch.randn(2, 6, 7)
    expected = nn.functional.pad(x[None], (3, 2, 4, 5), mode="reflect")[0]
    torch.testing.assert_close(mirror_pad(x, 4, 5, 3, 2), expected)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_image_in_one_tile_equals_direct_forward(blend: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(in_channels=1, base_width=4, depth=2)).eval()
    img = torch.randn(1, 29, 37)
    with torch.no_grad():
        direct = model(img[None])[0]
    torch.testing.assert_close(sliding_window(model, img, 64, 0.5, blend), direct)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(("tile", "overlap"), [(8, 0.0), (16, 0.25), ((12, 20), 0.5), (7, 0.9)])
def test_pointwise_model_tiled_equals_direct_for_any_tiling(
    blend: str, tile: int | tuple[int, int], overlap: float
) -> None:
    """A 1x1 conv has a receptive field of one pixel: every tile predicts every pixel exactly."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 2, 1).eval()
    img = torch.randn(3, 37, 50)
    with torch.no_grad():
        direct = model(img[None])[0]
    torch.testing.assert_close(sliding_window(model, img, tile, overlap, blend, 3), direct)


def test_gaussian_blending_hides_the_tile_borders_of_a_padded_model() -> None:
    """Two 3x3 convs see 2 px of zero padding at each tile border; with half-tile overlap the
    Gaussian gives those pixels almost no weight, constant blending averages them in."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)).eval()
    img = torch.randn(2, 40, 53)
    with torch.no_grad():
        direct = model(img[None])[0]
    err = {
        b: (sliding_window(model, img, 16, 0.5, b) - direct).abs().max()
        for b in ("gaussian", "constant")
    }
    assert err["gaussian"] < 0.01 * direct.abs().max()
    assert err["gaussian"] < err["constant"] / 50


def test_tiles_go_to_the_model_in_batches_of_at_most_tile_batch() -> None:
    model = nn.Conv2d(1, 1, 1)
    sizes: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return model(x)

    img = torch.randn(1, 40, 40)
    one = sliding_window(fn, img, 16, 0.5, tile_batch=1)
    n_tiles = len(sizes)
    sizes.clear()
    five = sliding_window(fn, img, 16, 0.5, tile_batch=5)
    assert n_tiles == len(tile_starts(40, 16, 0.5)) ** 2 == 16
    assert sizes == [5, 5, 5, 1]
    torch.testing.assert_close(one, five)


def test_sliding_window_errors_name_the_argument() -> None:
    img, model = torch.randn(1, 20, 20), nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="overlap must be in"):
        sliding_window(model, img, 8, overlap=1.0)
    with pytest.raises(ValueError, match="blend must be one of"):
        sliding_window(model, img, 8, blend="median")
    with pytest.raises(ValueError, match=r"image must be \(C, H, W\)"):
        sliding_window(model, img[None], 8)
    with pytest.raises(ValueError, match="model_fn must map"):
        sliding_window(lambda x: x[..., 1:], img, 8)


@pytest.mark.parametrize(
    ("in_tile", "out_tile", "step"), [(10, 4, None), (9, 5, 3), (13, 13, None)]
)
def test_overlap_tile_of_a_centre_crop_returns_the_image(
    in_tile: int, out_tile: int, step: int | None
) -> None:
    """model_fn = the centre out_tile of each input tile: the stitched result is the image itself."""
    m = (in_tile - out_tile) // 2
    img = torch.randn(2, 23, 17)
    out = overlap_tile(
        lambda x: x[..., m : m + out_tile, m : m + out_tile], img, in_tile, out_tile, step
    )
    torch.testing.assert_close(out, img)


@pytest.mark.parametrize(("depth", "out_tile"), [(2, 12), (3, 12)])
def test_overlap_tile_equals_one_forward_of_the_mirror_padded_image(
    depth: int, out_tile: int
) -> None:
    """A valid U-Net on several mirror-padded tiles, stitched, equals the same network on the whole
    mirror-padded image (tiles step by a multiple of 2**depth, so all pooling grids line up)."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="unet_valid", in_channels=1, out_channels=2, base_width=2, depth=depth, norm="none",
        bias=True,
    )  # fmt: skip
    model = build_model(cfg).eval()
    # He init keeps the deep levels' share of the output large, so a misaligned grid would show.
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    img = torch.randn(1, 50, 37)
    out = predict_overlap_tile(model, img, out_tile=out_tile, tile_batch=3)
    in_tile = valid_input_size(out_tile, depth)
    step = out_tile - out_tile % 2**depth
    m = (in_tile - out_tile) // 2
    n_h, n_w = math.ceil(50 / step), math.ceil(37 / step)
    assert n_h * n_w > 4  # really several tiles
    padded = mirror_pad(
        img, m, (n_h - 1) * step + in_tile - m - 50, m, (n_w - 1) * step + in_tile - m - 37
    )
    with torch.no_grad():
        direct = model(padded[None])[0, :, :50, :37]
    assert out.shape == (2, 50, 37)
    torch.testing.assert_close(out, direct)
    if out_tile % 2**depth:
        # Stepping by the whole out_tile (12, not a multiple of 8) shifts the pooling grid per tile.
        misaligned = overlap_tile(model, img, in_tile, out_tile, step=out_tile)
        assert (misaligned - out).abs().max() > 0.01


def test_overlap_tile_errors() -> None:
    img = torch.randn(1, 20, 20)
    with pytest.raises(ValueError, match="even number of pixels"):
        overlap_tile(lambda x: x, img, 9, 4)
    with pytest.raises(ValueError, match="step 6 must be at most out_tile 4"):
        overlap_tile(lambda x: x, img, 8, 4, step=6)
    with pytest.raises(ValueError, match="expected"):
        overlap_tile(lambda x: x, img, 8, 4)
