"""The pure parts of benchmarks/unseen_camera.py on hand-made masks."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import unseen_camera as uc
finally:
    sys.path.remove(str(BENCH))


def test_vessel_peak_is_where_the_vessels_gather() -> None:
    """Four vessels meeting at (30, 70) beat one long vessel elsewhere."""
    v = np.zeros((100, 120), bool)
    v[30, 40:100] = True  # a horizontal and a vertical vessel crossing at (30, 70)
    v[5:60, 70] = True
    v[90, :] = True  # one vessel along the bottom
    r, c = uc.vessel_peak(v, sigma=5)
    assert (r, c) == (30.0, 70.0)


def test_disc_offset_is_the_centroid_distance_and_the_height() -> None:
    disc = np.zeros((50, 50), bool)
    disc[10:21, 20:25] = True  # rows 10..20: centroid (15, 22), height 11
    dist, height = uc.disc_offset(disc, (18.0, 26.0))
    assert dist == pytest.approx(5.0) and height == 11.0  # a 3-4-5 triangle
    dist, height = uc.disc_offset(np.zeros((5, 5), bool), (0.0, 0.0))
    assert math.isnan(dist) and height == 0.0


@pytest.mark.parametrize(
    "distance, expected", [(10.0, False), (64.0, False), (64.5, True), (math.nan, True)]
)
def test_misplaced(distance: float, expected: bool) -> None:
    assert uc.misplaced(distance) is expected


def test_summarise_and_markdown() -> None:
    rows = [
        {"stem": "a", "distance": 10.0, "height": 80.0, "vcdr": 0.4, "flags": []},
        {"stem": "b", "distance": 200.0, "height": 80.0, "vcdr": 0.6, "flags": ["disc_low_confidence"]},
        {"stem": "c", "distance": math.nan, "height": 0.0, "vcdr": math.nan,
         "flags": ["disc_not_found", "disc_low_confidence"]},
    ]  # fmt: skip
    s = uc.summarise(rows)
    assert s["disc_found"] == 2 and s["misplaced"] == ["b", "c"]
    assert s["distance_median_px"] == 105.0 and s["vcdr_median"] == pytest.approx(0.5)
    assert s["flagged_doubtful"] == ["b", "c"]
    assert s["flag_counts"] == {"disc_low_confidence": 2, "disc_not_found": 1}
    assert s["vcdr_range"] == [0.4, 0.6]
    result = {
        "commit": "abc", "machine": "m", "wall_time_s": 1.0, "models": {"grey": s},
        "vcdr_colour_minus_grey": {"n": 2, "median": 0.01, "median_abs": 0.02, "max_abs": 0.1},
    }  # fmt: skip
    md = uc.markdown(result)
    assert "| grey | 2 / 3 | 2 (b, c) | 105.0 | 2 (b, c) | 0.500 [0.40, 0.60] |" in md
    assert "median +0.010" in md
