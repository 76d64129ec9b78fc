from __future__ import annotations

import pytest
import torch

from biounet.data.elastic import elastic_deform, elastic_displacement


def _blobs(b: int = 2, s: int = 64) -> torch.Tensor:
    """(B, 1, S, S) {0,1}: a disc and a bar per sample, large enough to survive a 10 px warp."""
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    out = torch.zeros(b, 1, s, s)
    for i in range(b):
        disc = (yy - 20 - 4 * i) ** 2 + (xx - 24) ** 2 < 12**2
        bar = (yy > 40) & (yy < 52) & (xx > 8 + 3 * i) & (xx < 56)
        out[i, 0] = (disc | bar).float()
    return out


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mask_stays_binary_and_aligned_with_image():
    mask = _blobs()
    img = torch.cat([mask, torch.rand_like(mask)], dim=1)  # channel 0 equals the mask
    x, y = elastic_deform(img, mask, _gen(0))
    assert x.shape == img.shape and y.shape == mask.shape
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    agree = ((x[:, :1] > 0.5) == (y > 0.5)).float().mean().item()
    assert agree >= 0.98
    assert not torch.equal(y, mask)  # it did move


def test_zero_std_is_identity():
    img, mask = torch.rand(2, 3, 17, 23), _blobs(2, 23)[:, :, :17]
    x, y = elastic_deform(img, mask, _gen(0), std_px=0.0)
    torch.testing.assert_close(x, img, atol=1e-5, rtol=0)
    assert torch.equal(y, mask)


def test_seeded_is_repeatable():
    img, mask = torch.rand(2, 1, 32, 32), _blobs(2, 32)
    a = elastic_deform(img, mask, _gen(7))
    b = elastic_deform(img, mask, _gen(7))
    c = elastic_deform(img, mask, _gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_displacement_passes_through_the_coarse_vectors():
    # align_corners=True bicubic: corners and, for a 33 px side and a 3x3 grid, the centre pixel
    # carry the coarse N(0, 10^2) vectors unchanged.
    coarse = torch.randn(1, 2, 3, 3, generator=_gen(3)) * 10.0
    d = elastic_displacement(1, 33, 33, _gen(3), grid=3, std_px=10.0)
    assert d.shape == (1, 2, 33, 33)
    torch.testing.assert_close(d[..., 0, 0], coarse[..., 0, 0])
    torch.testing.assert_close(d[..., 16, 16], coarse[..., 1, 1])
    torch.testing.assert_close(d[..., 32, 32], coarse[..., 2, 2])


def test_grid_needs_two_control_points_per_side():
    with pytest.raises(ValueError, match="grid"):
        elastic_displacement(1, 8, 8, _gen(0), grid=1)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="mask"):
        elastic_deform(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 9), _gen(0))
    with pytest.raises(ValueError, match="padding_mode"):
        elastic_deform(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), _gen(0), padding_mode="wrap")
