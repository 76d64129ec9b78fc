"""Seeded watershed from the interior map: hand-made maps where a threshold merges cells."""

from __future__ import annotations

import numpy as np
import pytest

from biounet.em.metrics import segment, v_rand
from biounet.em.postprocess import watershed_cells


def _two_cells_with_a_leaky_membrane() -> np.ndarray:
    """(40, 40) interior map: two cells (1.0) split by a 2-px membrane (0.0) at columns 19-20,
    with a 4-row gap in it where the interior probability is 0.8."""
    p = np.ones((40, 40))
    p[:, 19:21] = 0.0
    p[18:22, 19:21] = 0.8
    return p


def test_a_gap_in_the_membrane_merges_cells_by_threshold_but_not_by_watershed() -> None:
    p = _two_cells_with_a_leaky_membrane()
    assert segment(p, "interior", 0.5).max() == 1  # the threshold sees one cell
    cells = watershed_cells(p, seed_threshold=0.9, min_seed_px=5, sigma=0.0)
    assert set(np.unique(cells)) == {0, 1, 2}
    left, right = cells[0, 0], cells[0, 39]
    assert left != right and bool((cells[:, :18] == left).all())
    assert bool((cells[:, 21:] == right).all())
    # a 1-px border down the membrane (one more pixel where it steps sideways in the gap)
    per_row = (cells == 0).sum(axis=1)
    assert bool((per_row >= 1).all()) and int(per_row.sum()) <= 42
    assert bool((cells[:, 18:21] == 0).any(axis=1).all())  # on the membrane or next to it
    truth = np.where(np.arange(40)[None, :] < 19, 1, 2) * np.ones((40, 1), int)
    truth[:, 19:21] = 0
    assert v_rand(cells, truth)["v_rand"] > 0.95  # only the border pixels off the membrane cost
    assert v_rand(segment(p, "interior", 0.5), truth)["v_rand"] < 0.7


def test_no_two_cells_stay_four_adjacent() -> None:
    rng = np.random.default_rng(0)
    from scipy import ndimage

    p = ndimage.gaussian_filter(rng.random((64, 64)), 3)
    p = (p - p.min()) / (p.max() - p.min())
    cells = watershed_cells(p, seed_threshold=0.6, min_seed_px=0, sigma=0.0)
    assert cells.max() >= 2
    for a, b in ((cells[:, :-1], cells[:, 1:]), (cells[:-1, :], cells[1:, :])):
        both = (a > 0) & (b > 0)
        assert not bool((a[both] != b[both]).any())


def test_small_seeds_are_dropped_and_no_seed_gives_one_cell() -> None:
    p = np.full((30, 30), 0.6)
    p[5:8, 5:8] = 0.95  # a 9-px bright speck
    p[15:25, 15:25] = 0.95  # a 100-px cell core
    assert watershed_cells(p, 0.9, min_seed_px=20, sigma=0.0).max() == 1
    assert watershed_cells(p, 0.9, min_seed_px=1, sigma=0.0).max() == 2
    one = watershed_cells(np.full((10, 12), 0.3), 0.9)
    assert one.shape == (10, 12) and bool((one == 1).all())


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        watershed_cells(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="seed_threshold"):
        watershed_cells(np.ones((3, 3)), seed_threshold=1.0)


def test_flood_splits_a_plateau_between_two_seeds_half_way() -> None:
    # a 1 x 11 strip, all at the same (saturated) level, seeds at both ends: each takes its half,
    # the middle pixel going to the larger label (scipy's watershed_ift gives all of it to one)
    from biounet.em.postprocess import flood

    height = np.zeros((1, 11), dtype=np.int32)
    seeds = np.zeros((1, 11), dtype=np.int32)
    seeds[0, 0], seeds[0, 10] = 1, 2
    assert flood(height, seeds)[0].tolist() == [1] * 5 + [2] * 6
    # a lower valley is taken first, whatever its distance: seed 1 floods its side and the valley
    height[0, 5:8] = 0
    height[0, 1:5] = 3
    height[0, 8:10] = 3
    out = flood(height, seeds)[0].tolist()
    assert out[0] == 1 and out[10] == 2 and out[5:8] in ([1, 1, 1], [2, 2, 2], [1, 2, 2], [1, 1, 2])
    with pytest.raises(ValueError, match="one"):
        flood(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_a_thick_saturated_membrane_network_is_shared_not_taken_by_one_cell() -> None:
    # a 3 x 3 grid of cells separated by 6-px membranes at probability 0 (saturated): every cell
    # keeps its own area and half of each membrane next to it; none grows over the network
    p = np.zeros((66, 66))
    for r in range(3):
        for c in range(3):
            p[r * 22 + 3 : r * 22 + 19, c * 22 + 3 : c * 22 + 19] = 1.0
    cells = watershed_cells(p, seed_threshold=0.9, min_seed_px=5, sigma=0.0)
    sizes = np.bincount(cells.ravel())[1:]
    assert len(sizes) == 9 and sizes.max() <= 24 * 24 and sizes.min() >= 16 * 16


def _flood_by_dilation(height: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The definition, step by step: per level, every labelled region grows into its unlabelled
    4-neighbours at or below the level, all at once, the larger label winning a contested pixel."""
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(2, 1)
    lab = seeds.astype(np.int32)
    for level in range(int(height.max()) + 1):
        open_ = (height <= level) & (lab == 0)
        while open_.any():
            grown = ndimage.grey_dilation(lab, footprint=cross)
            new = open_ & (grown > 0)
            if not new.any():
                break
            lab[new] = grown[new]
            open_ &= ~new
    return lab


@pytest.mark.parametrize("seed", range(6))
def test_the_frontier_flood_equals_the_step_by_step_definition(seed: int) -> None:
    from biounet.em.postprocess import flood

    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, size=2)
    height = rng.integers(0, 6, size=(h, w))
    seeds = np.where(rng.random((h, w)) < 0.03, rng.integers(1, 9, size=(h, w)), 0)
    np.testing.assert_array_equal(flood(height, seeds), _flood_by_dilation(height, seeds))
