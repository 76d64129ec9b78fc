"""Data-parallel training on PyTorch's own engine (``torchrun -m biounet train ...``).

The CLI reads torchrun's variables once (``Dist.from_env``) and passes the ``Dist`` down; nothing else
reads the environment. One process per GPU (nccl) or per CPU slot (gloo). ``cfg.train.batch_size`` is
the *global* batch: every rank draws the same seeded order and augments the same batch, then trains on
its own equal slice, so an N-process step sees the same images as a 1-process step and DDP's gradient
mean is the 1-process gradient (up to batch-norm statistics, which ``--sync-bn`` shares on CUDA).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import nn

from biounet.errors import BiounetError

# Only rank 0 validates and writes checkpoints; the others wait in the next collective meanwhile.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Dist:
        """From torchrun's RANK / WORLD_SIZE / LOCAL_RANK (absent: a single process)."""
        try:
            d = cls(
                int(env.get("RANK", 0)),
                int(env.get("WORLD_SIZE", 1)),
                int(env.get("LOCAL_RANK", 0)),
            )
        except ValueError as e:
            raise BiounetError(f"torchrun variables RANK/WORLD_SIZE/LOCAL_RANK: {e}") from e
        if not 0 <= d.rank < d.world_size:
            raise BiounetError(f"RANK={d.rank} is outside WORLD_SIZE={d.world_size}")
        return d

    def device(self) -> torch.device:
        """cuda:<local rank> where there is CUDA, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


SINGLE = Dist()


def init_process_group(d: Dist) -> None:
    """Join the group torchrun set up: nccl on CUDA, gloo on CPU. ``env://`` is torch's own protocol
    (MASTER_ADDR/PORT or torchrun's agent store); biounet code does not read those variables."""
    if not d.enabled or td.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if d.local_rank >= torch.cuda.device_count():
            raise BiounetError(
                f"LOCAL_RANK={d.local_rank} but this machine has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (--nproc_per_node)"
            )
        torch.cuda.set_device(d.local_rank)
    td.init_process_group(
        backend, init_method="env://", rank=d.rank, world_size=d.world_size, timeout=TIMEOUT
    )


def destroy_process_group(d: Dist, finished: bool = False) -> None:
    """Leave the group. ``finished`` (every rank got through without an error): first wait for
    all of them, so none tears gloo down while another still talks to it (a rank that left
    early was seen to abort at exit, SIGABRT "terminate called without an active exception",
    once in a CI run of the two-process test). After an error no rank waits: the others may
    never arrive."""
    if d.enabled and td.is_initialized():
        if finished:
            td.barrier()
        td.destroy_process_group()


def check_batch_size(batch_size: int, d: Dist) -> None:
    if batch_size % d.world_size:
        raise BiounetError(
            f"--batch-size {batch_size} is the global batch and must divide evenly among the "
            f"{d.world_size} processes"
        )


def epoch_order(order: torch.Tensor, d: Dist) -> torch.Tensor:
    """The shared epoch order cut to a multiple of the world size, so every batch splits evenly
    (DistributedSampler's drop_last). Unchanged for a single process."""
    return order[: len(order) - len(order) % d.world_size] if d.enabled else order


def rank_slice(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's disjoint, equal share of a batch (B, ...) -> (B / world, ...): rows rank, rank + W, ..."""
    return x[d.rank :: d.world_size] if d.enabled else x


def wrap_model(model: nn.Module, d: Dist, sync_bn: bool, device: torch.device) -> nn.Module:
    """DDP (with SyncBatchNorm if asked) for a distributed run; the model itself otherwise."""
    if sync_bn and device.type != "cuda":
        raise BiounetError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel)")
    if not d.enabled:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _collective_device(d: Dist) -> torch.device:
    """nccl only moves CUDA tensors; gloo moves CPU ones."""
    return d.device() if td.get_backend() == "nccl" else torch.device("cpu")


def mean_over_ranks(value: float, d: Dist) -> float:
    """Mean of a per-rank number (e.g. the training loss over equal shards)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device(d))
    td.all_reduce(t)
    return float(t.item()) / d.world_size


def broadcast_flag(flag: bool, d: Dist) -> bool:
    """Rank 0's decision (e.g. stop on the time budget) on every rank; also a barrier."""
    if not d.enabled:
        return flag
    t = torch.tensor([int(flag)], device=_collective_device(d))
    td.broadcast(t, src=0)
    return bool(t.item())
