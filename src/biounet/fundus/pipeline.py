"""The two-stage fundus pipeline: locate the optic disc on the whole (downscaled) photograph, then
segment disc and cup on a disc-centred crop at higher resolution, paste back, post-process.

``fit_fundus(cfg, out_dir)`` trains both stages and writes ``out_dir/fundus.pt`` (one file holding
both models and the settings); ``FundusPredictor`` runs it on any fundus image.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biounet.checkpoint import PipelineCheckpoint, save_pipeline
from biounet.config import DataConfig, RunConfig, TrainConfig
from biounet.data.io import read_image
from biounet.errors import BiounetError
from biounet.fundus.polar import from_polar, to_polar
from biounet.fundus.roi import Roi, crop_roi_windows, disc_roi, paste_polar, paste_roi
from biounet.fundus.train_roi import (
    SCALE_JITTER,
    check_soft_maps,
    load_full,
    n_batches,
    roi_arrays,
    roi_batches,
)
from biounet.infer import (
    forward_probs,
    pick_device,
    predict_images,
    preprocess_spec,
    resolve_precision,
)
from biounet.metrics import binary_scores
from biounet.models import preset
from biounet.train import fit, seed_everything, train_loop, with_data_facts
from biounet.train_data import holds_out, split_samples

log = logging.getLogger(__name__)

# The ROI model's disc may imply a ROI this many times the locator's. Measured on the training
# splits: 0.88-1.29 for models trained on the images' dataset (Drishti-GS1 50, REFUGE 120);
# 1.17-1.57 on the Drishti-GS1 photographs where a REFUGE-only model failed (test sets: alike)
SIZE_AGREEMENT = (0.75, 1.33)
# Starting ROIs of a disc-centred crop, x the image's larger side: a disc spanning 0.36-0.87 of the
# side (10-60 % of the area) wants 0.72-1.75 x at roi_scale 2; training's 0.8-1.25 x scale jitter
# covers the rest.
CROP_FACTORS = (0.8, 1.25, 1.75)
# With TTA, the ROI model also reads crops of these sides x the found ROI's (the range its training
# crops were drawn from, SCALE_JITTER), the probabilities averaged. Chosen by the Drishti-GS1 5-fold
# cross-validation (out-of-fold, 50 training photographs, flips on; benchmarks/drishti_scales.py):
# vCDR error 0.0399 -> 0.0368, cup Dice 0.9174 -> 0.9185, disc 0.9730 -> 0.9731; (0.85, 1, 1.15)
# and (0.9, 1, 1.1) gained less. Costs two more ROI reads per image.
TTA_SCALES = (SCALE_JITTER[0], 1.0, SCALE_JITTER[1])
# A disc reaching the image's edge whose bounding box is off the image's centre by more than this
# share of the side is "disc_cut_by_border". From REFUGE *training* images: predicted discs of 100
# disc-centred crops (disc at 60 % of the area) were off by at most 0.056 (28 of them graze the
# edge); 30 crops cut with the disc's centre at a tenth of the side from the left edge, 0.053-0.30
# (28 of 30 above 0.08).
CUT_OFFSET = 0.08
# A photograph's disc spans about 12-25 % of its larger side (Drishti-GS1 0.16-0.25, REFUGE Canon
# 0.12-0.22). A located disc under MIN_DISC_SPAN of it is a locator unsure of the size (a Drishti-GS1
# training photograph, cross-validation: max disc probability 0.62, a 21-px blob on a 201-px disc):
# its centre is kept and the ROI model's reading searched at DISC_SPANS x the side instead.
MIN_DISC_SPAN = 0.05
DISC_SPANS = (0.07, 0.105, 0.16, 0.24)
# The share of a crop that its disc may fill (``FundusPredictor.crop_doubts``). Measured with the
# two-dataset model on crops of 12 Drishti-GS1 and 12 REFUGE training photographs, the disc at 10,
# 30 and 60 % of the area: 0.097-0.643. Pictures that are not fundus crops: EM slices 0.017-0.067,
# noise 0.02-0.06, uniform / gradient / radial pictures 0.85-1.0.
CROP_DISC_SHARE = (0.07, 0.75)
# The Dice two plausible readings of one image (as a crop, as a photograph) must reach to count as
# one answer. On training images: crops whose photograph reading raised no flag 0.21-0.36 (3 of
# 84), photographs cut to their field of view whose crop reading raised none 0.0-0.41 (REFUGE) and
# 0.72-0.84 (Drishti-GS1, crop readings of disc Dice 0.72-0.84 against the photograph's 0.98)
AGREE = 0.9


@dataclass(frozen=True)
class FundusConfig:
    """Both stages' settings. Sizes are the square sides the networks see; ``roi_scale`` is the crop side
    relative to the located disc's larger extent (a disc-relative scale, whatever the camera);
    ``roi_scale_jitter`` the range of the log-uniform factor on it for training crops (wider: a ROI
    model that tolerates a locator's disc size further off, or discs of other cameras' look);
    ``soft_targets`` trains the ROI model on the annotators' agreement maps next to the masks
    (``<root>/softmaps/<label>/``, see ``train_roi.soft_map_path``) instead of the binary masks;
    its validation (the best epoch) stays on the binary masks. ``polar``: the ROI model works on
    the crops resampled to polar coordinates around their centre (``biounet.fundus.polar``; its
    validation Dice is then measured there too); predict maps its output back. ``polar_area_loss``
    (with ``polar``): the ROI model's loss weighs each polar pixel by the crop area it stands for
    (``biounet.losses.pixel_weights``). ``colour_augment``: saturation and per-channel gamma
    augmentation (``biounet.data.camera.colour_augment``). ``grey``: both stages see the images'
    luminance (one input channel; predict converts any image the same way): no camera's colours
    to learn. ``in_channels``: 0 = the images' own channels, 3 = RGB (grey images repeated), 1 =
    as ``grey``. ``locator_grey``: the locator alone on the luminance, the crop model on
    ``in_channels`` (an option, not a default: benchmarks/hybrid_locator.py)."""

    data_root: str = ""
    labels: tuple[str, ...] = ("disc", "cup")
    locator_size: int = 256
    locator_preset: str = "small"
    locator_epochs: int = 40
    roi_size: int = 256
    roi_scale: float = 2.0
    roi_scale_jitter: tuple[float, float] = SCALE_JITTER
    roi_preset: str = "small"
    roi_epochs: int = 120
    batch_size: int = 8
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    seed: int = 0
    val_fraction: float = 0.2
    precision: str = "auto"
    locator_minutes: float = 0.0
    roi_minutes: float = 0.0
    train_split: str = "train"
    camera_augment: bool = False
    colour_augment: bool = False
    grey: bool = False
    in_channels: int = 0
    locator_grey: bool = False
    soft_targets: bool = False
    polar: bool = False
    polar_area_loss: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.polar_area_loss and not self.polar:
            raise BiounetError("polar_area_loss weighs polar pixels: it needs polar crops (polar)")
        if self.in_channels not in (0, 1, 3) or (self.grey and self.in_channels == 3):
            raise BiounetError(
                f"in_channels {self.in_channels} (grey {self.grey}): a fundus pipeline takes 0 "
                "(the images' channels), 1 (grey) or 3 (RGB)"
            )

    @property
    def channels(self) -> int:
        """The stages' input channels: 1 for a grey pipeline, else ``in_channels`` (0: the
        images')."""
        return 1 if self.grey else self.in_channels


