from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from biounet.em.weightmap import (
    class_balance_weights,
    two_nearest_cell_distances,
    unet_weight_map,
)


def _two_squares() -> np.ndarray:
    """40x40 background with two 4x4 cells, rows 2-5, columns 2-5 and 7-10: a 1-px gap at column 6."""
    interior = np.zeros((40, 40), dtype=bool)
    interior[2:6, 2:6] = True
    interior[2:6, 7:11] = True
    return interior


def test_class_balance_rarer_class_weighs_one():
    interior = _two_squares()  # 32 cell px of 1600: f_in = 1/50, f_bg = 49/50
    w_bg, w_in = class_balance_weights(interior)
    assert w_in == pytest.approx(1.0)
    assert w_bg == pytest.approx((1 / 50) / (49 / 50))  # 1/49
    assert class_balance_weights(np.ones((3, 3), dtype=bool)) == (1.0, 1.0)


def test_gap_between_two_cells_gets_the_border_weight():
    interior = _two_squares()
    w = unet_weight_map(interior)
    assert w.dtype == np.float32 and w.shape == (40, 40)
    w_bg = 1 / 49
    # gap pixel (3, 6): 1 px from each cell -> w_c + 10 exp(-(1 + 1)^2 / (2 * 25))
    assert w[3, 6] == pytest.approx(w_bg + 10 * math.exp(-4 / 50), rel=1e-6)
    # (8, 6), 3 rows below the gap: nearest pixels (5, 5) and (5, 7), both at sqrt(10)
    # -> 10 exp(-(2 sqrt(10))^2 / 50) = 10 exp(-0.8)
    assert w[8, 6] == pytest.approx(w_bg + 10 * math.exp(-0.8), rel=1e-6)
    # (3, 0): 2 px from the left cell, 7 px from the right one -> 10 exp(-81 / 50)
    assert w[3, 0] == pytest.approx(w_bg + 10 * math.exp(-81 / 50), rel=1e-6)
    # far corner: d1 + d2 > 90 px, the border term vanishes
    assert w[39, 39] == pytest.approx(w_bg, abs=1e-12)
    # every cell pixel gets the interior class weight, nothing else
    np.testing.assert_allclose(w[interior], 1.0)


def test_one_pixel_gap_between_large_cells():
    # 5x9, column 4 is the only membrane: f_bg = 5/45 = 1/9 (weight 1), f_in = 8/9 (weight 1/8)
    interior = np.ones((5, 9), dtype=bool)
    interior[:, 4] = False
    w = unet_weight_map(interior, w0=10.0, sigma=5.0)
    np.testing.assert_allclose(w[:, 4], 1 + 10 * math.exp(-4 / 50), rtol=1e-6)
    np.testing.assert_allclose(w[interior], 1 / 8, rtol=1e-6)


def test_single_cell_has_no_border_term():
    interior = np.zeros((10, 10), dtype=bool)
    interior[3:6, 3:6] = True  # 9 of 100
    w = unet_weight_map(interior)
    np.testing.assert_allclose(w[~interior], 9 / 91, rtol=1e-6)
    np.testing.assert_allclose(w[interior], 1.0)


def test_class_freq_override():
    interior = _two_squares()
    w = unet_weight_map(interior, class_freq=(0.25, 0.75))  # membrane rarer: 1 and 1/3
    np.testing.assert_allclose(w[interior], 1 / 3, rtol=1e-6)
    assert w[39, 39] == pytest.approx(1.0)


def test_distances_two_smallest_per_pixel():
    # three cells in a row: labels 1, 2, 3 at columns 0, 2, 5 of a 1x6 strip
    labels = np.array([[1, 0, 2, 0, 0, 3]])
    d1, d2 = two_nearest_cell_distances(labels, 3)
    np.testing.assert_allclose(d1, [[0, 1, 0, 1, 1, 0]])
    np.testing.assert_allclose(d2, [[2, 1, 2, 2, 2, 3]])


def test_truncation_error_is_bounded():
    rng = np.random.default_rng(0)
    blobs = ndimage.gaussian_filter(rng.standard_normal((48, 48)), 2.0) > 0.3
    exact = unet_weight_map(blobs, truncate=None)
    for truncate in (2.0, 4.0):
        fast = unet_weight_map(blobs, truncate=truncate)
        bound = 10.0 * math.exp(-(truncate**2) / 2)
        assert np.abs(fast - exact).max() <= bound + 1e-6


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="interior"):
        unet_weight_map(np.zeros((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="sigma"):
        unet_weight_map(np.zeros((4, 4), dtype=bool), sigma=0.0)
