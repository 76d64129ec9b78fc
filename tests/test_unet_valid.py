"""The paper's unpadded U-Net: size formulas, shapes, weights shared with the padded U-Net."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from biounet.config import ModelConfig
from biounet.models import PRESETS, build_model, count_parameters
from biounet.models.unet import UNet
from biounet.models.unet_valid import UNetValid, valid_input_size, valid_output_size


def tiny(**kw: object) -> ModelConfig:
    base = ModelConfig(
        arch="unet_valid", in_channels=1, out_channels=2, base_width=4, depth=2, norm="none",
        bias=True,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


@pytest.mark.parametrize(
    ("depth", "in_size", "out_size"),
    [
        (4, 572, 388),  # the paper's Fig. 1
        (4, 188, 4),  # the smallest input of depth 4: bottleneck 4 px, which the ups keep at 4
        # depth 1 by hand: 24 -conv-> 22 -conv-> 20 -pool-> 10 -> 8 -> 6 -up-> 12 -> 10 -> 8
        (1, 24, 8),
        # depth 2: 52 -> 48 -> 24 -> 20 -> 10 -> 6 (bottleneck) -> 12 -> 8 -> 16 -> 12
        (2, 52, 12),
        (3, 124, 36),
    ],
)
def test_valid_sizes_by_hand(depth: int, in_size: int, out_size: int) -> None:
    assert valid_output_size(in_size, depth) == out_size
    assert valid_input_size(out_size, depth) == in_size


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_size_formulas_invert_each_other(depth: int) -> None:
    """Valid inputs are -4 mod 2**depth, outputs 4 mod 2**depth, and the margin is 6 * 2**depth - 4."""
    m = 2**depth
    valid_in = []
    for s in range(1, 400):
        try:
            out = valid_output_size(s, depth)
        except ValueError:
            continue
        valid_in.append(s)
        assert valid_input_size(out, depth) == s
        assert (s - out) // 2 == 6 * m - 4
        assert out % m == 4 % m
    assert valid_in and all(s % m == (-4) % m for s in valid_in)
    assert valid_in == list(range(valid_in[0], 400, m))


def test_invalid_sizes_name_the_nearest_valid_ones() -> None:
    with pytest.raises(ValueError, match="in_size 190 .*188 and 204"):
        valid_output_size(190, 4)
    with pytest.raises(ValueError, match="out_size 390 .*388 and 404"):
        valid_input_size(390, 4)
    with pytest.raises(ValueError, match="in_size 172 is too small"):
        valid_output_size(172, 4)


@pytest.mark.parametrize(
    ("cfg", "hw"),
    [
        (tiny(), (52, 56)),
        (tiny(up_mode="nearest_conv", norm="batch", bias=False), (60, 52)),
        (tiny(depth=3, in_channels=3, out_channels=1), (124, 132)),
    ],
    ids=["d2-transpose", "d2-nearest_conv-bn", "d3"],
)
def test_output_shape(cfg: ModelConfig, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model, UNetValid)
    with torch.no_grad():
        y = model(torch.randn(2, cfg.in_channels, *hw))
    expected = tuple(valid_output_size(s, cfg.depth) for s in hw)
    assert y.shape == (2, cfg.out_channels, *expected)


def test_invalid_input_is_a_clear_error() -> None:
    model = build_model(tiny())
    with pytest.raises(ValueError, match="in_size 50 is not a valid input for depth 2"):
        model(torch.randn(1, 1, 52, 50))


def test_shifting_the_input_by_2_to_the_depth_shifts_the_output() -> None:
    """No padding anywhere: an output pixel sees only its own input window, so a window shifted by a
    multiple of the pooling grid (2**depth) gives the same pixels, shifted."""
    torch.manual_seed(0)
    model = build_model(tiny()).eval()
    x = torch.randn(1, 1, 60, 64)
    with torch.no_grad():
        big = model(x)  # (1, 2, 20, 24)
        small = model(x[..., 4:56, 8:60])  # 52 x 52 -> 12 x 12
    torch.testing.assert_close(small, big[..., 4:16, 8:20])


def test_paper_valid_has_the_papers_parameters_and_unet_weights() -> None:
    assert count_parameters(build_model(PRESETS["paper_valid"])) == 31_030_658
    cfg = tiny(depth=3)
    padded = UNet(dataclasses.replace(cfg, arch="unet"))
    valid = build_model(cfg)
    valid.load_state_dict(padded.state_dict())  # strict: the same names and shapes
    assert count_parameters(valid) == count_parameters(padded)
