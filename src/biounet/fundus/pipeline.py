"""The two-stage fundus pipeline: locate the optic disc on the whole (downscaled) photograph, then
segment disc and cup on a disc-centred crop at higher resolution, paste back, post-process.

``fit_fundus(cfg, out_dir)`` trains both stages and writes ``out_dir/fundus.pt`` (one file holding
both models and the settings); ``FundusPredictor`` runs it on any fundus image.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biounet.checkpoint import PipelineCheckpoint, save_pipeline
from biounet.config import DataConfig, RunConfig, TrainConfig
from biounet.data.io import read_image
from biounet.fundus.roi import Roi, crop_rois, disc_roi, paste_roi, roi_theta
from biounet.fundus.train_roi import load_full, n_batches, roi_arrays, roi_batches
from biounet.infer import (
    forward_probs,
    pick_device,
    predict_images,
    preprocess_spec,
    resolve_precision,
)
from biounet.models import preset
from biounet.train import fit, seed_everything, split_samples, train_loop, with_data_facts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FundusConfig:
    """Both stages' settings. Sizes are the square sides the networks see; ``roi_scale`` is the crop side
    relative to the located disc's larger extent (a disc-relative scale, whatever the camera)."""

    data_root: str = ""
    labels: tuple[str, ...] = ("disc", "cup")
    locator_size: int = 256
    locator_preset: str = "small"
    locator_epochs: int = 40
    roi_size: int = 256
    roi_scale: float = 2.0
    roi_preset: str = "small"
    roi_epochs: int = 120
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    val_fraction: float = 0.2
    precision: str = "auto"
    locator_minutes: float = 0.0
    roi_minutes: float = 0.0
    train_split: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)


def stage_configs(fc: FundusConfig) -> tuple[RunConfig, RunConfig]:
    common = {"root": fc.data_root, "val_fraction": fc.val_fraction, "train_split": fc.train_split}
    train = {"batch_size": fc.batch_size, "lr": fc.lr, "seed": fc.seed, "precision": fc.precision}
    loc = RunConfig(
        data=DataConfig(labels=fc.labels, image_size=fc.locator_size, **common),
        model=preset(fc.locator_preset, in_channels=0),
        train=TrainConfig(epochs=fc.locator_epochs, max_minutes=fc.locator_minutes, **train),
        preset=fc.locator_preset,
    )
    roi = RunConfig(
        data=DataConfig(labels=fc.labels, image_size=fc.roi_size, **common),
        model=preset(fc.roi_preset, in_channels=0),
        train=TrainConfig(epochs=fc.roi_epochs, max_minutes=fc.roi_minutes, **train),
        preset=fc.roi_preset,
    )
    return loc, roi


def fit_fundus(fc: FundusConfig, out_dir: Path) -> Path:
    """Train locator then ROI model; returns the path of the bundled ``fundus.pt``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loc_cfg, roi_cfg = stage_configs(fc)
    t0 = time.perf_counter()
    fit(loc_cfg, out_dir / "locator")
    t_loc = time.perf_counter() - t0
    gen = seed_everything(fc.seed)
    tr, val, labels = split_samples(roi_cfg)
    channels = read_image(tr[0].image).shape[-1]
    roi_cfg = with_data_facts(roi_cfg, labels, channels)
    (out_dir / "roi").mkdir(exist_ok=True)
    roi_cfg.save_yaml(out_dir / "roi" / "config.yaml")
    full_tr = load_full(tr, labels, channels, fc.roi_scale)
    full_val = load_full(val, labels, channels, fc.roi_scale)
    prep = {**preprocess_spec(fc.roi_size, channels), "roi_scale": fc.roi_scale}
    train_loop(
        roi_cfg,
        lambda: roi_batches(full_tr, roi_cfg, gen),
        n_batches(full_tr, fc.batch_size),
        roi_arrays(full_val, fc.roi_size),
        out_dir / "roi",
        prep,
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
    disc-centred crops (the locator finds the disc in both)."""

    def __init__(
        self,
        ck: PipelineCheckpoint,
        precision: str = "auto",
        tta: bool = False,
        postprocess: bool = True,
        fit_ellipse: bool = False,
        threshold: float = 0.5,
    ) -> None:
        self.device = pick_device()
        self.precision = resolve_precision(precision, self.device)
        self.loc, self.roi = ck.parts["locator"], ck.parts["roi"]
        self.locator = self.loc.build().to(self.device)
        self.roi_model = self.roi.build().to(self.device)
        self.labels = self.roi.labels
        self.roi_scale = float(self.roi.preprocess.get("roi_scale", 2.0))
        self.roi_size = int(self.roi.preprocess["image_size"])
        self.tta, self.postprocess, self.fit_ellipse, self.threshold = (
            tta,
            postprocess,
            fit_ellipse,
            threshold,
        )

    def locate(self, img: np.ndarray) -> tuple[Roi, list[str]]:
        h, w = img.shape[:2]
        probs = next(
            predict_images(self.locator, [img], self.loc.preprocess, self.device, self.precision, 1)
        )
        prob = probs[self.loc.labels.index("disc")]
        roi = disc_roi(prob > 0.5, self.roi_scale)
        if roi is not None:
            return roi, []
        roi = disc_roi(prob > 0.2, self.roi_scale)
        if roi is not None:
            return roi, ["disc_low_confidence"]
        return Roi(h / 2, w / 2, float(min(h, w))), ["disc_not_found"]

    def roi_probs(self, img: np.ndarray, roi: Roi) -> torch.Tensor:
        """(L, R, R) probabilities on the crop; with TTA the mean over identity and 3 flips."""
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
        crop = crop_rois(x, roi_theta([roi], [img.shape[:2]]), self.roi_size)  # (1, C, R, R)
        if not self.tta:
            return forward_probs(self.roi_model, crop, self.device, self.precision)[0]
        flips = [(), (-1,), (-2,), (-2, -1)]
        batch = torch.cat([crop.flip(f) if f else crop for f in flips])
        probs = forward_probs(self.roi_model, batch, self.device, self.precision)
        return torch.stack([p.flip(f) if f else p for p, f in zip(probs, flips, strict=True)]).mean(
            0
        )

    def predict(self, img: np.ndarray) -> FundusResult:
        from biounet.data.transforms import match_channels

        img = match_channels(img, int(self.roi.preprocess["in_channels"]))
        roi, flags = self.locate(img)
        prob = paste_roi(self.roi_probs(img, roi), roi, img.shape[0], img.shape[1])
        masks = {lb: prob[i] > self.threshold for i, lb in enumerate(self.labels)}
        if self.postprocess and "disc" in masks and "cup" in masks:
            from biounet.fundus.postprocess import clean_disc_cup

            masks["disc"], masks["cup"] = clean_disc_cup(
                masks["disc"], masks["cup"], fit_ellipse=self.fit_ellipse
            )
        if "disc" in masks and not masks["disc"].any():
            flags.append("empty_disc")
        return FundusResult(prob, masks, roi, flags)
