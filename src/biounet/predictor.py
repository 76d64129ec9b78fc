"""One interface over every kind of checkpoint: ``make_predictor(path)`` -> an object whose
``predict(img)`` gives probabilities, final masks, and (for fundus) clinical measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biounet.checkpoint import Checkpoint, PipelineCheckpoint, load_any
from biounet.infer import pick_device, predict_images, resolve_precision


@dataclass
class Prediction:
    """prob (L, H, W) float in [0, 1]; masks {label: (H, W) bool}; measures (e.g. vCDR); flags."""

    prob: np.ndarray
    masks: dict[str, np.ndarray]
    measures: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


class ModelPredictor:
    """A single U-Net checkpoint on whole images."""

    def __init__(self, ck: Checkpoint, precision: str = "auto", threshold: float = 0.5) -> None:
        self.ck = ck
        self.device = pick_device()
        self.precision = resolve_precision(precision, self.device)
        self.model = ck.build().to(self.device)
        self.labels = ck.labels
        self.threshold = threshold

    def predict(self, img: np.ndarray) -> Prediction:
        prob = next(
            predict_images(self.model, [img], self.ck.preprocess, self.device, self.precision, 1)
        )
        masks = {lb: prob[i] > self.threshold for i, lb in enumerate(self.labels)}
        return Prediction(prob, masks, fundus_measures(masks))


class FundusPipelinePredictor:
    """The two-stage fundus pipeline (see biounet.fundus.pipeline)."""

    def __init__(
        self,
        ck: PipelineCheckpoint,
        precision: str = "auto",
        threshold: float = 0.5,
        tta: bool = False,
        postprocess: bool = True,
        fit_ellipse: bool = False,
    ) -> None:
        from biounet.fundus.pipeline import FundusPredictor

        self.inner = FundusPredictor(ck, precision, tta, postprocess, fit_ellipse, threshold)
        self.labels = self.inner.labels

    def predict(self, img: np.ndarray) -> Prediction:
        r = self.inner.predict(img)
        measures = fundus_measures(r.masks)
        if r.roi is not None:
            measures.update(roi_cy=r.roi.cy, roi_cx=r.roi.cx, roi_side=r.roi.side)
        return Prediction(r.prob, r.masks, measures, r.flags)


def fundus_measures(masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Cup-to-disc ratios and rim widths when the masks are a disc and a cup; else nothing."""
    if "disc" not in masks or "cup" not in masks:
        return {}
    from biounet.fundus.cdr import clinical_measures

    return clinical_measures(masks["disc"], masks["cup"])


def make_predictor(
    path: Path,
    precision: str = "auto",
    threshold: float = 0.5,
    tta: bool = False,
    postprocess: bool = True,
    fit_ellipse: bool = False,
) -> ModelPredictor | FundusPipelinePredictor:
    ck = load_any(path)
    if isinstance(ck, PipelineCheckpoint):
        return FundusPipelinePredictor(ck, precision, threshold, tta, postprocess, fit_ellipse)
    return ModelPredictor(ck, precision, threshold)
