"""Training the paper's unpadded U-Net on EM slices (Ronneberger et al. 2015, section 3).

Two classes (0 = membrane, 1 = cell interior), a pixel-wise softmax and the cross-entropy weighted
by the paper's weight map (``biounet.em.loss.weighted_cross_entropy``). Targets and weights are the
centre of each input tile (``biounet.em.tiles.sample_batch``). Prediction of a whole slice uses the
overlap-tile strategy, so it equals one forward pass of the mirror-padded slice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from biounet.checkpoint import save_checkpoint
from biounet.config import ModelConfig
from biounet.data.transforms import normalize
from biounet.em.loss import weighted_cross_entropy
from biounet.em.metrics import em_scores, fscore_error
from biounet.em.tiles import EmSlices, sample_batch
from biounet.infer import autocast, pick_device, resolve_precision
from biounet.infer_tiling import overlap_tile
from biounet.memory import reuse_memory
from biounet.models import build_model
from biounet.models.unet_valid import valid_input_size
from biounet.optim import backward_step, grad_scaler, make_adam

log = logging.getLogger(__name__)

LABELS = ("membrane", "interior")


@dataclass(frozen=True)
class EmTrainConfig:
    """How to train on EM slices. ``out_tile``: output side of a training tile (valid for the
    model's depth: 4 mod 2**depth); ``minutes`` and ``max_iters`` both stop training (0 = no limit
    for that one, not both 0). ``lr_schedule``: "cosine" decays to 1 % of ``lr`` over the budget
    (by elapsed time or iterations, whichever is further along) or "constant". ``elastic``: the
    paper's elastic deformation on every tile. ``precision``: "auto", "bf16" or "fp32".
    ``device``: "auto" (CUDA where present, else CPU), "cpu" or "cuda[:N]". ``reuse_memory``:
    "auto", "on" or "off" (``biounet.memory``: freed CPU memory kept for the next step)."""

    out_tile: int = 260
    batch_size: int = 1
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    minutes: float = 5.0
    max_iters: int = 0
    elastic: bool = True
    elastic_std_px: float = 10.0
    seed: int = 0
    precision: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    reuse_memory: str = "auto"


def make_em_model(cfg: ModelConfig, seed: int) -> nn.Module:
    """The model with the paper's initialisation: conv weights from N(0, 2 / fan_in) (He et al.),
    biases 0. PyTorch's default init is ~3x smaller, which stalls a deep net without batch norm."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    return model


