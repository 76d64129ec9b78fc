"""Training: ``train_one_epoch``, ``validate`` and ``fit(cfg, out_dir)`` which writes a run folder."""

from __future__ import annotations

import csv
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from biounet.checkpoint import save_checkpoint
from biounet.config import RunConfig
from biounet.data.dataset import ArrayDataset
from biounet.data.transforms import normalize
from biounet.dist import (
    SINGLE,
    Dist,
    broadcast_flag,
    check_batch_size,
    mean_over_ranks,
    wrap_model,
)
from biounet.errors import BiounetError
from biounet.fast import apply_checkpointing
from biounet.infer import (
    TILE_BATCH,
    autocast,
    pick_device,
    preprocess_spec,
    resolve_precision,
    resolve_tile,
)
from biounet.infer_tiling import sliding_window
from biounet.losses import bce_dice_loss, pixel_weights
from biounet.memory import reuse_memory
from biounet.metrics import binary_scores
from biounet.models import build_model, count_parameters
from biounet.optim import backward_step, grad_scaler, make_adam
from biounet.runlock import run_lock
from biounet.train_data import Batch, array_batches, n_batches, prepare_data
from biounet.train_state import TrainState, capture, check_free_space, checkpoint_bytes, restore

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seeds python, numpy and torch in one place; returns the generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    n_batches: int,
    opt: torch.optim.Optimizer,
    cfg: RunConfig,
    device: torch.device,
    precision: str,
    desc: str,
    show_progress: bool = True,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One pass over ``batches`` of (x (B, C, S, S) float in [0, 1], y (B, L, S, S) {0, 1}); returns the
    mean training loss per image. ``scaler``: the fp16 loss scaler (``biounet.optim.grad_scaler``)."""
    if scaler is None:
        scaler = grad_scaler(precision, device)
    model.train()
    total, count, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(
        batches,
        total=n_batches,
        desc=desc,
        leave=False,
        unit="batch",
        disable=None if show_progress else True,
    )
    for b, (x, y) in enumerate(bar):
        x = normalize(x).to(device)
        y = y.to(device)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        weight = pixel_weights(cfg.train.pixel_weight, *y.shape[-2:])
        loss = bce_dice_loss(logits, y, cfg.train.bce_weight, cfg.train.dice_weight, weight)
        if not torch.isfinite(loss):
            raise BiounetError(
                f"{desc}: loss is {loss.item()} at batch {b}; stopping (last.pt holds the last good epoch)"
            )
        backward_step(loss, opt, scaler)
        total += loss.item() * len(x)
        count += len(x)
        bar.set_postfix(
            loss=f"{total / count:.4f}", img_s=f"{count / (time.perf_counter() - t0):.1f}"
        )
    return total / max(count, 1)


@torch.inference_mode()
def validate(
    model: nn.Module,
    data: ArrayDataset,
    cfg: RunConfig,
    labels: tuple[str, ...],
    device: torch.device,
    precision: str,
) -> dict[str, float]:
    """Loss and per-image Dice/IoU per label at the network's resolution (fast; the final evaluation
    at the masks' own resolution is ``biounet evaluate``)."""
    model.eval()
    losses, dice, iou = [], {lb: [] for lb in labels}, {lb: [] for lb in labels}
    for i in range(0, len(data), cfg.train.batch_size):
        x = normalize(data.images[i : i + cfg.train.batch_size]).to(device)
        y = data.masks[i : i + cfg.train.batch_size].float().to(device)
        logits = val_logits(model, x, device, precision, cfg.train.channels_last)
        weight = pixel_weights(cfg.train.pixel_weight, *y.shape[-2:])
        loss = bce_dice_loss(logits, y, cfg.train.bce_weight, cfg.train.dice_weight, weight)
        losses.append(loss.item() * len(x))
        pred = (torch.sigmoid(logits) > cfg.train.threshold).cpu().numpy()
        tgt = y.cpu().numpy() > 0.5
        for b in range(len(x)):
            for j, lb in enumerate(labels):
                s = binary_scores(pred[b, j], tgt[b, j])
                dice[lb].append(s["dice"])
                iou[lb].append(s["iou"])
    out = {"val_loss": sum(losses) / len(data)}
    for lb in labels:
        out[f"val_dice_{lb}"] = float(np.mean(dice[lb]))
        out[f"val_iou_{lb}"] = float(np.mean(iou[lb]))
    out["val_dice_mean"] = float(np.mean([out[f"val_dice_{lb}"] for lb in labels]))
    return out