def stage_configs(fc: FundusConfig) -> tuple[RunConfig, RunConfig]:
    common = {
        "root": fc.data_root,
        "val_fraction": fc.val_fraction,
        "train_split": fc.train_split,
        "camera_augment": fc.camera_augment,
        "colour_augment": fc.colour_augment,
    }
    train = {
        "batch_size": fc.batch_size,
        "lr": fc.lr,
        "seed": fc.seed,
        "precision": fc.precision,
        "lr_schedule": fc.lr_schedule,
    }
    loc = RunConfig(
        data=DataConfig(labels=fc.labels, image_size=fc.locator_size, **common),
        model=preset(fc.locator_preset, in_channels=1 if fc.locator_grey else fc.channels),
        train=TrainConfig(epochs=fc.locator_epochs, max_minutes=fc.locator_minutes, **train),
        preset=fc.locator_preset,
    )
    roi = RunConfig(
        data=DataConfig(labels=fc.labels, image_size=fc.roi_size, **common),
        model=preset(fc.roi_preset, in_channels=fc.channels),
        train=TrainConfig(
            epochs=fc.roi_epochs,
            max_minutes=fc.roi_minutes,
            pixel_weight="polar_area" if fc.polar_area_loss else "uniform",  # needs polar
            **train,
        ),
        preset=fc.roi_preset,
    )
    return loc, roi


