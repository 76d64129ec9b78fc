"""Camera augmentation: hand-checked pieces, and the whole keeps shape, range and seed."""

from __future__ import annotations

import pytest
import torch

from biounet.data.camera import (
    CameraParams,
    ColourParams,
    camera_augment,
    colour_augment,
    colour_cast,
    gaussian_blur,
    illumination_field,
    jpeg,
    saturate,
)


def test_colour_cast_multiplies_each_channel_by_its_gain_and_clamps() -> None:
    x = torch.full((1, 3, 2, 2), 0.5)
    out = colour_cast(x, torch.log(torch.tensor([[0.5, 1.0, 4.0]])))
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.25, 0.5, 1.0])


def test_flat_illumination_grid_is_a_constant_gain() -> None:
    f = illumination_field(torch.full((2, 1, 3, 3), 0.2), (7, 9))
    assert f.shape == (2, 1, 7, 9)
    assert torch.allclose(f, torch.full_like(f, torch.exp(torch.tensor(0.2)).item()))


def test_blur_keeps_a_constant_image_and_spreads_an_impulse_symmetrically() -> None:
    flat = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)
    imp = torch.zeros(1, 1, 21, 21)
    imp[0, 0, 10, 10] = 1.0
    b = gaussian_blur(imp, 1.0)[0, 0]
    assert b.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert b[10, 9].item() == pytest.approx(b[9, 10].item()) == pytest.approx(b[10, 11].item())
    assert b[10, 10] > b[10, 11] > b[10, 12]


def test_jpeg_round_trip_is_close_at_high_quality_and_worse_at_low() -> None:
    g = torch.Generator().manual_seed(0)
    x = gaussian_blur(torch.rand(1, 3, 32, 32, generator=g), 2.0)[0]
    hi = (jpeg(x, 95) - x).abs().mean().item()
    lo = (jpeg(x, 10) - x).abs().mean().item()
    assert jpeg(x, 95).shape == x.shape and hi < 0.02 and lo > hi
    assert jpeg(x[:1], 90).shape == (1, 32, 32)  # grey images too


def test_camera_augment_keeps_shape_and_range_is_seeded_and_off_at_p0() -> None:
    x = torch.rand(6, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    a = camera_augment(x, torch.Generator().manual_seed(5))
    b = camera_augment(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, x)
    off = camera_augment(x, torch.Generator().manual_seed(5), CameraParams(p=0.0))
    assert torch.allclose(off, x, atol=1e-6)
    grey = camera_augment(x[:, :1], torch.Generator().manual_seed(5))
    assert grey.shape == (6, 1, 24, 20)


def test_saturate_zero_is_luminance_one_is_identity_two_doubles_the_distance() -> None:
    x = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1).expand(3, 3, 1, 1)
    grey = 0.299 * 0.5 + 0.587 * 0.25  # 0.29625
    out = saturate(x, torch.tensor([0.0, 1.0, 2.0]))
    assert out[0, :, 0, 0].tolist() == pytest.approx([grey] * 3)
    assert out[1, :, 0, 0].tolist() == pytest.approx([0.5, 0.25, 0.0])
    # 2x the distance from grey, clamped to [0, 1]: 0.70375, 0.20375, -0.29625 -> 0
    assert out[2, :, 0, 0].tolist() == pytest.approx([0.70375, 0.20375, 0.0])


def test_colour_augment_gamma_only_moves_mid_greys_and_is_seeded() -> None:
    x = torch.rand(8, 3, 6, 5, generator=torch.Generator().manual_seed(2))
    a = colour_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, colour_augment(x, torch.Generator().manual_seed(3)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    off = colour_augment(x, torch.Generator().manual_seed(3), ColourParams(p=0.0))
    assert torch.allclose(off, x, atol=1e-6)
    # gamma alone (no saturation change) keeps black black and white white
    ends = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(8, 3, 1, 2)
    g = colour_augment(ends, torch.Generator().manual_seed(3), ColourParams(saturation=(1, 1)))
    assert torch.equal(g, ends)
    grey = colour_augment(x[:, :1], torch.Generator().manual_seed(3))  # no saturation for grey
    assert grey.shape == (8, 1, 6, 5)


def test_colour_augment_turns_some_images_grey() -> None:
    x = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    p = ColourParams(p=1.0, saturation=(0.0, 0.0), gamma=0.0)
    out = colour_augment(x, torch.Generator().manual_seed(0), p)
    assert out.std(dim=1).max().item() < 1e-6  # every image grey: channels equal


def test_colour_augment_option_reaches_both_fundus_stages_and_plain_training() -> None:
    from biounet.cli import parser
    from biounet.cli_commands import build_run_config
    from biounet.fundus.pipeline import FundusConfig, stage_configs

    loc, roi = stage_configs(FundusConfig(colour_augment=True))
    assert loc.data.colour_augment and roi.data.colour_augment
    assert not stage_configs(FundusConfig())[1].data.colour_augment
    a = parser().parse_args(["train", "--data", "d", "--out", "o", "--colour-augment"])
    assert build_run_config(a).data.colour_augment
    a = parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert not build_run_config(a).data.colour_augment


def test_fundus_training_with_one_input_channel_is_a_grey_pipeline(monkeypatch) -> None:
    import biounet.fundus.pipeline as pipeline
    from biounet.cli import main

    seen = []
    monkeypatch.setattr(pipeline, "fit_fundus", lambda fc, out: seen.append(fc) or out)
    for extra in (["--in-channels", "1", "--colour-augment"], []):
        main(["train", "--pipeline", "fundus", "--data", "d", "--out", "o", *extra])
    assert seen[0].grey and seen[0].colour_augment
    assert not seen[1].grey and not seen[1].colour_augment


def test_appearance_augment_is_camera_then_colour_each_when_asked() -> None:
    from biounet.data.camera import appearance_augment

    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    g = gen()
    both = colour_augment(camera_augment(x, g), g)
    assert torch.equal(appearance_augment(x, gen(), True, True), both)
    assert torch.equal(appearance_augment(x, gen(), True, False), camera_augment(x, gen()))
    assert torch.equal(appearance_augment(x, gen(), False, True), colour_augment(x, gen()))
    assert appearance_augment(x, gen(), False, False) is x
