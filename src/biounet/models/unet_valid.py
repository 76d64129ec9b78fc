"""The U-Net exactly as in the paper (Ronneberger et al. 2015): unpadded 3x3 convolutions.

Every 3x3 conv trims one pixel per side, so the output is smaller than the input (572 -> 388 for
depth 4) and each skip is centre-cropped to the decoder's size before the concatenation. No pixel
of the output depends on padding; images larger than one tile are predicted with the overlap-tile
strategy (``biounet.infer_tiling.predict_overlap_tile``). Module names match ``UNet``'s, so
weights move between the padded and the unpadded network.
"""

from __future__ import annotations

import torch
from torch import nn

from biounet.config import ModelConfig
from biounet.models.blocks import DoubleConv, Down, OutConv, UpSample


def valid_output_size(in_size: int, depth: int) -> int:
    """Output side of the unpadded U-Net for an input side (572 -> 388 for depth 4).

    Raises ValueError when a max-pool would meet an odd side or a side shrinks below 1. Valid inputs
    are the sides = -4 mod 2**depth that are large enough (e.g. 188 + 16 k, k >= 0, for depth 4).
    """
    s = in_size
    for level in range(depth):
        s -= 4  # two unpadded 3x3 convs
        if s < 2 or s % 2:
            raise ValueError(
                f"in_size {in_size} is not a valid input for depth {depth}: the map before max-pool "
                f"{level + 1} would be {s} px (must be even and >= 2); {_nearest(in_size, -4, depth)}"
            )
        s //= 2
    s -= 4  # bottleneck
    for _ in range(depth):
        if s < 1:
            break
        s = 2 * s - 4  # 2x up-step, then two unpadded 3x3 convs
    if s < 1:
        raise ValueError(f"in_size {in_size} is too small for depth {depth}: nothing is left")
    return s


def valid_input_size(out_size: int, depth: int) -> int:
    """The input side whose output side is ``out_size`` (388 -> 572 for depth 4).

    Raises ValueError when no input gives exactly ``out_size``; valid outputs are the sides = 4 mod
    2**depth, from 4 up (e.g. 4 + 16 k for depth 4).
    """
    s = out_size
    for _ in range(depth):
        if s < 1 or (s + 4) % 2:
            raise ValueError(
                f"out_size {out_size} is not an output size of the unpadded U-Net of depth {depth}; "
                f"{_nearest(out_size, 4, depth)}"
            )
        s = (s + 4) // 2
    s += 4
    for _ in range(depth):
        s = 2 * s + 4
    if s < 1 or valid_output_size(s, depth) != out_size:
        raise ValueError(f"out_size {out_size} is too small for depth {depth}")
    return s


def _nearest(size: int, residue: int, depth: int) -> str:
    m = 2**depth
    lower = size - (size - residue) % m
    return f"nearest valid sizes: {lower} and {lower + m}"


def center_crop(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w), the centred window (the paper's skip crop)."""
    top, left = (x.shape[-2] - hw[0]) // 2, (x.shape[-1] - hw[1]) // 2
    return x[..., top : top + hw[0], left : left + hw[1]]


class ValidUp(nn.Module):
    """Up-step, centre-crop the skip to match, concatenate, unpadded DoubleConv.

    x: (B, c_in, h, w), skip: (B, c_skip, >= 2h, >= 2w) -> (B, c_out, 2h - 4, 2w - 4).
    The up-step keeps its size (2x2 up-conv, or nearest + padded 3x3 conv), as in the paper.
    """

    def __init__(
        self, c_in: int, c_skip: int, c_out: int, mode: str, norm: str, bias: bool
    ) -> None:
        super().__init__()
        self.up = UpSample(c_in, c_out, mode, norm, bias)
        self.conv = DoubleConv(c_out + c_skip, c_out, norm, bias, valid=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = self.up(x)
        return self.conv(torch.cat([center_crop(skip, y.shape[-2:]), y], dim=1))


class UNetValid(nn.Module):
    """The paper's U-Net: as ``UNet`` but every 3x3 conv unpadded.

    forward: (B, in_channels, H, W) float -> (B, out_channels, valid_output_size(H),
    valid_output_size(W)) logits; output pixel (y, x) is centred on input pixel (y + m, x + m) with
    m = (H - out_H) / 2 (92 for depth 4). H and W must be valid input sizes (ValueError otherwise).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_width * 2**i for i in range(cfg.depth + 1)]
        self.inc = DoubleConv(cfg.in_channels, widths[0], cfg.norm, cfg.bias, valid=True)
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], cfg.norm, cfg.bias, valid=True) for i in range(cfg.depth)
        )
        self.ups = nn.ModuleList(
            ValidUp(widths[i + 1], widths[i], widths[i], cfg.up_mode, cfg.norm, cfg.bias)
            for i in reversed(range(cfg.depth))
        )
        self.outc = OutConv(widths[0], cfg.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for side in x.shape[-2:]:
            valid_output_size(side, self.cfg.depth)  # a clear error before any conv fails
        skips = [self.inc(x)]  # (B, w0, H - 4, W - 4)
        for down in self.downs:
            skips.append(down(skips[-1]))  # (B, w_i, S_{i-1} / 2 - 4, ...): 284 - 4 = 280 at i = 1
        y = skips.pop()  # bottleneck (B, w_depth, 28, 28) for a 572 x 572 input
        for up in self.ups:
            y = up(y, skips.pop())
        return self.outc(y)