def cosine_lr(lr: float, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1] of the budget: lr -> 0.01 lr along a half cosine."""
    p = min(max(progress, 0.0), 1.0)
    return lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * p)))


def _progress(cfg: EmTrainConfig, it: int, seconds: float) -> float:
    by_time = seconds / (cfg.minutes * 60) if cfg.minutes > 0 else 0.0
    by_iter = it / cfg.max_iters if cfg.max_iters > 0 else 0.0
    return max(by_time, by_iter)


def train_em(
    model: nn.Module, slices: EmSlices, cfg: EmTrainConfig, device: torch.device | None = None
) -> list[dict[str, float]]:
    """Adam on random tiles until the time or iteration budget is spent; model trained in place.
    -> one row per iteration: {"iter", "loss", "lr", "seconds"}."""
    if cfg.minutes <= 0 and cfg.max_iters <= 0:
        raise ValueError("set minutes > 0 or max_iters > 0, else training never stops")
    if cfg.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {cfg.lr_schedule!r}")
    device = device or pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    reuse_memory(cfg.reuse_memory, device.type)
    depth = model.cfg.depth
    in_tile = valid_input_size(cfg.out_tile, depth)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_adam(model.parameters(), cfg.lr)
    scaler = grad_scaler(precision, device)
    rows: list[dict[str, float]] = []
    # on a GPU the next batch is cut and deformed on the CPU while the model trains on this one
    # closed on any exit (an error, Ctrl-C): the prefetch thread stops with the generator
    with closing(tile_batches(slices, cfg, in_tile, gen, prefetch=device.type != "cpu")) as batches:
        t0 = time.perf_counter()
        it = 0
        while _progress(cfg, it, time.perf_counter() - t0) < 1.0:
            lr = cfg.lr
            if cfg.lr_schedule == "cosine":
                lr = cosine_lr(cfg.lr, _progress(cfg, it, time.perf_counter() - t0))
            for group in opt.param_groups:
                group["lr"] = lr
            x, target, weight = next(batches)  # (B, 1, in, in), (B, out, out), (B, out, out)
            x = x.to(device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                logits = model(x)  # (B, 2, out, out)
            loss = weighted_cross_entropy(logits, target.to(device), weight.to(device))
            backward_step(loss, opt, scaler)
            it += 1
            rows.append(
                {"iter": it, "loss": loss.item(), "lr": lr, "seconds": time.perf_counter() - t0}
            )
            if it % 20 == 0:
                log.info(
                    "iter %d loss %.4f lr %.2e %.0fs", it, loss.item(), lr, rows[-1]["seconds"]
                )
    return rows


def tile_batches(
    slices: EmSlices, cfg: EmTrainConfig, in_tile: int, gen: torch.Generator, prefetch: bool
) -> Generator[tuple[torch.Tensor, torch.Tensor, torch.Tensor], None, None]:
    """Endless ``sample_batch`` draws, in the same order either way; ``prefetch``: each drawn in a
    worker thread while the previous one is in use (the sampling's torch ops release the GIL)."""

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return sample_batch(
            slices, in_tile, cfg.out_tile, cfg.batch_size, gen, cfg.elastic, cfg.elastic_std_px
        )

    if not prefetch:
        while True:
            yield draw()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(draw)
        while True:
            batch = pending.result()
            pending = pool.submit(draw)
            yield batch


@torch.no_grad()
def predict_interior(
    model: nn.Module,
    image: np.ndarray,
    out_tile: int = 324,
    precision: str = "fp32",
    tile_batch: int = 1,
    tta: bool = False,
) -> np.ndarray:
    """(H, W) uint8 slice -> (H, W) float32 P(cell interior), by overlap-tile with mirror padding.
    The slice is z-scored as a whole (as in training); the model goes to eval mode. ``tta``: the
    mean over the 8 rotations / flips of the slice (the training augmentation's group), 8x the time.
    """
    if tta:
        acc = np.zeros(image.shape, dtype=np.float64)
        for k in range(4):
            for flip in (False, True):
                view = np.rot90(image, k)
                view = view[:, ::-1] if flip else view
                p = predict_interior(model, view, out_tile, precision, tile_batch)
                acc += np.rot90(p[:, ::-1] if flip else p, -k)
        return (acc / 8).astype(np.float32)
    model.eval()
    device = next(model.parameters()).device
    # a copy: the TTA views have negative strides, which torch refuses
    x = normalize(torch.from_numpy(image.copy())[None, None])[0]  # (1, H, W)

    depth = model.cfg.depth
    step = out_tile - out_tile % 2**depth  # tiles on the pooling grid: no seams (see overlap_tile)

    def run(t: torch.Tensor) -> torch.Tensor:  # (B, 1, in, in) -> (B, 2, out, out) softmax
        with autocast(device, resolve_precision(precision, device)):
            return model(t).float().softmax(dim=1)

    in_tile = valid_input_size(out_tile, depth)
    probs = overlap_tile(run, x, in_tile, out_tile, step, tile_batch, device)  # (2, H, W)
    return probs[1].numpy()


def save_em_checkpoint(
    path: Path,
    model: nn.Module,
    out_tile: int,
    membrane_threshold: float,
    extra: dict | None = None,
) -> None:
    """A self-describing checkpoint: model config, labels (class order), preprocessing, the
    prediction tiling and the membrane-probability threshold chosen on held-out slices."""
    preprocess = {
        "in_channels": model.cfg.in_channels,
        "resize": "none",
        "normalize": "per_image_channel_zscore",
        "tiling": "overlap_tile_mirror",
        "out_tile": out_tile,
        "in_tile": valid_input_size(out_tile, model.cfg.depth),
        "output": "softmax",
    }
    info = {"membrane_threshold": membrane_threshold, **(extra or {})}
    save_checkpoint(Path(path), model, model.cfg, LABELS, preprocess, info)


def score_slices(
    prob_interior: list[np.ndarray], interior: np.ndarray, membrane_threshold: float
) -> list[dict[str, float]]:
    """Per slice ``em_scores``: prob_interior N x (H, W) float, interior (N, H, W) bool truth;
    membrane = 1 - P(interior) > ``membrane_threshold``."""
    return [
        em_scores(1.0 - p, ~m, membrane_threshold)
        for p, m in zip(prob_interior, interior, strict=True)
    ]


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean over slices of each score, except the challenge's pixel error: that of the slices'
    pooled interior counts, as the challenge scored a stack (Fiji's ``PixelError``)."""
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    if "interior_tp" in out:
        counts = (int(sum(r[f"interior_{k}"] for r in rows)) for k in ("tp", "fp", "fn"))
        out["pixel_error_fscore"] = fscore_error(*counts)
    return out


THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.1, 0.91, 0.1), 2))


def threshold_sweep(
    prob_interior: list[np.ndarray],
    interior: np.ndarray,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> dict[float, list[dict[str, float]]]:
    """{membrane threshold: per-slice ``em_scores``} (see ``score_slices``), each slice scored
    once per threshold."""
    return {float(t): score_slices(prob_interior, interior, t) for t in thresholds}


def best_threshold(means: dict[float, dict[str, float]], key: str, lower: bool = False) -> float:
    """The threshold whose mean ``key`` is highest (``lower``: lowest) in ``means`` ({threshold:
    mean scores}); ties go to the threshold nearest 0.5."""
    sign = -1.0 if lower else 1.0
    return max(means, key=lambda t: (sign * means[t][key], -abs(t - 0.5)))


def choose_threshold(
    prob_interior: list[np.ndarray],
    interior: np.ndarray,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> tuple[float, dict[float, float]]:
    """The membrane threshold with the best mean V_rand after border thinning (the ISBI 2012
    challenge's final metric) over these (held-out) slices.
    -> (threshold, {threshold: mean v_rand_thinned}); ties go to the threshold nearest 0.5."""
    sweep = threshold_sweep(prob_interior, interior, thresholds)
    means = {t: mean_scores(rows) for t, rows in sweep.items()}
    return best_threshold(means, "v_rand_thinned"), {
        t: m["v_rand_thinned"] for t, m in means.items()
    }
