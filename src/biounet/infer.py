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
    x = normalize(x).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        logits = model(x)
    return torch.sigmoid(logits.float()).cpu()


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
) -> Iterator[np.ndarray]:
    """Each (H, W, C) uint8 image -> (L, H, W) float32 probabilities at its own size, in order."""
    size, channels = int(preprocess["image_size"]), int(preprocess["in_channels"])
    for chunk in batched(images, batch_size):
        geos: list[Geometry] = []
        xs = []
        for img in chunk:
            img = match_channels(img, channels)
            geo = square_geometry(img.shape[0], img.shape[1], size)
            xs.append(to_network(img, geo, is_mask=False))
            geos.append(geo)
        probs = forward_probs(model, torch.stack(xs), device, precision)
        for p, geo in zip(probs, geos, strict=True):
            yield from_network(p, geo).numpy()


def preprocess_spec(image_size: int, in_channels: int) -> dict:
    """What a checkpoint records so predict can prepare images exactly as training did."""
    return {
        "image_size": image_size,
        "in_channels": in_channels,
        "resize": "pad_to_square_centred",
        "normalize": "per_image_channel_zscore",
    }
