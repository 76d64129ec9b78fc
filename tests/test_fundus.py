"""Fundus post-processing and cup-to-disc measures against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biounet.errors import BiounetError
from biounet.fundus.cdr import (
    area_cdr,
    clinical_measures,
    horizontal_cdr,
    isnt_rim_widths,
    vertical_cdr,
)
from biounet.fundus.postprocess import (
    clean_disc_cup,
    ellipse_from_moments,
    fill_holes,
    largest_component,
    rasterize_ellipse,
)

SHAPE = (64, 64)


def _rect(r0: int, r1: int, c0: int, c1: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Rows r0..r1 and columns c0..c1, inclusive."""
    m = np.zeros(shape, dtype=bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


def _circle(cy: float, cx: float, r: float, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    return rasterize_ellipse(shape, cy, cx, r, r)


# --- cup-to-disc ratios -------------------------------------------------------------------------


def test_cdr_of_rectangles() -> None:
    disc = _rect(10, 29, 10, 39)  # 20 rows, 30 columns, 600 px
    cup = _rect(15, 24, 20, 29)  # 10 rows, 10 columns, 100 px
    assert vertical_cdr(disc, cup) == 0.5
    assert horizontal_cdr(disc, cup) == pytest.approx(1 / 3)
    assert area_cdr(disc, cup) == pytest.approx(1 / 6)


def test_extent_spans_first_to_last_row_across_gaps() -> None:
    disc = _rect(10, 29, 10, 39)
    cup = _rect(15, 16, 20, 29) | _rect(23, 24, 20, 29)  # rows 15..24 spanned, 4 rows filled
    assert vertical_cdr(disc, cup) == 0.5


def test_cdr_empty_conventions() -> None:
    disc, empty = _rect(10, 29, 10, 39), np.zeros(SHAPE, dtype=bool)
    assert vertical_cdr(disc, empty) == 0.0 and area_cdr(disc, empty) == 0.0
    assert math.isnan(vertical_cdr(empty, empty))
    assert math.isnan(horizontal_cdr(empty, _rect(1, 2, 1, 2)))
    assert math.isnan(area_cdr(empty, empty))


def test_clinical_measures_row() -> None:
    row = clinical_measures(_rect(10, 29, 10, 39), _rect(15, 24, 20, 29))
    assert row["vcdr"] == 0.5 and row["acdr"] == pytest.approx(1 / 6)
    assert (row["disc_area_px"], row["cup_area_px"]) == (600, 100)
    assert (row["disc_height_px"], row["cup_height_px"]) == (20, 10)
    assert (row["disc_width_px"], row["cup_width_px"]) == (30, 10)
    assert {"rim_inferior", "rim_superior", "rim_nasal", "rim_temporal", "isnt_rule"} <= set(row)


def test_mismatched_or_non_2d_masks_raise() -> None:
    with pytest.raises(BiounetError, match="cup shape"):
        vertical_cdr(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(BiounetError, match="2-D"):
        area_cdr(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))


# --- ISNT rim widths ----------------------------------------------------------------------------


def _analytic_rims(disc_r: float, cup_c: tuple[float, float], cup_r: float) -> dict[str, float]:
    """Continuous rim widths for a disc centred at the origin and a circular cup at (row, col)
    offset ``cup_c``: along unit ray u the cup ends at u.c + sqrt(r^2 - |c|^2 + (u.c)^2)."""
    out = {}
    for name, axis in {"right": 0, "inferior": 90, "left": 180, "superior": 270}.items():
        a = np.deg2rad(axis + np.arange(-45, 46))
        uc = np.sin(a) * cup_c[0] + np.cos(a) * cup_c[1]
        far = uc + np.sqrt(cup_r**2 - cup_c[0] ** 2 - cup_c[1] ** 2 + uc**2)
        out[name] = float((disc_r - far).mean())
    return out


def test_concentric_circles_rim_is_ten() -> None:
    rims = isnt_rim_widths(_circle(32, 32, 20), _circle(32, 32, 10))
    for k in ("inferior", "superior", "nasal", "temporal", "left", "right"):
        assert rims[k] == pytest.approx(10.0, abs=1.0)
    # isnt_rule is a chain of >= on equal-up-to-rounding widths here, so it is not asserted.


def test_empty_cup_rim_is_disc_radius() -> None:
    rims = isnt_rim_widths(_circle(32, 32, 20), np.zeros(SHAPE, dtype=bool))
    for k in ("inferior", "superior", "left", "right"):
        assert rims[k] == pytest.approx(20.0, abs=1.0)


def test_cup_shifted_up_has_widest_inferior_rim() -> None:
    # Cup centre 4 px above the disc centre: on the vertical axis the inferior rim is
    # 20 - (10 - 4) = 14 and the superior 20 - (10 + 4) = 6; sector means from the analytic formula.
    rims = isnt_rim_widths(_circle(32, 32, 20), _circle(28, 32, 10))
    expected = _analytic_rims(20.0, (-4.0, 0.0), 10.0)
    for k in ("inferior", "superior", "left", "right"):
        assert rims[k] == pytest.approx(expected[k], abs=0.75)
    assert rims["inferior"] == max(rims[k] for k in ("inferior", "superior", "nasal", "temporal"))
    assert rims["isnt_rule"] is False  # superior (about 6.5) < nasal (about 10.6)


def test_isnt_rule_holds_for_wide_cup_displaced_temporally() -> None:
    # Disc right of the image centre, so with eye unknown nasal = right and temporal = left.
    # Cup 12 px wide, 6 px tall, 1 px up, 2 px left: on the axes I = 20 - 5 = 15, S = 20 - 7 = 13,
    # N = 20 - 10 = 10, T = 20 - 14 = 6.
    shape = (64, 80)
    disc, cup = _circle(32, 50, 20, shape), rasterize_ellipse(shape, 31, 48, 6, 12)
    rims = isnt_rim_widths(disc, cup)
    assert rims["nasal"] == rims["right"] and rims["temporal"] == rims["left"]
    assert rims["inferior"] > rims["superior"] > rims["nasal"] > rims["temporal"]
    assert rims["isnt_rule"] is True
    assert isnt_rim_widths(disc, cup, eye="OD")["isnt_rule"] is True
    os_rims = isnt_rim_widths(disc, cup, eye="OS")  # a left eye: nasal is the image's left
    assert os_rims["nasal"] == rims["left"] and os_rims["isnt_rule"] is False


def test_disc_on_middle_column_leaves_nasal_unknown() -> None:
    rims = isnt_rim_widths(_circle(32, 32, 10, (64, 65)), np.zeros((64, 65), dtype=bool))
    assert math.isnan(rims["nasal"]) and math.isnan(rims["temporal"])
    assert not math.isnan(rims["left"]) and rims["isnt_rule"] is False


def test_a_disc_centred_image_leaves_nasal_and_temporal_unknown() -> None:
    # the disc off the middle column, which would make "unknown" guess a side
    disc, cup = _circle(32, 50, 20, (64, 80)), _circle(32, 50, 8, (64, 80))
    rims = isnt_rim_widths(disc, cup, eye="crop")
    assert math.isnan(rims["nasal"]) and math.isnan(rims["temporal"])
    assert rims["left"] == isnt_rim_widths(disc, cup)["left"] and rims["isnt_rule"] is False


def test_rim_empty_disc_and_bad_eye() -> None:
    empty = np.zeros(SHAPE, dtype=bool)
    rims = isnt_rim_widths(empty, empty)
    assert math.isnan(rims["inferior"]) and rims["isnt_rule"] is False
    with pytest.raises(BiounetError, match="eye"):
        isnt_rim_widths(empty, empty, eye="right")


# --- post-processing ----------------------------------------------------------------------------


def test_largest_component_is_eight_connected() -> None:
    m = np.zeros((16, 16), dtype=bool)
    m[np.arange(5), np.arange(5)] = True  # diagonal of 5 px: one 8-connected component
    m[10:12, 10:12] = True  # 2 x 2 = 4 px
    kept = largest_component(m)
    assert kept.sum() == 5 and not kept[10:12, 10:12].any()
    assert not largest_component(np.zeros((4, 4))).any()


def test_fill_holes_of_ring() -> None:
    ring = _rect(10, 19, 10, 19) & ~_rect(13, 16, 13, 16)  # 100 - 16 = 84 px
    assert ring.sum() == 84
    np.testing.assert_array_equal(fill_holes(ring), _rect(10, 19, 10, 19))


def test_clean_disc_cup_keeps_one_filled_disc_and_clips_cup() -> None:
    disc_true = _circle(32, 32, 15)
    disc = disc_true & ~_rect(30, 33, 30, 33) | _rect(2, 4, 2, 4)  # hole + stray blob
    cup = _rect(20, 44, 40, 55) | _rect(25, 26, 25, 26)  # crosses the disc edge at col 47 + blob
    d, c = clean_disc_cup(disc, cup)
    np.testing.assert_array_equal(d, disc_true)
    np.testing.assert_array_equal(c, _rect(20, 44, 40, 55) & disc_true)


def test_clean_disc_cup_empty_cases() -> None:
    disc, empty = _circle(32, 32, 15), np.zeros(SHAPE, dtype=bool)
    d, c = clean_disc_cup(disc, empty)
    assert d.sum() == disc.sum() and not c.any()
    d, c = clean_disc_cup(empty, _circle(32, 32, 5))
    assert not d.any() and not c.any()
    d, c = clean_disc_cup(empty, empty, fit_ellipse=True)
    assert not d.any() and not c.any()


def test_clean_disc_cup_ellipse_fit_repairs_notch() -> None:
    disc_true = rasterize_ellipse(SHAPE, 32, 32, 18, 14)
    notched = disc_true & ~_rect(12, 18, 28, 36)  # bite out of the top
    cup = _circle(32, 32, 7) & ~_rect(25, 27, 30, 34)
    d, c = clean_disc_cup(notched, cup, fit_ellipse=True)
    iou = (d & disc_true).sum() / (d | disc_true).sum()
    assert iou > 0.9
    assert not (c & ~d).any() and c.sum() > 0


def test_ellipse_from_moments_recovers_rotated_ellipse() -> None:
    m = rasterize_ellipse((96, 96), 40, 50, 12, 20, angle=0.3)
    cy, cx, ry, rx, angle = ellipse_from_moments(m)
    assert (cy, cx) == (pytest.approx(40, abs=0.1), pytest.approx(50, abs=0.1))
    assert ry == pytest.approx(12, abs=1) and rx == pytest.approx(20, abs=1)
    assert angle == pytest.approx(0.3, abs=0.02)


def test_ellipse_angle_is_folded_into_quarter_turn() -> None:
    # angle 1.2 > pi/4 is reported as 1.2 - pi/2 with the semi-axes swapped.
    m = rasterize_ellipse((96, 96), 48, 48, 12, 20, angle=1.2)
    _, _, ry, rx, angle = ellipse_from_moments(m)
    assert angle == pytest.approx(1.2 - math.pi / 2, abs=0.02)
    assert ry == pytest.approx(20, abs=1) and rx == pytest.approx(12, abs=1)
    tall = rasterize_ellipse((96, 96), 48, 48, 30, 10)
    _, _, ry, rx, angle = ellipse_from_moments(tall)
    assert angle == pytest.approx(0.0, abs=1e-12) and ry > rx


def test_single_pixel_ellipse_rasterises_to_itself() -> None:
    m = _rect(5, 5, 7, 7, (16, 16))
    np.testing.assert_array_equal(rasterize_ellipse(m.shape, *ellipse_from_moments(m)), m)


def test_ellipse_bad_input_raises() -> None:
    with pytest.raises(BiounetError, match="empty"):
        ellipse_from_moments(np.zeros((8, 8)))
    with pytest.raises(BiounetError, match="semi-axes"):
        rasterize_ellipse((8, 8), 4, 4, 0.0, 2.0)
