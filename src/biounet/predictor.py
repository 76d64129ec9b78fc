"""One interface over every kind of checkpoint: ``make_predictor(path)`` -> an object whose
``predict(img)`` gives probabilities, final masks, and (for fundus) clinical measures."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from biounet.checkpoint import (
    Checkpoint,
    EnsembleCheckpoint,
    PipelineCheckpoint,
    load_any,
    stored_thresholds,
)
from biounet.errors import BiounetError
from biounet.fast import prepare_for_inference
from biounet.infer import pick_device, predict_images, resolve_precision
from biounet.memory import check_reuse_memory, reuse_memory

BACKENDS = ("torch", "ort")
log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """prob (L, H, W) float in [0, 1]; masks {label: (H, W) bool}; measures (e.g. vCDR); flags."""

    prob: np.ndarray
    masks: dict[str, np.ndarray]
    measures: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PredictOptions:
    """How a checkpoint is run for prediction (``make_predictor``; predict's and evaluate's flags).

    ``threshold``: probability above which a pixel is in a mask, in (0, 1). ``precision``: "auto",
    "bf16", "fp16" (CUDA) or "fp32". ``tta``: flip averaging. ``postprocess`` / ``fit_ellipse`` /
    ``input_kind`` ("auto", "full" photograph or disc-centred "crop") / ``tta_scales`` (ROI side
    factors averaged over; default with ``tta`` ``biounet.fundus.pipeline.TTA_SCALES``, without
    none): fundus pipelines only. ``backend``: "torch" or "ort" (ONNX Runtime, fp32, CPU);
    ``fast=False`` runs the model as trained (no batch-norm folding, fp32 weights). ``compile``:
    ``torch.compile`` the networks (the first image waits while they compile; faster after, for
    long lists; single U-Nets and fundus pipelines, with the torch backend). ``reuse_memory``:
    "auto"/"on" keep freed memory in the process for the next image on the CPU, "off" leaves
    malloc as it is (``biounet.memory``). ``label_thresholds``: (label, threshold) pairs that cut
    those labels' final masks instead of ``threshold`` (e.g. a cup threshold chosen by ``biounet
    choose-thresholds`` on labelled images of the site); a fundus pipeline still places its crop with
    ``threshold``. ``stored_thresholds``: where ``label_thresholds`` is empty, cut at the
    thresholds saved in the checkpoint by ``choose-thresholds --save`` (if it has them).
    ``tile`` / ``tile_overlap`` (single padded U-Nets): the network runs on overlapping windows of
    this side of the prepared image, blended (``biounet.infer.predict_images``); None: whole
    images up to ``biounet.infer.AUTO_TILE_ABOVE`` pixels, larger ones in ``AUTO_TILE`` windows;
    0: always whole."""

    precision: str = "auto"
    threshold: float = 0.5
    tta: bool = False
    postprocess: bool = True
    fit_ellipse: bool = False
    input_kind: str = "auto"
    backend: str = "torch"
    fast: bool = True
    tta_scales: tuple[float, ...] | None = None
    compile: bool = False
    reuse_memory: str = "auto"
    label_thresholds: tuple[tuple[str, float], ...] = ()
    stored_thresholds: bool = True
    tile: int | None = None
    tile_overlap: float = 0.25

    def cuts(self, labels: tuple[str, ...] | list[str]) -> dict[str, float]:
        """The threshold that cuts each of ``labels``' masks; BiounetError for a label of
        ``label_thresholds`` that is not among ``labels`` or a threshold outside (0, 1)."""
        own = dict(self.label_thresholds)
        for lb, t in own.items():
            if lb not in labels:
                raise BiounetError(
                    f"threshold {lb}={t}: the model has no label {lb!r} "
                    f"(its labels: {', '.join(labels)})"
                )
            if not 0 < t < 1:
                raise BiounetError(f"threshold {lb}={t}: must be in (0, 1)")
        return {lb: own.get(lb, self.threshold) for lb in labels}


def parse_thresholds(text: str) -> tuple[float, tuple[tuple[str, float], ...]]:
    """``--threshold``'s value -> (threshold, label_thresholds): "0.4" -> (0.4, ()), "cup=0.2"
    -> (0.5, (("cup", 0.2),)), "0.4,cup=0.2,disc=0.6" -> (0.4, (("cup", 0.2), ("disc", 0.6))).
    ValueError naming the part that is not a number or a label=number pair."""
    base, pairs = 0.5, {}
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        label, eq, value = part.rpartition("=")
        try:
            t = float(value)
        except ValueError:
            raise ValueError(f"{part!r} is not a number or label=number") from None
        if not eq:
            base = t
        elif not label.strip():
            raise ValueError(f"{part!r}: no label before '='")
        else:
            pairs[label.strip()] = t
    return check_thresholds(base, tuple(pairs.items()))


def check_thresholds(
    base: float, pairs: tuple[tuple[str, float], ...]
) -> tuple[float, tuple[tuple[str, float], ...]]:
    """(base, pairs) as given; ValueError naming the first threshold outside (0, 1)."""
    for name, t in [("threshold", base), *((f"threshold {lb}", v) for lb, v in pairs)]:
        if not 0 < t < 1:
            raise ValueError(f"{name}: must be in (0, 1), got {t}")
    return base, pairs


def threshold_fields(given: tuple[float, tuple[tuple[str, float], ...]] | None) -> dict[str, Any]:
    """``PredictOptions``' threshold fields for a threshold given as (threshold, per-label
    pairs), or for None given: 0.5 and the thresholds saved in the checkpoint (a threshold
    given replaces them). ValueError outside (0, 1)."""
    if given is None:
        return {"threshold": 0.5, "label_thresholds": (), "stored_thresholds": True}
    base, pairs = check_thresholds(*given)
    return {"threshold": base, "label_thresholds": pairs, "stored_thresholds": False}


class ModelPredictor:
    """A single U-Net checkpoint, or an ensemble of them (the mean of their probabilities), on
    whole images. ``backend``/``fast``: see ``runnable``. ``tta``: the mean of the probabilities
    of the image and of its left-right and top-bottom flips (3 forward passes per model)."""

    def __init__(
        self,
        ck: Checkpoint | list[Checkpoint],
        precision: str = "auto",
        threshold: float = 0.5,
        backend: str = "torch",
        fast: bool = True,
        tta: bool = False,
        compile: bool = False,
        cuts: dict[str, float] | None = None,
        tile: int | None = None,
        tile_overlap: float = 0.25,
    ) -> None:
        members = ck if isinstance(ck, list) else [ck]
        self.members = members
        self.ck = members[0]  # labels, and the training settings evaluate reads
        self.device, self.precision = backend_device_precision(backend, precision)
        self.models = [
            runnable(
                m, m.build().to(self.device), self.device, self.precision, backend, fast, compile
            )
            for m in members
        ]
        self.model = self.models[0]
        self.labels = self.ck.labels
        self.threshold = threshold
        # each label's mask cut (``PredictOptions.cuts``); default ``threshold`` for all
        self.cuts = cuts or {lb: threshold for lb in self.labels}
        self.tta = tta
        self.tile, self.tile_overlap = tile, tile_overlap

    def predict(self, img: np.ndarray) -> Prediction:
        return self.predict_batch([img])[0]

    def predict_batch(self, imgs: list[np.ndarray]) -> list[Prediction]:
        """Several (H, W, C) uint8 images (any sizes) through the network together, in one batch
        of len(imgs) x the TTA views; one ``Prediction`` per image, the same as ``predict``'s."""
        n_views = 3 if self.tta else 1
        views = []
        for img in imgs:
            views += [img, img[:, ::-1].copy(), img[::-1].copy()] if self.tta else [img]
        probs: list[np.ndarray] = []  # each (L, H, W): the members' mean
        for m, member in zip(self.models, self.members, strict=True):
            mp = predict_images(
                m,
                views,
                member.preprocess,
                self.device,
                self.precision,
                len(views),
                self.tile,
                self.tile_overlap,
            )
            probs = list(mp) if not probs else [a + b for a, b in zip(probs, mp, strict=True)]
        if len(self.models) > 1:
            probs = [p / len(self.models) for p in probs]
        out = []
        for k in range(len(imgs)):
            p = probs[k * n_views : (k + 1) * n_views]
            prob = p[0]
            if self.tta:  # each view's probabilities flipped back
                prob = (p[0] + p[1][:, :, ::-1] + p[2][:, ::-1]) / 3
            masks = {lb: prob[i] > self.cuts[lb] for i, lb in enumerate(self.labels)}
            out.append(Prediction(prob, masks, fundus_measures(masks)))
        return out


