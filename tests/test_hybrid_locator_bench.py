"""benchmarks/hybrid_locator.py's composition: one run's locator, another's crop model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import hybrid_locator as hl
finally:
    sys.path.remove(str(BENCH))


def test_composed_pipeline_locates_as_the_grey_run_and_segments_crops_as_the_colour_run(
    synthetic_data, tiny_fundus, tmp_path
) -> None:
    from biounet.checkpoint import load_any
    from biounet.fundus.pipeline import FundusPredictor, fit_fundus

    grey = fit_fundus(tiny_fundus(synthetic_data, grey=True, seed=1), tmp_path / "grey").parent
    colour = fit_fundus(tiny_fundus(synthetic_data), tmp_path / "colour").parent
    ck = load_any(hl.compose(grey, colour, tmp_path / "hybrid"))
    assert ck.parts["locator"].model_config.in_channels == 1
    assert ck.parts["roi"].model_config.in_channels == 3
    assert ck.settings["composed"] == {"locator": str(grey), "roi": str(colour)}
    grey_run = FundusPredictor(load_any(grey / "fundus.pt"), precision="fp32")
    colour_crops = FundusPredictor(
        load_any(colour / "fundus.pt"), precision="fp32", input_kind="crop"
    )
    img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    assert FundusPredictor(ck, precision="fp32").locate(img)[0] == grey_run.locate(img)[0]
    hybrid_crops = FundusPredictor(ck, precision="fp32", input_kind="crop")
    np.testing.assert_allclose(
        hybrid_crops.predict(img).prob, colour_crops.predict(img).prob, atol=1e-6
    )
