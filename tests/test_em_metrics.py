from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from biounet.em.metrics import (
    em_scores,
    fscore_error,
    interior_counts,
    pixel_error,
    rand_error,
    segment,
    thin_borders,
    v_info,
    v_rand,
)

# Split example (2x4, no boundary): the prediction cuts true cell 1 into cells 1 and 3.
#   true [[1 1 2 2]    pred [[1 3 2 2]
#         [1 1 2 2]]         [1 3 2 2]]
# contingency n_ij: (pred 1, true 1) = 2, (3, 1) = 2, (2, 2) = 4; N = 8
# sum n_ij^2 = 4 + 4 + 16 = 24; true sizes 4, 4 -> 32; pred sizes 2, 2, 4 -> 24
SPLIT_TRUE = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
SPLIT_PRED = np.array([[1, 3, 2, 2], [1, 3, 2, 2]])

# Merge example (2x4): true column 2 is boundary (excluded); the prediction joins both true
# cells into cell 5 and leaves pixel (1, 1) unlabelled (0), which becomes a singleton.
#   true [[1 1 0 2]    pred [[5 5 5 5]
#         [1 1 0 2]]         [5 0 5 5]]
# scored pixels: N = 6 (true 1: 4 px, true 2: 2 px)
# n_ij: (5, 1) = 3, (singleton, 1) = 1, (5, 2) = 2 -> sum n_ij^2 = 9 + 1 + 4 = 14
# true sizes 4, 2 -> 20; pred sizes 5, 1 -> 26
MERGE_TRUE = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
MERGE_PRED = np.array([[5, 5, 5, 5], [5, 0, 5, 5]])


def test_identical_segmentations_are_perfect():
    seg = np.array([[1, 1, 0, 2], [3, 0, 2, 2], [3, 3, 0, 4]])
    relabelled = np.where(seg > 0, seg + 10, 0)  # label values do not matter
    assert rand_error(seg, relabelled) == 0.0
    for k, v in v_rand(relabelled, seg).items():
        assert v == pytest.approx(1.0), k
    for k, v in v_info(relabelled, seg).items():
        assert v == pytest.approx(1.0), k


def test_v_rand_split_example():
    r = v_rand(SPLIT_PRED, SPLIT_TRUE)
    assert r["v_rand_split"] == pytest.approx(24 / 32)  # 3/4
    assert r["v_rand_merge"] == pytest.approx(24 / 24)  # no merge
    assert r["v_rand"] == pytest.approx(2 * 24 / (24 + 32))  # 6/7


def test_v_info_split_example():
    # In bits: H(T) = H(1/2, 1/2) = 1; H(S) = H(1/4, 1/4, 1/2) = 1.5; H(S, T) = H(S) = 1.5
    # I = 1 + 1.5 - 1.5 = 1 -> split = 1 / 1.5 = 2/3, merge = 1 / 1 = 1, v_info = 2 / 2.5 = 4/5
    r = v_info(SPLIT_PRED, SPLIT_TRUE)
    assert r["v_info_split"] == pytest.approx(2 / 3)
    assert r["v_info_merge"] == pytest.approx(1.0)
    assert r["v_info"] == pytest.approx(4 / 5)


def test_rand_error_split_example():
    # 28 pairs; the only disagreeing pairs join a pred-1 and a pred-3 pixel of true cell 1: 2 * 2 = 4
    # formula: (32 + 24) / 2 - 24 = 4
    assert rand_error(SPLIT_PRED, SPLIT_TRUE) == pytest.approx(4 / 28)


def test_v_rand_merge_example_with_predicted_background():
    r = v_rand(MERGE_PRED, MERGE_TRUE)
    assert r["v_rand_split"] == pytest.approx(14 / 20)  # 7/10
    assert r["v_rand_merge"] == pytest.approx(14 / 26)  # 7/13
    assert r["v_rand"] == pytest.approx(2 * 14 / (20 + 26))  # 14/23


def test_v_info_merge_example_with_predicted_background():
    # T = (4/6, 2/6): H(T) = log2(3) - 2/3
    # S = (5/6, 1/6): H(S) = log2(6) - (5/6) log2(5)
    # joint = (3/6, 1/6, 2/6): H(S, T) = 1/2 + (1/6) log2(6) + (1/3) log2(3)
    h_t = math.log2(3) - 2 / 3
    h_s = math.log2(6) - 5 / 6 * math.log2(5)
    h_st = 0.5 + math.log2(6) / 6 + math.log2(3) / 3
    mi = h_s + h_t - h_st  # 0.10917...
    r = v_info(MERGE_PRED, MERGE_TRUE)
    assert r["v_info_split"] == pytest.approx(mi / h_s)  # 0.1679...
    assert r["v_info_merge"] == pytest.approx(mi / h_t)  # 0.1189...
    assert r["v_info"] == pytest.approx(2 * mi / (h_s + h_t))