class FundusPipelinePredictor:
    """The two-stage fundus pipeline (see biounet.fundus.pipeline)."""

    def __init__(self, ck: PipelineCheckpoint, opts: PredictOptions) -> None:
        from biounet.fundus.pipeline import FundusPredictor

        o = opts
        device, precision = backend_device_precision(o.backend, o.precision)
        self.inner = inner = FundusPredictor(
            ck,
            precision,
            o.tta,
            o.postprocess,
            o.fit_ellipse,
            o.threshold,
            o.input_kind,
            o.tta_scales,
            device=device,
        )
        self.labels = self.inner.labels
        self.cuts = inner.cuts = o.cuts(self.labels)
        run = lambda c, m: runnable(  # noqa: E731
            c, m, inner.device, inner.precision, o.backend, o.fast, o.compile
        )
        inner.locators = [
            run(lo, m) for (lo, _), m in zip(inner.members, inner.locators, strict=True)
        ]
        inner.roi_models = [
            run(ro, m) for (_, ro), m in zip(inner.members, inner.roi_models, strict=True)
        ]

    def predict(self, img: np.ndarray) -> Prediction:
        r = self.inner.predict(img)
        kind = getattr(self.inner, "last_input_kind", "")
        measures = fundus_measures(r.masks, "crop" if kind == "crop" else "unknown")
        if r.roi is not None:
            measures.update(roi_cy=r.roi.cy, roi_cx=r.roi.cx, roi_side=r.roi.side)
        measures["input_kind"] = kind
        return Prediction(r.prob, r.masks, measures, r.flags)