def val_logits(
    model: nn.Module, x: torch.Tensor, device: torch.device, precision: str, channels_last: bool
) -> torch.Tensor:
    """(B, C, S, S) normalised -> (B, L, S, S) float32 logits; images larger than predict's
    ``AUTO_TILE_ABOVE`` in its ``AUTO_TILE`` windows, as predict runs them by default."""

    def run(t: torch.Tensor) -> torch.Tensor:
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            return model(t).float()

    side = resolve_tile(None, x.shape[-1])
    if not side:
        return run(x)
    return torch.stack([sliding_window(run, xi, side, 0.25, "gaussian", TILE_BATCH) for xi in x])


def fit(cfg: RunConfig, out_dir: Path, dist: Dist = SINGLE, resume: bool = False) -> Path:
    """Train per ``cfg``; writes config.yaml, metrics.csv, curves.png, best.pt, last.pt into ``out_dir``
    (rank 0 only). ``resume``: continue from ``out_dir/last.pt`` (see biounet.train_state)."""
    if cfg.model.arch == "unet_valid":  # its output is smaller than its input: other targets
        raise BiounetError(
            f"preset {cfg.preset or 'unet_valid'}: the paper's unpadded U-Net trains with "
            "biounet.em.train_em (tiles, weight map, elastic; see benchmarks/isbi2012_em.py), "
            "not biounet train"
        )
    check_batch_size(cfg.train.batch_size, dist)
    resolve_precision(
        cfg.train.precision, run_device(dist)
    )  # fp16 on a CPU: refused before any work
    set_deterministic(cfg.train.deterministic)
    gen = seed_everything(cfg.train.seed)
    data = prepare_data(cfg)  # data errors surface before anything is written
    cfg = with_data_facts(cfg, data.labels, data.in_channels)
    if dist.is_main:
        out_dir = make_run_dir(out_dir)
    with run_lock(out_dir) if dist.is_main else nullcontext():  # one process per run folder
        if dist.is_main:
            cfg.save_yaml(Path(out_dir) / "config.yaml")
        batches = n_batches(data.train, cfg)
        log.info("%d train / %d val images; labels %s", len(data.train), len(data.val), data.labels)
        train_loop(
            cfg,
            lambda: array_batches(data.train, cfg, gen, dist),
            batches,
            data.val,
            Path(out_dir),
            preprocess_spec(cfg.data.image_size, data.in_channels),
            gen=gen,
            dist=dist,
            resume=resume,
            keep_last=not data.held_out,
        )
        if dist.is_main:  # report.html: validation images scored by best.pt, curves, config
            from biounet.report import write_run_report

            write_run_report(Path(out_dir), cfg)
    return Path(out_dir)


def run_device(dist: Dist) -> torch.device:
    """The device this process trains on: its rank's in a distributed run, else CUDA if present."""
    return dist.device() if dist.enabled else pick_device()


def set_deterministic(on: bool) -> None:
    """Deterministic kernels (and no cuDNN autotuning) for bit-exact repeat and resume."""
    if on:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: RunConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``lr_schedule``: "cosine" decays to 1 % of lr over the epochs; "step" is StepLR(lr_step, lr_gamma)
    (constant when lr_step is 0); "constant" keeps lr."""
    if cfg.train.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, cfg.train.epochs, eta_min=cfg.train.lr * 0.01
        )
    if cfg.train.lr_schedule == "step" and cfg.train.lr_step > 0:
        return torch.optim.lr_scheduler.StepLR(opt, cfg.train.lr_step, cfg.train.lr_gamma)
    return None


def make_run_dir(out_dir: Path) -> Path:
    """Create the run folder and check it is writable, before any training time is spent."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise BiounetError(f"{out_dir}: cannot write the run folder ({e.strerror or e})") from e
    return out_dir


def with_data_facts(cfg: RunConfig, labels: tuple[str, ...], in_channels: int) -> RunConfig:
    """cfg with the labels and channel counts that the data decided."""
    model = dataclasses.replace(cfg.model, in_channels=in_channels, out_channels=len(labels))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labels=labels), model=model)