def test_rand_error_counts_label_zero_as_a_segment():
    # All 8 pixels. true sizes: 1 -> 4, 0 -> 2, 2 -> 2 (sum sq 24); pred: 5 -> 7, 0 -> 1 (50)
    # n_ij: (1, 5) = 3, (1, 0) = 1, (0, 5) = 2, (2, 5) = 2 -> 18; (24 + 50) / 2 - 18 = 19 of 28
    assert rand_error(MERGE_PRED, MERGE_TRUE) == pytest.approx(19 / 28)


def _brute_rand_error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    pairs = list(itertools.combinations(range(a.size), 2))
    bad = sum((a[i] == a[j]) != (b[i] == b[j]) for i, j in pairs)
    return bad / len(pairs)


def test_rand_error_equals_brute_force_pairs():
    rng = np.random.default_rng(0)
    for _ in range(3):
        a, b = rng.integers(0, 3, (4, 5)), rng.integers(0, 4, (4, 5))
        assert rand_error(a, b) == pytest.approx(_brute_rand_error(a, b))
        assert rand_error(a, b) == pytest.approx(rand_error(b, a))


def test_v_rand_equals_brute_force_ordered_pairs():
    # split = P(same pred | same true), merge = P(same true | same pred) over ordered pairs of
    # scored pixels (a pixel paired with itself included), predicted 0 = singleton.
    rng = np.random.default_rng(1)
    true, pred = rng.integers(0, 3, (4, 4)), rng.integers(0, 3, (4, 4))
    true[0, 0] = 1  # at least one scored pixel
    idx = np.flatnonzero(true.ravel() > 0)
    t, p = true.ravel()[idx], pred.ravel()[idx]
    same_t = t[:, None] == t[None, :]
    same_p = (p[:, None] == p[None, :]) & (p[:, None] > 0) | np.eye(idx.size, dtype=bool)
    both = np.sum(same_t & same_p)
    r = v_rand(pred, true)
    assert r["v_rand_split"] == pytest.approx(both / same_t.sum())
    assert r["v_rand_merge"] == pytest.approx(both / same_p.sum())


def test_v_info_single_segment_conventions():
    true = np.array([[1, 1, 1, 1]])
    r = v_info(np.array([[1, 1, 2, 2]]), true)  # H(T) = 0: truth cannot be merged
    assert (r["v_info_split"], r["v_info_merge"], r["v_info"]) == (0.0, 1.0, 0.0)
    r = v_info(np.array([[3, 3, 3, 3]]), true)
    assert (r["v_info_split"], r["v_info_merge"], r["v_info"]) == (1.0, 1.0, 1.0)


def test_segment_interior_four_connectivity():
    # ISBI label convention: 255 = cell, 0 = membrane. The two cells on the right touch only
    # diagonally, so they stay apart.
    x = np.array(
        [
            [255, 255, 0, 255],
            [255, 255, 0, 0],
            [0, 0, 255, 0],
            [255, 0, 0, 255],
        ],
        dtype=np.uint8,
    )
    expected = np.array([[1, 1, 0, 2], [1, 1, 0, 0], [0, 0, 3, 0], [4, 0, 0, 5]])
    np.testing.assert_array_equal(segment(x), expected)
    assert segment(x).dtype == np.int32


def test_segment_membrane_probability_threshold():
    prob = np.array([[0.1, 0.7, 0.2], [0.5, 0.9, 0.51]])
    # membrane where prob > 0.5: (0, 1), (1, 1), (1, 2); 0.5 itself is cell
    np.testing.assert_array_equal(segment(prob, kind="membrane"), [[1, 0, 2], [1, 0, 0]])
    with pytest.raises(ValueError, match="kind"):
        segment(prob, kind="boundary")


def test_pixel_error():
    pred = np.array([[0.9, 0.2], [0.6, 0.4]])
    true = np.array([[1, 0], [0, 0]])
    assert pixel_error(pred, true) == 0.25  # only (1, 0) differs
    with pytest.raises(ValueError, match="shape"):
        pixel_error(pred, true[:1])


