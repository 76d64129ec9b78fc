"""What ``last.pt`` needs beyond the weights so that ``biounet train --resume`` continues a run as if it
had never stopped: optimizer and scheduler state, every random number generator, the epoch, the best
score and the metrics rows. All of it is tensors and plain data, so ``torch.load(weights_only=True)``
reads it back (see biounet.checkpoint)."""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from biounet.checkpoint import read_payload
from biounet.errors import BiounetError

# last.pt, the temporary copy an atomic save writes beside it, and best.pt
FREE_SPACE_FACTOR = 3


@dataclass
class TrainState:
    """Where a run stands after ``epoch`` finished epochs."""

    epoch: int = 0
    best: float = -math.inf
    rows: list[dict[str, float]] = field(default_factory=list)
    elapsed: float = 0.0  # seconds of training before this process started (for --max-minutes)


def rng_state(gen: torch.Generator | None) -> dict[str, Any]:
    """Every generator a training step draws from, as tensors and numbers."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if gen is not None:
        state["data"] = gen.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
    if gen is not None and "data" in state:
        gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture(
    state: TrainState,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    gen: torch.Generator | None,
) -> dict[str, Any]:
    """The ``train_state`` entry of last.pt, taken at the end of epoch ``state.epoch``."""
    return {
        "epoch": state.epoch,
        "best": state.best,
        "rows": state.rows,
        "elapsed": state.elapsed,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "rng": rng_state(gen),
    }


def read_resume(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(train_state, weights) of a run's last.pt, loaded without executing code."""
    path = Path(path)
    if not path.is_file():
        raise BiounetError(f"{path}: not found; --resume needs the last.pt of an interrupted run")
    payload = read_payload(path)
    ts = payload.get("extra", {}).get("train_state")
    if not isinstance(ts, dict) or not isinstance(payload.get("state_dict"), dict):
        raise BiounetError(
            f"{path}: holds no training state (written by a biounet before --resume)"
        )
    return ts, payload["state_dict"]


def restore(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    gen: torch.Generator | None,
) -> TrainState:
    """Put the model, optimizer, scheduler and generators back where ``path`` (last.pt) left them."""
    ts, weights = read_resume(path)
    try:
        model.load_state_dict(weights)
        opt.load_state_dict(ts["optimizer"])
        if sched is not None:
            sched.load_state_dict(ts["scheduler"])
        set_rng_state(ts["rng"], gen)
        return TrainState(int(ts["epoch"]), float(ts["best"]), list(ts["rows"]), ts["elapsed"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BiounetError(f"{path}: cannot resume from this training state ({e})") from e


def checkpoint_bytes(model: nn.Module) -> int:
    """About the size of last.pt: the weights and Adam's two moments of each of them."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return 3 * params + buffers


def check_free_space(folder: Path, need_one: int) -> None:
    """Refuse to start when the run folder's disk cannot hold the checkpoints training will write."""
    free = shutil.disk_usage(folder).free
    need = FREE_SPACE_FACTOR * need_one
    if free < need:
        raise BiounetError(
            f"{folder}: only {free / 1e6:.1f} MB free on its disk; training writes checkpoints of "
            f"about {need_one / 1e6:.1f} MB (last.pt, its temporary copy, best.pt) and needs "
            f"{need / 1e6:.1f} MB"
        )
