"""Building blocks named after the U-Net paper, shared by every model of the family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biounet.models.upconv import UpConv2x2


def conv_norm_relu(
    c_in: int, c_out: int, norm: str, bias: bool, kernel: int = 3, valid: bool = False
) -> list[nn.Module]:
    """A ``kernel`` x ``kernel`` conv, optional batch norm, ReLU. (B, c_in, H, W) -> (B, c_out, H, W),
    or (B, c_out, H - kernel + 1, W - kernel + 1) with ``valid=True`` (unpadded, as in the paper)."""
    pad = 0 if valid else kernel // 2
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=bias)]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> [BN] -> ReLU) x 2. (B, c_in, H, W) -> (B, c_out, H, W), or
    (B, c_out, H - 4, W - 4) with ``valid=True``."""

    def __init__(
        self, c_in: int, c_out: int, norm: str = "batch", bias: bool = False, valid: bool = False
    ) -> None:
        super().__init__(
            *conv_norm_relu(c_in, c_out, norm, bias, valid=valid),
            *conv_norm_relu(c_out, c_out, norm, bias, valid=valid),
        )


class Down(nn.Sequential):
    """2x2 max-pool then DoubleConv. (B, c_in, H, W) -> (B, c_out, H/2, W/2), or
    (B, c_out, H/2 - 4, W/2 - 4) with ``valid=True``."""

    def __init__(
        self, c_in: int, c_out: int, norm: str = "batch", bias: bool = False, valid: bool = False
    ) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(c_in, c_out, norm, bias, valid))


class UpSample(nn.Module):
    """Doubles H and W and maps c_in -> c_out channels.

    ``mode="transpose"``: 2x2 transposed conv, stride 2 (the paper's "up-convolution").
    ``mode="nearest_conv"``: x2 nearest upsampling, then 3x3 conv + [BN] + ReLU (the article's code).
    """

    def __init__(self, c_in: int, c_out: int, mode: str, norm: str, bias: bool) -> None:
        super().__init__()
        if mode == "transpose":
            # The transposed conv is not followed by a norm, so it keeps its bias.
            self.op: nn.Module = UpConv2x2(c_in, c_out)
        elif mode == "nearest_conv":
            self.op = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                *conv_norm_relu(c_in, c_out, norm, bias),
            )
        else:
            raise ValueError(f"up_mode must be 'transpose' or 'nearest_conv', got {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Up(nn.Module):
    """Upsample the deeper map, concatenate the skip, DoubleConv.

    x: (B, c_in, H, W), skip: (B, c_skip, 2H, 2W) -> (B, c_out, 2H, 2W).
    """

    def __init__(
        self, c_in: int, c_skip: int, c_out: int, mode: str, norm: str, bias: bool
    ) -> None:
        super().__init__()
        self.up = UpSample(c_in, c_out, mode, norm, bias)
        self.conv = DoubleConv(c_out + c_skip, c_out, norm, bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class OutConv(nn.Conv2d):
    """Final 1x1 conv to one logit per class. (B, c_in, H, W) -> (B, n_classes, H, W)."""

    def __init__(self, c_in: int, n_classes: int) -> None:
        super().__init__(c_in, n_classes, kernel_size=1)


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Zero-pad the bottom and right of (B, C, H, W) so H and W are multiples of ``m``; the caller
    crops the output back with ``[..., :H, :W]``."""
    ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x