def train_loop(
    cfg: RunConfig,
    make_batches: Callable[[], Iterable[Batch]],
    n_batches: int,
    val: ArrayDataset,
    out_dir: Path,
    preprocess: dict,
    extra: dict | None = None,
    gen: torch.Generator | None = None,
    dist: Dist = SINGLE,
    resume: bool = False,
    keep_last: bool = False,
) -> nn.Module:
    """Epochs of training and validation; best epoch by mean validation Dice (``keep_last``: the
    last epoch, for a run that held no image out; ``train_data.holds_out``). Writes metrics.csv,
    best.pt, last.pt (each epoch) and curves.png into ``out_dir`` (rank 0 only; it alone validates);
    returns the trained model. ``gen``: the data-order generator, saved in last.pt for ``resume``."""
    device = run_device(dist)
    precision = resolve_precision(cfg.train.precision, device)
    reuse_memory(cfg.train.reuse_memory, device.type, cfg.train.activation_checkpointing)
    model = build_model(cfg.model).to(device)
    size = cfg.data.image_size
    example = torch.zeros(1, cfg.model.in_channels, size, size, device=device)
    apply_checkpointing(model, cfg.train.activation_checkpointing, example)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:  # in place: state_dict keys, hence checkpoints, stay the same
        model.compile()
    log.info(
        "model %s: %s parameters; %s on %s",
        cfg.preset,
        f"{count_parameters(model):,}",
        precision,
        device,
    )
    opt = make_adam(model.parameters(), cfg.train.lr, cfg.train.weight_decay, cfg.train.adam_impl)
    scaler = grad_scaler(precision, device)
    if device.type == "cuda" and not cfg.train.deterministic:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: autotuned conv kernels
    sched = make_scheduler(opt, cfg)
    state = TrainState()
    if resume:
        state = restore(out_dir / "last.pt", model, opt, sched, gen)
        log.info("resuming %s after epoch %d", out_dir, state.epoch)
    elif dist.is_main:
        check_free_space(out_dir, checkpoint_bytes(model))
    net = wrap_model(model, dist, cfg.train.sync_bn, device)
    t_start = time.perf_counter() - state.elapsed
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        desc = f"epoch {epoch}/{cfg.train.epochs}"
        loss = train_one_epoch(
            net, make_batches(), n_batches, opt, cfg, device, precision, desc, dist.is_main, scaler
        )
        loss = mean_over_ranks(loss, dist)
        if sched is not None:
            sched.step()
        stop = False
        if dist.is_main:
            row = {
                "epoch": epoch,
                "train_loss": loss,
                **validate(model, val, cfg, cfg.data.labels, device, precision),
                "lr": lr,
                "seconds": time.perf_counter() - t0,
            }
            state = TrainState(epoch, state.best, [*state.rows, row], time.perf_counter() - t_start)
            save_epoch(cfg, model, state, out_dir, preprocess, extra, opt, sched, gen, keep_last)
            stop = bool(cfg.train.max_minutes) and state.elapsed > cfg.train.max_minutes * 60
            if stop:
                log.info(
                    "time budget of %.1f min reached after epoch %d", cfg.train.max_minutes, epoch
                )
        if broadcast_flag(stop, dist):
            break
    if dist.is_main and state.rows:
        from biounet.viz import plot_curves

        plot_curves(state.rows, cfg.data.labels, out_dir / "curves.png")
    return model


def log_tensorboard(log_dir: Path, row: dict[str, float]) -> None:
    """One epoch's metrics.csv row as TensorBoard scalars (optional: needs the tensorboard package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise BiounetError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from e
    with SummaryWriter(str(log_dir)) as w:
        for k, v in row.items():
            if k != "epoch":
                w.add_scalar(k, v, int(row["epoch"]))


def save_epoch(
    cfg: RunConfig,
    model: nn.Module,
    state: TrainState,
    out_dir: Path,
    preprocess: dict,
    extra: dict | None,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    gen: torch.Generator | None,
    keep_last: bool = False,
) -> None:
    """metrics.csv, best.pt (if this epoch is the best, or every epoch with ``keep_last``) and
    last.pt; updates ``state.best``.
    last.pt is written last: it is the commit point a resumed run starts from, so a kill between the
    files repeats the epoch rather than skipping a best.pt."""
    row, labels = state.rows[-1], cfg.data.labels
    write_metrics_csv(out_dir / "metrics.csv", state.rows)
    info = {**(extra or {}), "epoch": state.epoch, "metrics": row, "run_config": cfg.to_dict()}
    if row["val_dice_mean"] > state.best or keep_last:
        state.best = max(state.best, row["val_dice_mean"])
        save_checkpoint(out_dir / "best.pt", model, cfg.model, labels, preprocess, info)
    train_state = capture(state, opt, sched, gen)
    save_checkpoint(
        out_dir / "last.pt",
        model,
        cfg.model,
        labels,
        preprocess,
        {**info, "train_state": train_state},
    )
    if cfg.train.tensorboard:  # after the checkpoints, so a logging failure loses nothing
        log_tensorboard(out_dir / "tensorboard", row)
    log.info(
        "epoch %d: train loss %.4f, val loss %.4f, val dice %s, %.1fs",
        state.epoch,
        row["train_loss"],
        row["val_loss"],
        " ".join(f"{lb}={row[f'val_dice_{lb}']:.4f}" for lb in labels),
        row["seconds"],
    )


def write_metrics_csv(path: Path, rows: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