def test_challenge_pixel_error_is_one_minus_the_interior_f_score():
    true = np.array([[1, 0, 0], [0, 0, 1]])  # membrane; interior = the four 0s
    prob = np.array([[0.9, 0.2, 0.7], [0.1, 0.4, 0.3]])  # predicted interior: prob <= 0.5
    # interior predicted at (0,1) (1,0) (1,1) (1,2); true at (0,1) (0,2) (1,0) (1,1)
    assert interior_counts(prob, true) == (3, 1, 1)
    assert fscore_error(3, 1, 1) == pytest.approx(1 - 6 / 8)
    assert pixel_error(prob, true) == pytest.approx(2 / 6)  # the mislabelled fraction differs
    assert em_scores(prob, true)["pixel_error_fscore"] == pytest.approx(0.25)
    assert interior_counts(prob, true, threshold=0.8) == (4, 1, 0)  # (0, 2) now interior too
    assert fscore_error(0, 0, 0) == 0.0
    with pytest.raises(ValueError, match="shape"):
        interior_counts(prob, true[:1])


def test_em_scores_bundle():
    true = np.zeros((5, 5), dtype=np.uint8)
    true[2, :] = 1  # one membrane row: two cells of 10 px
    perfect = em_scores(true.astype(np.float32), true)
    assert perfect["pixel_error"] == 0.0
    assert perfect["rand_error"] == 0.0
    assert perfect["v_rand"] == pytest.approx(1.0)
    assert perfect["v_info"] == pytest.approx(1.0)
    # The predicted membrane misses one pixel: the cells merge through (2, 0).
    prob = true.astype(np.float32) * 0.8
    prob[2, 0] = 0.3
    s = em_scores(prob, true)
    assert s["pixel_error"] == pytest.approx(1 / 25)
    # scored: 20 true-cell px, all in one predicted cell -> merge = (100+100)/400, split = 1
    assert s["v_rand_split"] == pytest.approx(1.0)
    assert s["v_rand_merge"] == pytest.approx(0.5)
    assert s["adapted_rand_error"] == pytest.approx(1 - 2 * 200 / (400 + 200))


def test_errors_name_arguments():
    with pytest.raises(ValueError, match="no foreground"):
        v_rand(np.ones((2, 2), dtype=int), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        v_info(np.ones((2, 2)), np.ones((2, 2), dtype=int))


@pytest.mark.parametrize(
    ("row", "want"),
    [
        ([1, 0, 2], [1, 0, 2]),  # a 1 px border stays
        ([1, 0, 0, 2], [1, 0, 2, 2]),  # 2 px: the row on the smaller label's side stays
        ([2, 0, 0, 1], [2, 2, 0, 1]),
        ([1, 1, 0, 0, 0, 2, 2], [1, 1, 1, 0, 2, 2, 2]),  # 3 px: each side takes its nearest pixel
        ([1, 2, 0, 0], [1, 2, 2, 2]),  # a border touching one cell only joins it
        ([0, 0, 0], [0, 0, 0]),  # no cell: nothing to join
    ],
)
def test_thin_borders_rows(row: list[int], want: list[int]) -> None:
    assert thin_borders(np.array([row])).tolist() == [want]


def test_thin_borders_keeps_cells_apart_in_2d() -> None:
    seg = np.zeros((5, 5), dtype=int)
    seg[0, 0], seg[4, 4] = 1, 2
    thin = thin_borders(seg)
    assert set(np.unique(thin)) == {0, 1, 2}
    # what is left of the border is one diagonal, which 4-connectivity does not cross
    assert np.array_equal(thin == 0, np.fliplr(np.eye(5, dtype=bool)))
    assert np.array_equal(segment(thin > 0, "interior", 0.5) > 0, thin > 0)
    assert len(np.unique(segment((thin > 0).astype(float), "interior")[thin > 0])) == 2


def test_thinned_scores_forgive_a_thick_border_but_not_a_merge() -> None:
    # truth: two 10 px tall cells split by a 1 px membrane column; prediction: the same split
    # drawn 3 px thick. Unthinned, the 2 extra border columns (20 px) are singletons inside true
    # cells: sum n_ij^2 = 2 * 40^2 + 20 = sum s_i^2, sum t_j^2 = 2 * 50^2 -> V_rand = 6440 / 8220.
    true = np.zeros((10, 11), dtype=np.uint8)
    true[:, 5] = 1
    prob = true.astype(np.float32)
    prob[:, 4] = prob[:, 6] = 0.9
    s = em_scores(prob, true)
    assert s["v_rand"] == pytest.approx(2 * 3220 / (3220 + 5000))
    assert s["v_rand_thinned"] == pytest.approx(1.0)
    assert s["v_info_thinned"] == pytest.approx(1.0)
    # a gap in the predicted border merges the two cells: thinning does not hide that
    prob[3, 4:7] = 0.0
    s = em_scores(prob, true)
    assert s["v_rand_thinned"] < 0.7