def fit_fundus(fc: FundusConfig, out_dir: Path, reuse_locator: bool = False) -> Path:
    """Train locator then ROI model; returns the path of the bundled ``fundus.pt``.
    ``reuse_locator``: keep an ``out_dir/locator/best.pt`` already there (a run whose ROI stage
    stopped, or ROI-model variants sharing one locator) instead of training it again."""
    resolve_precision(fc.precision, pick_device())  # fp16 on a CPU: refused before any folder
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loc_cfg, roi_cfg = stage_configs(fc)
    if fc.soft_targets:  # a missing agreement map stops the run before any training
        tr, _, labels = split_samples(roi_cfg)
        check_soft_maps(tr, labels)
    t0 = time.perf_counter()
    if reuse_locator and (out_dir / "locator" / "best.pt").is_file():
        log.info("%s: reusing the trained locator", out_dir / "locator" / "best.pt")
    else:
        fit(loc_cfg, out_dir / "locator")
    t_loc = time.perf_counter() - t0
    gen = seed_everything(fc.seed)
    tr, val, labels = split_samples(roi_cfg)
    # the config's (1 for a grey pipeline) or the images', as prepare_data decides the locator's
    channels = roi_cfg.model.in_channels or read_image(tr[0].image).shape[-1]
    roi_cfg = with_data_facts(roi_cfg, labels, channels)
    (out_dir / "roi").mkdir(exist_ok=True)
    roi_cfg.save_yaml(out_dir / "roi" / "config.yaml")
    full_tr = load_full(
        tr, labels, channels, fc.roi_scale, max_scale=fc.roi_scale_jitter[1], soft=fc.soft_targets
    )
    full_val = load_full(val, labels, channels, fc.roi_scale)
    prep = {**preprocess_spec(fc.roi_size, channels), "roi_scale": fc.roi_scale}
    if fc.polar:
        prep["polar"] = True
    train_loop(
        roi_cfg,
        lambda: roi_batches(full_tr, roi_cfg, gen, scale=fc.roi_scale_jitter, polar=fc.polar),
        n_batches(full_tr, fc.batch_size),
        roi_arrays(full_val, fc.roi_size, polar=fc.polar),
        out_dir / "roi",
        prep,
        keep_last=not holds_out(tr, val),
    )
    settings = {
        **dataclasses.asdict(fc),
        "train_seconds": {"locator": t_loc, "total": time.perf_counter() - t0},
    }
    save_pipeline(
        out_dir / "fundus.pt",
        {"locator": out_dir / "locator" / "best.pt", "roi": out_dir / "roi" / "best.pt"},
        settings,
    )
    return out_dir / "fundus.pt"


@dataclass
class FundusResult:
    """prob (L, H, W) float; masks {label: (H, W) bool} after post-processing; the ROI used; flags."""

    prob: np.ndarray
    masks: dict[str, np.ndarray]
    roi: Roi | None
    flags: list[str]


