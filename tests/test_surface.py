"""Boundary distances against hand-computed values and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biounet.errors import BiounetError
from biounet.surface import average_surface_distance, boundary, hd95, surface_distances


def _square(top: int, left: int, size: int = 10, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


def _brute_force(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances by comparing every boundary pixel pair, boundary from explicit 4-neighbours."""

    def edge(m: np.ndarray) -> np.ndarray:
        p = np.pad(m, 1)
        interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        return np.argwhere(m & ~interior) * np.asarray(spacing)

    pa, pb = edge(a), edge(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))  # (|A|, |B|)
    return d.min(axis=1), d.min(axis=0)


def test_boundary_of_square_is_its_perimeter() -> None:
    m = _square(10, 10, size=3)
    assert boundary(m).sum() == 8 and not boundary(m)[11, 11]
    edge_touching = np.ones((4, 4), dtype=bool)  # every pixel touches the image edge except 4
    assert boundary(edge_touching).sum() == 12


def test_identical_masks_are_zero() -> None:
    a = _square(10, 10)
    assert hd95(a, a) == 0.0
    assert average_surface_distance(a, a) == 0.0


def test_square_shifted_three_columns_by_hand() -> None:
    # A: rows/cols 10..19; B: rows 10..19, cols 13..22. A's 36 boundary pixels to B's boundary:
    # top and bottom rows 3, 2, 1 then seven 0s (cols 13..19 lie on B's top/bottom rows);
    # left column (rows 11..18) 3 each, to B's left column;
    # right column (rows 11..18) min(distance to B's top or bottom row, 3 to B's right column):
    # 1, 2, 3, 3, 3, 3, 2, 1. B to A is the mirror image, so the same multiset.
    a, b = _square(10, 10), _square(10, 13)
    by_hand = sorted(2 * [3, 2, 1] + 14 * [0] + 8 * [3] + [1, 2, 3, 3, 3, 3, 2, 1])
    d_ab, d_ba = surface_distances(a, b)
    assert sorted(d_ab) == by_hand and sorted(d_ba) == by_hand
    # 14 zeros, 4 ones, 4 twos, 14 threes: the 95th percentile index 0.95 * 35 = 33.25 is a 3.
    assert hd95(a, b) == 3.0
    assert average_surface_distance(a, b) == pytest.approx(54 / 36)  # sum 6 + 6 + 24 + 18


def test_anisotropic_spacing_scales_columns() -> None:
    # Columns 2 units wide: top/bottom rows become 6, 4, 2; left column 6; the right column keeps
    # its vertical distances 1, 2, 3, 4 and 4 (row 15: 4 up to row 19 beats 6 across): sum 20.
    a, b = _square(10, 10), _square(10, 13)
    assert average_surface_distance(a, b, spacing=(1.0, 2.0)) == pytest.approx(92 / 36)
    assert hd95(a, b, spacing=(1.0, 2.0)) == 6.0
    assert hd95(a, b, spacing=(2.0, 2.0)) == 6.0


def test_hd95_is_max_of_directed_percentiles_not_pooled() -> None:
    # a: one pixel; b: that pixel and another 10 columns away. d_ab = [0]; d_ba = [0, 10].
    # Directed 95th percentiles 0 and 9.5 -> 9.5 (pooled [0, 0, 10] would give 9.0).
    a = np.zeros((32, 32), dtype=bool)
    a[10, 10] = True
    b = a.copy()
    b[10, 20] = True
    assert hd95(a, b) == pytest.approx(9.5)
    assert average_surface_distance(a, b) == pytest.approx(10 / 3)  # pooled mean of [0, 0, 10]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.5)])
def test_matches_brute_force_on_random_masks(seed: int, spacing: tuple[float, float]) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.random((24, 20)) < 0.3, rng.random((24, 20)) < 0.3
    d_ab, d_ba = _brute_force(a, b, spacing)
    expected_hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    expected_asd = np.concatenate([d_ab, d_ba]).mean()
    assert hd95(a, b, spacing) == pytest.approx(expected_hd95)
    assert average_surface_distance(a, b, spacing) == pytest.approx(expected_asd)


def test_empty_mask_conventions() -> None:
    empty, a = np.zeros((16, 16), dtype=bool), _square(2, 2, size=5, shape=(16, 16))
    assert hd95(empty, empty) == 0.0 and average_surface_distance(empty, empty) == 0.0
    assert hd95(a, empty) == math.inf and hd95(empty, a) == math.inf
    assert average_surface_distance(a, empty) == math.inf


def test_bad_input_raises() -> None:
    with pytest.raises(BiounetError, match="one shape"):
        hd95(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(BiounetError, match="spacing"):
        average_surface_distance(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0, 0.0))
