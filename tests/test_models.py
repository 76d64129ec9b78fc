"""U-Net shapes for any input size, exact parameter counts, the preset registry."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from biounet.config import ModelConfig
from biounet.errors import BiounetError
from biounet.models import PRESETS, build_model, count_parameters, preset
from biounet.models.blocks import UpSample

SIZES = [(17, 23), (32, 32), (45, 60), (64, 31)]

# Tiny configs (base width 4) over every depth / decoder / norm choice, plus the small preset.
TINY = [
    ModelConfig(in_channels=c_in, out_channels=c_out, base_width=4, depth=d, up_mode=up, norm=nm)
    for (d, up, nm), (c_in, c_out) in zip(
        itertools.product((2, 3, 4), ("transpose", "nearest_conv"), ("batch", "none")),
        itertools.cycle([(1, 2), (3, 1), (3, 3)]),
        strict=False,
    )
]
CONFIGS = [pytest.param(PRESETS["small"], id="small")] + [
    pytest.param(c, id=f"w4-d{c.depth}-{c.up_mode}-{c.norm}-{c.in_channels}to{c.out_channels}")
    for c in TINY
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shape(cfg: ModelConfig, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randn(2, cfg.in_channels, *hw)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, cfg.out_channels, *hw)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_odd_input_equals_crop_of_zero_padded_input() -> None:
    """The network pads odd sizes with zeros to a multiple of 2**depth and crops the result back."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(in_channels=1, out_channels=2, base_width=4, depth=3)).eval()
    x = torch.randn(1, 1, 17, 23)
    with torch.no_grad():
        y_odd = model(x)
        y_pad = model(F.pad(x, (0, 24 - 23, 0, 24 - 17)))
    assert y_pad.shape == (1, 2, 24, 24)
    torch.testing.assert_close(y_odd, y_pad[..., :17, :23])


def test_training_mode_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_width=4, depth=2, up_mode="nearest_conv")).train()
    model(torch.randn(2, 3, 20, 28)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        ("seed", {}, 34_527_106),
        ("paper", {"in_channels": 1}, 31_030_658),
        ("small", {}, 1_942_594),
    ],
)
def test_preset_parameter_counts(name: str, overrides: dict, expected: int) -> None:
    assert count_parameters(build_model(preset(name, **overrides))) == expected


@pytest.mark.parametrize(
    ("norm", "bias", "expected"),
    [
        # inc 1->4: (36+4) + (144+4) = 188; down 4->8: (288+8) + (576+8) = 880;
        # up: ConvTranspose 8->4 2x2 (128+4) + conv 8->4 (288+4) + conv 4->4 (144+4) = 572; head 4+1.
        ("none", True, 188 + 880 + 572 + 5),
        # no conv biases, BatchNorm adds 2 per channel; the transposed conv keeps its bias.
        (
            "batch",
            False,
            (36 + 8 + 144 + 8) + (288 + 16 + 576 + 16) + (132 + 288 + 8 + 144 + 8) + 5,
        ),
    ],
)
def test_parameter_count_by_hand(norm: str, bias: bool, expected: int) -> None:
    cfg = ModelConfig(in_channels=1, out_channels=1, base_width=4, depth=1, norm=norm, bias=bias)
    assert count_parameters(build_model(cfg)) == expected


def test_nearest_conv_decoder_parameter_count_by_hand() -> None:
    # Like above with norm none and bias, but the up step is a 3x3 conv 8->4 (288+4) instead of 132.
    cfg = ModelConfig(
        in_channels=1, out_channels=1, base_width=4, depth=1, norm="none", bias=True,
        up_mode="nearest_conv",
    )  # fmt: skip
    assert count_parameters(build_model(cfg)) == 188 + 880 + (292 + 292 + 148) + 5


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(BiounetError, match="'nope'") as e:
        preset("nope")
    for name in ("seed", "paper", "small", "medium"):
        assert name in str(e.value)


def test_preset_overrides_replace_fields_and_ignore_none() -> None:
    cfg = preset("small", in_channels=1, out_channels=None)
    assert cfg == dataclasses.replace(PRESETS["small"], in_channels=1)
    assert PRESETS["small"].in_channels == 3  # the registry itself is untouched


def test_unknown_architecture_is_an_error() -> None:
    with pytest.raises(BiounetError, match="unknown architecture 'vnet'; valid: unet"):
        build_model(ModelConfig(arch="vnet"))


def test_unknown_up_mode_names_the_argument() -> None:
    with pytest.raises(ValueError, match="up_mode.*'bilinear'"):
        UpSample(8, 4, mode="bilinear", norm="batch", bias=False)
