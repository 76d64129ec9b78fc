"""The U-Net (Ronneberger et al. 2015) with padded convolutions, any input size."""

from __future__ import annotations

import torch
from torch import nn

from biounet.config import ModelConfig
from biounet.models.blocks import DoubleConv, Down, OutConv, Up, pad_to_multiple


class UNet(nn.Module):
    """Contracting path of ``depth`` Down blocks (channels doubling), expanding path of ``depth`` Up
    blocks (channels halving, skips concatenated), 1x1 head.

    forward: (B, in_channels, H, W) float -> (B, out_channels, H, W) logits, for any H, W: the input
    is zero-padded to a multiple of 2**depth and the output cropped back. Subclasses change the
    expanding path by setting ``up_block`` (same constructor arguments as ``Up``).
    """

    up_block: type[nn.Module] = Up

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_width * 2**i for i in range(cfg.depth + 1)]
        self.inc = DoubleConv(cfg.in_channels, widths[0], cfg.norm, cfg.bias)
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], cfg.norm, cfg.bias) for i in range(cfg.depth)
        )
        self.ups = nn.ModuleList(
            self.up_block(widths[i + 1], widths[i], widths[i], cfg.up_mode, cfg.norm, cfg.bias)
            for i in reversed(range(cfg.depth))
        )
        self.outc = OutConv(widths[0], cfg.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 2**self.cfg.depth)
        skips = [self.inc(x)]  # (B, w0, H, W)
        for down in self.downs:
            skips.append(down(skips[-1]))  # (B, w_i, H/2^i, W/2^i)
        y = skips.pop()  # bottleneck (B, w_depth, H/2^depth, W/2^depth)
        for up in self.ups:
            y = up(y, skips.pop())
        return self.outc(y)[..., :h, :w]