def fundus_measures(masks: dict[str, np.ndarray], eye: str = "unknown") -> dict[str, Any]:
    """Cup-to-disc ratios and rim widths when the masks are a disc and a cup; else nothing.
    ``eye``: see ``biounet.fundus.cdr.isnt_rim_widths`` ("crop" for a disc-centred image)."""
    if "disc" not in masks or "cup" not in masks:
        return {}
    from biounet.fundus.cdr import clinical_measures

    return clinical_measures(masks["disc"], masks["cup"], eye)


def backend_device_precision(backend: str, precision: str) -> tuple[torch.device, str]:
    """Where and in what precision ``backend`` runs: ONNX Runtime runs fp32 on the CPU."""
    if backend not in BACKENDS:
        raise BiounetError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        device = pick_device()
        return device, resolve_precision(precision, device)
    if precision == "bf16":
        raise BiounetError("--precision bf16 is not available with --backend ort (it runs fp32)")
    return torch.device("cpu"), "fp32"


def runnable(
    ck: Checkpoint,
    model: nn.Module,
    device: torch.device,
    precision: str,
    backend: str,
    fast: bool,
    compile: bool = False,
) -> nn.Module | Any:
    """What predict runs for ``ck``: with ``backend="ort"`` the model exported to ONNX Runtime;
    else ``model`` prepared for inference when ``fast`` (batch norm folded, channels-last, bf16
    weights where ``precision`` is bf16: same outputs within bf16 rounding; with ``compile`` also
    ``torch.compile``d, see ``prepare_for_inference``), or as it is."""
    if backend == "ort":
        from biounet.export import ort_model

        return ort_model(ck)
    if not fast:
        return model
    return prepare_for_inference(model, precision, compile=compile, device=device)


def make_predictor(
    path: Path, opts: PredictOptions | None = None
) -> ModelPredictor | FundusPipelinePredictor:
    """The predictor for the checkpoint at ``path``, run as ``opts`` says (default
    ``PredictOptions()``). Refuses a threshold outside (0, 1) and ``compile`` without the torch
    fast path."""
    o = opts or PredictOptions()
    if not 0 < o.threshold < 1:  # predict, evaluate and the API alike
        raise BiounetError(f"threshold: must be in (0, 1), got {o.threshold}")
    check_tile(o.tile, o.tile_overlap)
    if o.compile and (o.backend != "torch" or not o.fast):
        raise BiounetError(
            "--compile compiles the torch fast path: not with --backend ort or --no-fast"
        )
    check_reuse_memory(o.reuse_memory)  # before the checkpoint is read
    ck = load_any(path)
    stored = stored_thresholds(ck) if o.stored_thresholds and not o.label_thresholds else {}
    if stored:
        o = dataclasses.replace(o, label_thresholds=tuple(stored.items()))
        log.info(
            "%s: masks cut at its saved thresholds %s (a --threshold replaces them)",
            path,
            ", ".join(f"{lb}={t:g}" for lb, t in stored.items()),
        )
    reuse_memory(o.reuse_memory, pick_device().type if o.backend == "torch" else "cpu")
    members = ck.members if isinstance(ck, EnsembleCheckpoint) else [ck]
    first = members[0]
    if o.tile is not None and (
        isinstance(first, PipelineCheckpoint) or first.model_config.arch == "unet_valid"
    ):
        log.warning(
            "%s: --tile concerns single padded U-Nets (a fundus pipeline runs on its disc crop, "
            "an unpadded model by overlap-tile)",
            path,
        )
    if isinstance(first, PipelineCheckpoint):
        return FundusPipelinePredictor(first, o)
    if first.model_config.arch == "unet_valid":  # output smaller than input: overlap-tile
        from biounet.em.predictor import OverlapTilePredictor

        if o.backend != "torch":
            raise BiounetError(
                f"{path}: --backend {o.backend} is not available for unet_valid models"
            )
        if o.compile:
            log.warning("%s: --compile is not used for unet_valid (overlap-tile) models", path)
        if o.label_thresholds:
            log.warning(
                "%s: per-label thresholds are not used for unet_valid models (they cut at the "
                "membrane threshold stored in the checkpoint)",
                path,
            )
        return OverlapTilePredictor(first, o.precision, o.tta)
    if o.fit_ellipse or o.input_kind != "auto" or o.tta_scales is not None:
        log.warning(
            "%s: a single model: --ellipse, --input and --tta-scales concern fundus pipelines", path
        )
    return ModelPredictor(
        members if len(members) > 1 else first,
        o.precision,
        o.threshold,
        o.backend,
        o.fast,
        o.tta,
        o.compile,
        o.cuts(first.labels),
        o.tile,
        o.tile_overlap,
    )


def check_tile(tile: int | None, overlap: float) -> None:
    """BiounetError for a window side below 0 or an overlap outside [0, 1)."""
    if tile is not None and tile < 0:
        raise BiounetError(f"tile: must be 0 (whole images) or a positive side, got {tile}")
    if not 0 <= overlap < 1:
        raise BiounetError(f"tile overlap: must be in [0, 1), got {overlap}")
