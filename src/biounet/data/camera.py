"""Camera augmentation: what changes between cameras, clinics and hospitals rather than between
eyes. Colour cast, uneven illumination, defocus blur, sensor noise and JPEG compression, each
applied to a random share of the images of a batch; and (``colour_augment``) the colour changes
that a per-image, per-channel z-score does not undo: saturation and per-channel gamma. Pure
functions of (B, C, H, W) float images in [0, 1] and a seeded generator; the masks are untouched
(none of these moves a pixel).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from biounet.data.transforms import LUMA


@dataclass(frozen=True)
class CameraParams:
    p: float = 0.5  # probability of each effect, per image
    colour: float = 0.15  # per-channel gain exp(U(-colour, colour))
    illumination: float = 0.25  # std of the log gain on a 3x3 grid, smoothly interpolated
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # px
    noise_std: float = 0.02
    jpeg_quality: tuple[int, int] = (30, 90)


def colour_cast(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W), amount (B, C) log gains -> x * exp(amount) per channel, clamped to [0, 1]."""
    return (x * amount.exp()[:, :, None, None]).clamp(0, 1)


def illumination_field(log_grid: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, 1, g, g) log gains on a coarse grid -> (B, 1, H, W) smooth positive gain field."""
    return F.interpolate(log_grid, size=hw, mode="bicubic", align_corners=True).exp()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) -> same, separable Gaussian of ``sigma`` px, reflect-padded."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """(C, H, W) float in [0, 1] -> the same image after JPEG encoding at ``quality`` (1..95)."""
    from PIL import Image

    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(buf)).astype(np.float32) / 255
    out = out[..., None] if out.ndim == 2 else out
    return torch.from_numpy(out).permute(2, 0, 1)


def camera_augment(
    x: torch.Tensor, gen: torch.Generator, p: CameraParams = CameraParams()
) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> same, each effect on a random ``p.p`` share of the images."""
    b, c, h, w = x.shape

    def chosen() -> torch.Tensor:
        return torch.rand(b, generator=gen) < p.p

    def uni(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=gen))

    x = x.clone()
    on = chosen()
    cast = (torch.rand(b, c, generator=gen) * 2 - 1) * p.colour * on[:, None]
    x = colour_cast(x, cast if c == 3 else cast[:, :1].expand(b, c))
    on = chosen()
    grid = torch.randn(b, 1, 3, 3, generator=gen) * p.illumination * on[:, None, None, None]
    x = (x * illumination_field(grid, (h, w))).clamp(0, 1)
    for i in torch.nonzero(chosen()).flatten().tolist():
        x[i : i + 1] = gaussian_blur(x[i : i + 1], uni(*p.blur_sigma))
    on = chosen()
    std = torch.rand(b, generator=gen) * p.noise_std * on
    x = (x + torch.randn(x.shape, generator=gen) * std[:, None, None, None]).clamp(0, 1)
    for i in torch.nonzero(chosen()).flatten().tolist():
        x[i] = jpeg(x[i], round(uni(*p.jpeg_quality)))
    return x


@dataclass(frozen=True)
class ColourParams:
    """Measured need: Drishti-GS1 photographs (median in the field of view R/G/B 102/47/12,
    saturation 0.59) and REFUGE Canon ones (150/102/77, 0.24) differ in how the channels relate,
    not only in gain, and a gain is what the network's per-image z-score removes."""

    p: float = 0.5  # probability of each effect, per image
    saturation: tuple[float, float] = (0.0, 1.5)  # factor on the distance from grey (0: grey)
    gamma: float = 0.4  # per-channel exponent exp(U(-gamma, gamma))


def saturate(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1], factor (B,) -> grey + factor * (x - grey), clamped to [0, 1];
    grey is the luminance (``LUMA``, as ``match_channels`` makes grey images). Factor 0 gives
    grey, 1 the image."""
    w = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    grey = (x * w).sum(1, keepdim=True)
    return (grey + factor.view(-1, 1, 1, 1) * (x - grey)).clamp(0, 1)


def colour_augment(
    x: torch.Tensor, gen: torch.Generator, p: ColourParams = ColourParams()
) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> same: saturation (RGB only) and per-channel gamma, each on a
    random ``p.p`` share of the images."""
    b, c = x.shape[:2]
    if c == 3:
        on = torch.rand(b, generator=gen) < p.p
        lo, hi = p.saturation
        factor = lo + (hi - lo) * torch.rand(b, generator=gen)
        x = saturate(x, torch.where(on, factor, torch.ones(b)))
    on = torch.rand(b, generator=gen) < p.p
    gamma = ((torch.rand(b, c, generator=gen) * 2 - 1) * p.gamma).exp()
    # only the chosen images (a power is not cheap), out of place: the caller's batch stays as it
    # was, and one copy is made (saturate's output is not copied again)
    return x.index_put((on,), x[on].pow(gamma[on][:, :, None, None]))


def appearance_augment(
    x: torch.Tensor, gen: torch.Generator, camera: bool, colour: bool
) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> ``camera_augment`` then ``colour_augment``, each when asked
    (``DataConfig.camera_augment`` / ``colour_augment``): what every training batch maker applies
    after its geometry and photometric steps."""
    if camera:
        x = camera_augment(x, gen)
    if colour:
        x = colour_augment(x, gen)
    return x
