"""Running a trained model: device/precision choice, batched forward passes, probabilities at the
input's own resolution."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from biounet.data.transforms import (
    Geometry,
    from_network,
    match_channels,
    normalize,
    square_geometry,
    to_network,
)
from biounet.errors import BiounetError

PRECISIONS = ("bf16", "fp16", "fp32")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """ "auto" (CUDA where present, else CPU), "cpu", "cuda" or "cuda:N"; BiounetError for a name
    that is no device or a GPU this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BiounetError(f"device {name!r}: not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (device.index or 0) >= n:
            raise BiounetError(
                f"device {name!r}: this machine has {n} CUDA GPU(s); use cpu or auto"
            )
    return device


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 matmuls/convs run natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> "bf16" where the hardware has it, else "fp16" on CUDA, else "fp32". "fp16" is for
    CUDA only (CPUs run it slower than fp32)."""
    if precision == "auto":
        if bf16_supported(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise BiounetError(
            f"precision fp16 needs a CUDA GPU (this run is on {device.type}): use bf16 or fp32"
        )
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    return contextlib.nullcontext()


@torch.inference_mode()
def forward_probs(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    precision: str,
    channels_last: bool = True,
) -> torch.Tensor:
    """(B, C, S, S) uint8 or float -> (B, L, S, S) float32 sigmoid probabilities on the CPU."""
    return network_probs(model, normalize(x), device, precision, channels_last)


@torch.inference_mode()
def network_probs(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    precision: str,
    channels_last: bool = True,
) -> torch.Tensor:
    """(B, C, h, w) normalised float -> (B, L, h, w) float32 sigmoid probabilities on the CPU."""
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        logits = model(x)
    return torch.sigmoid(logits.float()).cpu()


# Prepared images with a longer side than AUTO_TILE_ABOVE are run in AUTO_TILE windows by default:
# measured on 2 CPU cores (small preset, bf16; benchmarks/predict_tiles.py), a whole predict
# process on a 2048 px image peaked at 1563 MiB RSS, in 512 px windows at 829 MiB (4096 px: 5603
# vs 1593 MiB), no slower; at 1024 px windows cost more than they save (552 vs 610 MiB).
AUTO_TILE_ABOVE = 1024
AUTO_TILE = 512
TILE_BATCH = 4


def resolve_tile(tile: int | None, size: int) -> int:
    """The window side the network runs on for prepared images of side ``size``; 0: the whole
    image in one pass. ``tile`` None ("auto"): whole images up to ``AUTO_TILE_ABOVE`` pixels,
    else ``AUTO_TILE``; 0 or a tile at least ``size``: whole; a positive tile: that."""
    if tile is None:
        return AUTO_TILE if size > AUTO_TILE_ABOVE else 0
    if tile < 0:
        raise ValueError(f"tile: must be 0 (whole image) or a positive side, got {tile}")
    return 0 if tile >= size else tile


def batched(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def predict_images(
    model: nn.Module,
    images: list[np.ndarray],
    preprocess: dict,
    device: torch.device,
    precision: str,
    batch_size: int = 4,
    tile: int | None = 0,
    overlap: float = 0.25,
) -> Iterator[np.ndarray]:
    """Each (H, W, C) uint8 image -> (L, H, W) float32 probabilities at its own size, in order.

    ``tile`` (see ``resolve_tile``): with a window side, each prepared image is normalised whole
    (as for a single pass), then the network runs on overlapping ``tile`` x ``tile`` windows,
    ``TILE_BATCH`` at a time, blended with Gaussian weights (``infer_tiling.sliding_window``):
    memory is bounded by the windows, not the image."""
    size, channels = int(preprocess["image_size"]), int(preprocess["in_channels"])
    side = resolve_tile(tile, size)
    for chunk in batched(images, 1 if side else batch_size):
        geos: list[Geometry] = []
        xs = []
        for img in chunk:
            img = match_channels(img, channels)
            geo = square_geometry(img.shape[0], img.shape[1], size)
            xs.append(to_network(img, geo, is_mask=False))
            geos.append(geo)
        if side:
            probs = [
                tiled_probs(model, normalize(xs[0][None])[0], side, overlap, device, precision)
            ]
        else:
            probs = list(forward_probs(model, torch.stack(xs), device, precision))
        for p, geo in zip(probs, geos, strict=True):
            yield from_network(p, geo).numpy()


def tiled_probs(
    model: nn.Module,
    x: torch.Tensor,
    tile: int,
    overlap: float,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """(C, S, S) normalised float -> (L, S, S) float32 probabilities, the sigmoid of each window
    blended (``infer_tiling.sliding_window``, Gaussian weights)."""
    from biounet.infer_tiling import sliding_window

    run = lambda t: network_probs(model, t, device, precision)  # noqa: E731
    return sliding_window(run, x, tile, overlap, "gaussian", TILE_BATCH, "cpu")


def preprocess_spec(image_size: int, in_channels: int) -> dict:
    """What a checkpoint records so predict can prepare images exactly as training did."""
    return {
        "image_size": image_size,
        "in_channels": in_channels,
        "resize": "pad_to_square_centred",
        "normalize": "per_image_channel_zscore",
    }