class FundusPredictor:
    """Runs a fundus pipeline checkpoint on (H, W, C) uint8 images of any size: full photographs or
    disc-centred crops. A checkpoint with several members (parts ``locator``/``roi``, ``locator_1``/
    ``roi_1``, ...; see ``save_ensemble``) averages their probabilities.

    ``input_kind``: "full" (the locator finds the disc on the downscaled photograph), "crop" (the
    image is taken as centred on the disc, its disc size unknown: see ``read_crop``) or "auto": an
    image without a dark field-of-view surround (``has_fov_border``) is read as a crop first and as a
    photograph when that reading is doubtful and the photograph reading is not; one with it is read
    as a photograph only (a doubtful reading is flagged, not re-read). In every case the ROI is
    re-centred on the disc that the ROI model itself found, when that moves it noticeably."""

    def __init__(
        self,
        ck: PipelineCheckpoint,
        precision: str = "auto",
        tta: bool = False,
        postprocess: bool = True,
        fit_ellipse: bool = False,
        threshold: float = 0.5,
        input_kind: str = "auto",
        tta_scales: tuple[float, ...] | None = None,
        device: torch.device | None = None,
    ) -> None:
        # ``device``: where the networks run (FundusPipelinePredictor passes the CPU for ONNX
        # Runtime); default the GPU when there is one
        self.device = device or pick_device()
        self.precision = resolve_precision(precision, self.device)
        names = sorted(k for k in ck.parts if k.startswith("roi"))
        self.members = [(ck.parts[n.replace("roi", "locator")], ck.parts[n]) for n in names]
        self.loc, self.roi = self.members[0]
        self.locators = [lo.build().to(self.device) for lo, _ in self.members]
        self.roi_models = [ro.build().to(self.device) for _, ro in self.members]
        self.labels = self.roi.labels
        self.roi_scale = float(self.roi.preprocess.get("roi_scale", 2.0))
        self.roi_size = int(self.roi.preprocess["image_size"])
        # members trained on polar crops (FundusConfig.polar): an ensemble may mix both kinds
        self.polar = [bool(ro.preprocess.get("polar", False)) for _, ro in self.members]
        self.tta, self.postprocess, self.fit_ellipse = tta, postprocess, fit_ellipse
        self.threshold, self.input_kind = threshold, input_kind
        # the threshold that cuts each label's final mask (FundusPipelinePredictor sets per-label
        # ones); the disc that places the ROI is always cut at ``threshold``
        self.cuts = {lb: threshold for lb in self.labels}
        self.tta_scales = resolve_scales(tta, tta_scales)

    def locate(self, img: np.ndarray) -> tuple[Roi, list[str]]:
        """The ROI around the most disc-like blob of the locators' mean disc probability (scored with
        the cup probability too, where the locator predicts a cup)."""
        maps = [
            next(predict_images(m, [img], lo.preprocess, self.device, self.precision, 1))
            for m, (lo, _) in zip(self.locators, self.members, strict=True)
        ]
        lo = self.loc
        prob = np.mean([p[lo.labels.index("disc")] for p in maps], axis=0)
        score = prob + (
            np.mean([p[lo.labels.index("cup")] for p in maps], axis=0) if "cup" in lo.labels else 0
        )
        for thr, flags in ((0.5, []), (0.2, ["disc_low_confidence"])):
            roi = disc_roi(prob > thr, self.roi_scale, score=score)
            if roi is not None:
                return roi, flags
        return self.crop_roi(img), ["disc_not_found"]

    def crop_roi(self, img: np.ndarray, factor: float = 1.0) -> Roi:
        """The ROI centred on the image, of side ``factor`` x its larger side."""
        h, w = img.shape[:2]
        return Roi((h - 1) / 2, (w - 1) / 2, factor * float(max(h, w)))

    def read_crop(self, img: np.ndarray) -> tuple[Roi, np.ndarray, list[str]]:
        """The image read as a disc-centred crop whose disc size is unknown (10-60 % of its area: a
        disc spanning 0.36-0.87 of its side): the ROI model is started at ``CROP_FACTORS`` x the
        image's side, each start re-centred twice, and the reading kept whose disc best reproduces
        its own ROI (the model was trained with the disc at 1/roi_scale of the ROI's side, so at the
        right scale its disc implies the ROI it was given; at a wrong one it does not)."""
        starts = [self.crop_roi(img, f * self.roi_scale / 2) for f in CROP_FACTORS]
        return self.best_reading(img, starts, "crop")

    def read_photo(self, img: np.ndarray) -> tuple[Roi, np.ndarray, list[str]]:
        """The image read as a photograph: the ROI model on the locator's ROI, or, when the located
        disc spans under ``MIN_DISC_SPAN`` of the image's larger side (a locator unsure of the size),
        the best reading (see ``read_crop``) of ROIs at the located centre sized for ``DISC_SPANS``,
        flagged "disc_size_searched"."""
        roi, flags = self.locate(img)
        side = float(max(img.shape[:2]))
        if roi.side / self.roi_scale >= MIN_DISC_SPAN * side:
            return self.segment(img, roi, flags)
        starts = [Roi(roi.cy, roi.cx, s * side * self.roi_scale) for s in DISC_SPANS]
        roi, prob, found = self.best_reading(img, starts, "search")
        return roi, prob, [*flags, "disc_size_searched", *found]

    def best_reading(
        self, img: np.ndarray, starts: list[Roi], kind: str
    ) -> tuple[Roi, np.ndarray, list[str]]:
        """Of the ROI model's readings from each start (re-centred twice), the one whose disc best
        reproduces its own ROI (``self_gap``); a flagged reading only wins when all are flagged."""
        readings = [self.segment(img, roi, [], kind, 2) for roi in starts]
        return min(readings, key=lambda r: self.self_gap(r[0], r[1]) + (1.0 if r[2] else 0.0))

    def self_gap(self, roi: Roi, prob: np.ndarray) -> float:
        """How far the ROI implied by the disc in ``prob`` ((L, H, W)) lies from ``roi`` (see
        ``_roi_gap``): near 0 when the ROI model saw the disc at the scale it was trained at."""
        implied = disc_roi(prob[self.labels.index("disc")] > self.threshold, self.roi_scale)
        return _roi_gap(roi, implied)

    def crop_batch(self, img: np.ndarray, roi: Roi) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
        """(F, C, R, R) the ROI's crop and, with TTA, its flips (F = 4), and those flips."""
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]  # (1, C, H, W) uint8
        # mirrored past the image's edges: a tight crop around the disc then looks like retina
        crop = crop_roi_windows(x, [roi], self.roi_size, scale=1 / 255, padding="reflection")
        flips: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if self.tta else [()]
        return torch.cat([crop.flip(f) if f else crop for f in flips]), flips

    def member_probs(
        self, batch: torch.Tensor, flips: list[tuple[int, ...]]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(F, L, R, R) mean probabilities of the polar members on the polar images of ``batch``
        (still flipped, in polar coordinates) and (L, R, R) those of the Cartesian members on the
        crops (unflipped, averaged over the flips); None for a kind with no member."""
        pol = [m for m, p in zip(self.roi_models, self.polar, strict=True) if p]
        car = [m for m, p in zip(self.roi_models, self.polar, strict=True) if not p]
        polar = None
        if pol:
            x = to_polar(batch)
            polar = torch.stack([forward_probs(m, x, self.device, self.precision) for m in pol])
            polar = polar.mean(0)
        cart = None
        if car:
            probs = torch.stack([forward_probs(m, batch, self.device, self.precision) for m in car])
            cart = torch.stack(
                [p.flip(f) if f else p for p, f in zip(probs.mean(0), flips, strict=True)]
            ).mean(0)
        return polar, cart

    def roi_probs(self, img: np.ndarray, roi: Roi) -> torch.Tensor:
        """(L, R, R) probabilities on the crop: mean over members (and over flips with TTA)."""
        batch, flips = self.crop_batch(img, roi)
        polar, cart = self.member_probs(batch, flips)
        parts = []
        if polar is not None:
            back = from_polar(polar)
            back = torch.stack([p.flip(f) if f else p for p, f in zip(back, flips, strict=True)])
            parts.append((back.mean(0), sum(self.polar)))
        if cart is not None:
            parts.append((cart, len(self.polar) - sum(self.polar)))
        return sum(p * n for p, n in parts) / len(self.polar)

    def image_probs(self, img: np.ndarray, roi: Roi) -> np.ndarray:
        """(L, H, W) probabilities on the whole image (0 outside the ROI): like ``paste_roi`` of
        ``roi_probs``, but the polar members' maps are taken straight from polar coordinates to
        the image's pixels (``paste_polar``: one resampling instead of two)."""
        h, w = img.shape[:2]
        if not any(self.polar):
            return paste_roi(self.roi_probs(img, roi), roi, h, w)
        batch, flips = self.crop_batch(img, roi)
        polar, cart = self.member_probs(batch, flips)
        n_polar = sum(self.polar)
        out = paste_polar(polar, flips, roi, h, w) * n_polar
        if cart is not None:
            out += paste_roi(cart, roi, h, w) * (len(self.polar) - n_polar)
        return out / len(self.polar)

    def segment(
        self, img: np.ndarray, roi: Roi, flags: list[str], kind: str = "full", recentre: int = 1
    ) -> tuple[Roi, np.ndarray, list[str]]:
        """ROI model on ``roi``, re-centred (up to ``recentre`` times) on the disc it finds when that
        moves the ROI noticeably. Returns the ROI used, (L, H, W) probabilities and ``flags`` plus
        "disc_size_unusual" when the disc does not fill about (1/roi_scale)^2 of the ROI or, read
        as a photograph (``kind`` "full", or "search": a size searched, see ``read_photo``), spans
        an implausible share of the image.

        With ``kind="full"`` the ROI comes from the locator, an independent estimate of the disc's
        size: when the ROI model's disc implies a ROI outside ``SIZE_AGREEMENT`` x the locator's,
        the two models disagree ("disc_size_mismatch"); the locator's ROI is then kept rather than
        followed, since a model that over-segments at one scale over-segments at the next and
        following it grows the ROI without end."""
        h, w = img.shape[:2]
        d = self.labels.index("disc")
        score_of = lambda p: p[d] + (p[self.labels.index("cup")] if "cup" in self.labels else 0)  # noqa: E731
        prob = self.image_probs(img, roi)
        flags = list(flags)
        first, (lo, hi) = roi, SIZE_AGREEMENT
        for _ in range(recentre):
            new = disc_roi(prob[d] > self.threshold, self.roi_scale, score=score_of(prob))
            if new is None or not _moved(roi, new):
                break
            if kind == "full" and not lo <= new.side / first.side <= hi:
                flags.append("disc_size_mismatch")
                break
            roi = new
            prob = self.image_probs(img, roi)
        disc = prob[d] > self.threshold
        share = float(disc.sum()) / (roi.side / self.roi_scale) ** 2
        # a photograph's disc spans about 5-25 % of its larger side (a crop's, 30 % or more), and a
        # disc under 20 px is too small to measure a cup in: a crop misread, or no disc. When the
        # two models disagree on the size, the locator's (the ROI's) is the one judged.
        mismatch = "disc_size_mismatch" in flags
        extent = roi.side / self.roi_scale if mismatch else _extent(disc)
        odd_share = not mismatch and not 0.3 <= share <= 1.2  # a round disc fills pi/4 of its box
        odd_extent = extent < 20 or not 0.02 <= extent / max(h, w) <= 0.3
        if odd_share or (kind != "crop" and odd_extent):
            flags.append("disc_size_unusual")
        return roi, prob, flags

    def scale_average(self, img: np.ndarray, roi: Roi, prob: np.ndarray) -> np.ndarray:
        """(L, H, W) mean probabilities of the ROI model on ``roi`` resized by each of
        ``tta_scales`` about its centre (``prob``, already computed on ``roi``, stands for 1.0).
        The reading (ROI, flags) is decided at scale 1 before: only the final maps are averaged."""
        maps = [
            prob if s == 1.0 else self.image_probs(img, Roi(roi.cy, roi.cx, roi.side * s))
            for s in self.tta_scales
        ]
        return np.mean(maps, axis=0, dtype=np.float32)

    def _disc(self, prob: np.ndarray) -> np.ndarray:
        return prob[self.labels.index("disc")] > self.threshold

    def crop_doubts(self, prob: np.ndarray) -> list[str]:
        """Flags for a crop reading whose disc no disc-centred crop has: one filling the image (a
        uniform or featureless picture: every crop of the training sets, the disc at 10-60 % of
        its area, gives at most 0.65) or one under ``CROP_DISC_SHARE[0]`` of it (a texture
        mistaken for a disc: EM slices, noise; the smallest such crop gave 0.097)."""
        share = float(self._disc(prob).mean())
        lo, hi = CROP_DISC_SHARE
        return [] if lo <= share <= hi else ["disc_size_unusual"]

    def predict(self, img: np.ndarray) -> FundusResult:
        from biounet.data.transforms import match_channels

        img = match_channels(img, int(self.roi.preprocess["in_channels"]))
        if self.input_kind == "crop":
            roi, prob, flags = self.read_crop(img)
            flags += self.crop_doubts(prob)
            if has_fov_border(img):  # no crop of the training sets has one (0 of 450)
                flags.append("looks_like_a_photograph")
            self.last_input_kind = "crop"
        elif self.input_kind == "auto" and not has_fov_border(img):
            # no dark field-of-view surround: most likely a crop; read as one first, and as a
            # photograph when that reading is doubtful and the photograph reading is not
            roi, prob, flags = self.read_crop(img)
            flags += self.crop_doubts(prob)
            self.last_input_kind = "crop"
            f_roi, f_prob, f_flags = self.read_photo(img)
            if flags and not f_flags:
                roi, prob, flags, self.last_input_kind = f_roi, f_prob, f_flags, "full"
            elif (
                not flags
                and not f_flags
                and binary_scores(self._disc(prob), self._disc(f_prob))["dice"] < AGREE
            ):
                # both readings plausible, different discs: a photograph without a dark
                # surround read as a crop finds a "disc" many times too large, a tight crop read
                # as a photograph one too small; which is which, the image does not say
                flags.append("crop_or_photograph_unclear")
        else:
            # a dark field-of-view surround: a photograph, read as one only. No disc-centred crop
            # (disc 10-60 % of its area) of the training splits has one (0 of 450), and re-reading
            # doubtful photographs as crops gave confident wrong discs filling half the image
            # (REFUGE-trained model on the 50 Drishti-GS1 training photographs: disc Dice 0.740
            # with the re-reading, 0.809 without; no change for a model on its own dataset)
            roi, prob, flags = self.read_photo(img)
            self.last_input_kind = "full"
        if self.tta_scales != (1.0,) and "disc_not_found" not in flags:
            prob = self.scale_average(img, roi, prob)
        masks = {lb: prob[i] > self.cuts[lb] for i, lb in enumerate(self.labels)}
        if self.postprocess and "disc" in masks and "cup" in masks:
            from biounet.fundus.postprocess import clean_disc_cup

            masks["disc"], masks["cup"] = clean_disc_cup(
                masks["disc"], masks["cup"], fit_ellipse=self.fit_ellipse
            )
        if "disc" in masks and not masks["disc"].any():
            flags.append("empty_disc")
        elif "disc" in masks and cut_by_border(masks["disc"]):
            flags.append("disc_cut_by_border")
        return FundusResult(prob, masks, roi, list(dict.fromkeys(flags)))  # each flag once


def cut_by_border(disc: np.ndarray, offset: float = CUT_OFFSET) -> bool:
    """(H, W) bool disc -> True when it reaches the image's edge with its bounding box's centre
    more than ``offset`` x the image's height (width) off the image's centre: a crop not centred
    on the disc, whose ratios are not the disc's. A centred crop's disc may graze the edge (one
    filling 60 % of the crop often does) but stays centred; no photograph's disc reaches the edge."""
    if not (disc[0].any() or disc[-1].any() or disc[:, 0].any() or disc[:, -1].any()):
        return False
    rows, cols = np.nonzero(disc)
    h, w = disc.shape
    dy = abs((rows.min() + rows.max()) / 2 - (h - 1) / 2) / h
    dx = abs((cols.min() + cols.max()) / 2 - (w - 1) / 2) / w
    return max(dy, dx) > offset


def resolve_scales(tta: bool, scales: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """The ROI side factors a predictor averages over: ``scales`` when given (checked), else
    ``TTA_SCALES`` with TTA and (1.0,) without."""
    return check_scales(scales if scales is not None else (TTA_SCALES if tta else (1.0,)))


def check_scales(scales: tuple[float, ...]) -> tuple[float, ...]:
    """``tta_scales`` as a tuple of floats, each in [0.5, 2] (ROI sides the model can read)."""
    out = tuple(float(s) for s in scales)
    if not out or not all(0.5 <= s <= 2.0 for s in out):
        raise BiounetError(f"tta scales: one or more, each must be in [0.5, 2]; got {scales}")
    return out


def has_fov_border(img: np.ndarray, corner: float = 0.06, share: float = 0.75) -> bool:
    """(H, W, C) image -> True when its four corners are dark: in corner squares of ``corner`` x the
    shorter side, at least ``share`` of the pixels have every channel below 10 % of the image's
    maximum. That is the black surround of a fundus camera's circular field of view, which a
    photograph shows and a disc-centred crop does not (measured: every corner pixel dark in all 120
    Drishti-GS1 and REFUGE training photographs; at most half of them in crops of those, the disc
    filling 10-60 % of the crop)."""
    h, w = img.shape[:2]
    k = max(2, round(corner * min(h, w)))
    corners = [img[:k, :k], img[:k, -k:], img[-k:, :k], img[-k:, -k:]]
    px = np.concatenate([c.reshape(-1, img.shape[2] if img.ndim == 3 else 1) for c in corners])
    level = 0.1 * max(float(img.max()), 1.0)
    return float((px.max(axis=1) < level).mean()) >= share


def _extent(mask: np.ndarray) -> int:
    """(H, W) bool -> the larger of the rows and columns it spans; 0 when empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0
    return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def _roi_gap(a: Roi, b: Roi | None) -> float:
    """How far ROI b is from a: centre shift over a's side plus |log| of the side ratio; inf when
    b is None."""
    if b is None:
        return math.inf
    shift = max(abs(a.cy - b.cy), abs(a.cx - b.cx)) / a.side
    return shift + abs(math.log(b.side / a.side))


def _moved(a: Roi, b: Roi) -> bool:
    """True when ROI b is centred more than 5 % of a's side away from a, or sized outside 0.9-1.11 x."""
    shift = max(abs(a.cy - b.cy), abs(a.cx - b.cx)) / a.side
    return shift > 0.05 or not 0.9 <= b.side / a.side <= 1 / 0.9


def save_ensemble(members: list[Path], out: Path, overwrite: bool = True) -> Path:
    """Bundle several fundus.pt files (e.g. the cross-validation folds) into one ensemble file.
    ``overwrite=False``: refuse an ``out`` that exists (one of the members, say)."""
    from biounet.checkpoint import PIPELINE_FORMAT, read_payload
    from biounet.errors import BiounetError

    if not overwrite and Path(out).exists():
        raise BiounetError(
            f"{out}: exists; ensemble never overwrites a file (choose another --out)"
        )

    parts, settings = {}, []
    for i, path in enumerate(members):
        payload = read_payload(path)
        if payload.get("format") != PIPELINE_FORMAT or not {"locator", "roi"} <= set(
            payload.get("parts", {})
        ):
            raise BiounetError(
                f"{path}: not a fundus pipeline checkpoint (fundus.pt from train --pipeline fundus)"
            )
        suffix = "" if i == 0 else f"_{i}"
        parts[f"locator{suffix}"] = payload["parts"]["locator"]
        parts[f"roi{suffix}"] = payload["parts"]["roi"]
        settings.append(payload.get("settings", {}))
    from biounet.checkpoint import save_pipeline_payload

    save_pipeline_payload(
        out, parts, {"ensemble_of": [str(p) for p in members], "members": settings}
    )
    return out
