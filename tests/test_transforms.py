"""Geometry to and from the network, normalisation, channel matching, paired augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.data.transforms import (
    AugmentParams,
    Geometry,
    augment_batch,
    from_network,
    match_channels,
    normalize,
    square_geometry,
    to_network,
)

IDENTITY_GEOMETRY = {"flip": False, "rotate_deg": 0.0, "scale": (1.0, 1.0), "shift": 0.0}


def blob_masks(h: int, w: int) -> np.ndarray:
    """(2, h, w) uint8 {0,1}: an off-centre ellipse and a rectangle."""
    yy, xx = np.mgrid[0:h, 0:w]
    ell = ((yy - 0.4 * h) / (0.25 * h)) ** 2 + ((xx - 0.6 * w) / (0.2 * w)) ** 2 < 1
    rect = np.zeros((h, w), bool)
    rect[h // 5 : h // 2, w // 8 : w // 3] = True
    return np.stack([ell, rect]).astype(np.uint8)


@pytest.mark.parametrize(
    ("h", "w", "size", "expected"),
    [
        (30, 50, 64, Geometry(30, 50, 10, 0, 50, 64)),
        (51, 20, 32, Geometry(51, 20, 0, 15, 51, 32)),
        (40, 40, 40, Geometry(40, 40, 0, 0, 40, 40)),
    ],
)
def test_square_geometry(h: int, w: int, size: int, expected: Geometry) -> None:
    assert square_geometry(h, w, size) == expected


def test_to_network_centres_the_image_on_a_zero_square() -> None:
    img = np.random.default_rng(0).integers(1, 256, (30, 50, 3), dtype=np.uint8)
    out = to_network(img, square_geometry(30, 50, 50), is_mask=False)  # side == size: no resize
    assert out.shape == (3, 50, 50) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out[:, 10:40].permute(1, 2, 0).numpy(), img)
    assert out[:, :10].sum() == 0 and out[:, 40:].sum() == 0


@pytest.mark.parametrize(("h", "w"), [(30, 50), (50, 30), (37, 21)])
@pytest.mark.parametrize("size", [64, 24])
def test_image_to_network_shape(h: int, w: int, size: int) -> None:
    img = np.full((h, w, 1), 200, np.uint8)
    out = to_network(img, square_geometry(h, w, size), is_mask=False)
    assert out.shape == (1, size, size) and out.dtype == torch.uint8
    assert out.max() == 200  # area / bilinear resampling of a flat image keeps its value


@pytest.mark.parametrize(("h", "w"), [(30, 50), (50, 30), (37, 21)])
@pytest.mark.parametrize("factor", [1, 2])
def test_mask_round_trip_is_exact_at_integer_scale(h: int, w: int, factor: int) -> None:
    mask = blob_masks(h, w)
    geo = square_geometry(h, w, max(h, w) * factor)
    net = to_network(mask, geo, is_mask=True)
    assert net.shape == (2, geo.size, geo.size)
    assert set(net.unique().tolist()) <= {0, 1}
    back = from_network(net.float(), geo)
    assert back.shape == (2, h, w)
    np.testing.assert_array_equal(back.numpy() > 0.5, mask.astype(bool))


@pytest.mark.parametrize(("h", "w", "size"), [(30, 50, 64), (50, 30, 41), (37, 21, 96)])
def test_mask_round_trip_keeps_shape_and_overlap(h: int, w: int, size: int) -> None:
    mask = blob_masks(h, w)
    geo = square_geometry(h, w, size)
    back = from_network(to_network(mask, geo, is_mask=True).float(), geo).numpy() > 0.5
    assert back.shape == (2, h, w)
    assert (back == mask.astype(bool)).mean() >= 0.95


def make_batch(b: int = 4, s: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """img (b, 3, s, s) uint8 whose channel 0 is exactly mask label 0 * 255; mask (b, 2, s, s) {0,1}."""
    mask = torch.from_numpy(blob_masks(s, s))[None].repeat(b, 1, 1, 1)
    noise = torch.randint(0, 256, (b, 2, s, s), generator=torch.Generator().manual_seed(0))
    img = torch.cat([mask[:, :1] * 255, noise.to(torch.uint8)], dim=1)
    return img.to(torch.uint8), mask


def test_augment_keeps_masks_binary_and_aligned() -> None:
    img, mask = make_batch()
    gen = torch.Generator().manual_seed(123)
    x, y = augment_batch(img, mask, AugmentParams(), gen)
    assert x.shape == (4, 3, 64, 64) and y.shape == (4, 2, 64, 64)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert x.min() >= 0 and x.max() <= 1
    # the warp did something (else alignment would be trivial) ...
    assert (y != mask.float()).any()
    # ... and the same warp went to the image: channel 0 still shows label 0, per image.
    # (brightness/contrast/gamma keep 1 above 0.5 and 0 below: 1*0.85 - 0.15 > 0.5 > 0 + 0.15)
    for i in range(4):
        agree = ((x[i, 0] > 0.5) == (y[i, 0] > 0.5)).float().mean().item()
        assert agree >= 0.98, f"image {i}: image and mask agree on only {agree:.3f} of pixels"


def test_augment_is_reproducible_with_the_same_seed() -> None:
    img, mask = make_batch(2, 32)
    a = augment_batch(img, mask, AugmentParams(), torch.Generator().manual_seed(5))
    b = augment_batch(img, mask, AugmentParams(), torch.Generator().manual_seed(5))
    c = augment_batch(img, mask, AugmentParams(), torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a[0], c[0])


def test_augment_without_any_change_is_identity() -> None:
    img, mask = make_batch(2, 32)
    p = AugmentParams(**IDENTITY_GEOMETRY, brightness=0.0, contrast=0.0, gamma=0.0)
    x, y = augment_batch(img, mask, p, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, img.float() / 255, atol=1e-5, rtol=0)
    torch.testing.assert_close(y, mask.float(), atol=0, rtol=0)


def test_strong_brightness_and_contrast_stay_in_unit_range() -> None:
    img = torch.tensor([0, 1, 128, 254, 255], dtype=torch.uint8).repeat(8, 1, 5, 1)  # (8, 1, 5, 5)
    mask = torch.zeros(8, 1, 5, 5, dtype=torch.uint8)
    p = AugmentParams(**IDENTITY_GEOMETRY, brightness=0.8, contrast=0.9, gamma=1.5)
    x, _ = augment_batch(img, mask, p, torch.Generator().manual_seed(0))
    assert x.min() >= 0 and x.max() <= 1
    # clipping happens (so the bounds were tested), and the order of grey levels survives
    assert (x == 0).any() or (x == 1).any()
    assert (x[..., 1:] >= x[..., :-1]).all()


def test_normalize_zero_mean_unit_std_per_image_and_channel() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 16, 20, generator=g) * 200 + torch.tensor([10.0, 40.0])[:, None, None]
    y = normalize(x.to(torch.uint8))
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=(2, 3)), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(2, 3)), torch.ones(3, 2), atol=1e-4, rtol=0)


def test_normalize_is_independent_of_gain_and_offset() -> None:
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(normalize(x), normalize(x * 7 + 3), atol=1e-4, rtol=0)


def test_normalize_constant_channel_is_zero_not_nan() -> None:
    y = normalize(torch.full((1, 1, 4, 4), 77, dtype=torch.uint8))
    assert torch.equal(y, torch.zeros(1, 1, 4, 4))


def test_match_channels_grey_to_rgb_repeats() -> None:
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey[..., 0])


def test_match_channels_rgb_to_grey_is_luminance() -> None:
    rgb = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]], np.uint8
    )
    grey = match_channels(rgb, 1)
    assert grey.shape == (1, 5, 1) and grey.dtype == np.uint8
    # 0.299*255 = 76.2, 0.587*255 = 149.7, 0.114*255 = 29.1, 255, 2.99 + 11.74 + 3.42 = 18.15
    assert grey[0, :, 0].tolist() == [76, 150, 29, 255, 18]


def test_match_channels_same_count_is_unchanged_and_others_fail() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    assert match_channels(rgb, 3) is rgb
    with pytest.raises(ValueError, match="cannot map 2 image channels to 3"):
        match_channels(np.zeros((2, 2, 2), np.uint8), 3)
