"""UNet++ (Zhou et al. 2018): the U-Net's encoder with nested, densely connected skip pathways.

Node X^{i,j} (level i, column j) sees every earlier node of its level and the upsampled node below:
X^{i,j} = DoubleConv([X^{i,0}, ..., X^{i,j-1}, up(X^{i+1,j-1})]); column 0 is the encoder. With
parameter-free upsampling (``up_mode`` "nearest" or "bilinear", as in the common PyTorch port
"NestedUNet") and the article's widths it has the article's 36,629,698 parameters.

Deep supervision puts a 1x1 head on each top node X^{0,1..depth}; ``forward`` returns the mean of
their logits (Zhou et al.'s "accurate mode"), ``forward_heads`` each of them, e.g. for a loss per
head. Pruning (``prune_level`` = p) computes only the nodes with i + j <= p and returns head p
(their "fast mode"); it keeps every module, so a full model's checkpoint loads into a pruned one.
"""

from __future__ import annotations

import torch
from torch import nn

from biounet.config import ModelConfig
from biounet.models.blocks import DoubleConv, Down, OutConv, UpSample, pad_to_multiple

FREE_UP_MODES = ("nearest", "bilinear")
UP_MODES = (*FREE_UP_MODES, "transpose", "nearest_conv")


class NestedNode(nn.Module):
    """X^{i,j}: upsample the node below, concatenate after the level's earlier nodes, DoubleConv.

    same_level: j tensors (B, c_out, H, W), below: (B, c_below, H/2, W/2) -> (B, c_out, H, W).
    """

    def __init__(self, j: int, c_below: int, c_out: int, mode: str, norm: str, bias: bool) -> None:
        super().__init__()
        if mode in FREE_UP_MODES:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode=mode)
            c_up = c_below
        else:
            self.up = UpSample(c_below, c_out, mode, norm, bias)
            c_up = c_out
        self.conv = DoubleConv(j * c_out + c_up, c_out, norm, bias)

    def forward(self, same_level: list[torch.Tensor], below: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([*same_level, self.up(below)], dim=1))


class UNetPlusPlus(nn.Module):
    """forward: (B, in_channels, H, W) float -> (B, out_channels, H, W) logits, for any H, W
    (zero-padded to a multiple of 2**depth, output cropped back)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.up_mode not in UP_MODES:
            raise ValueError(f"up_mode must be one of {UP_MODES} for UNet++, got {cfg.up_mode!r}")
        if not 0 <= cfg.prune_level <= cfg.depth:
            raise ValueError(f"prune_level must be in 0..depth={cfg.depth}, got {cfg.prune_level}")
        if 0 < cfg.prune_level < cfg.depth and not cfg.deep_supervision:
            raise ValueError(
                f"prune_level={cfg.prune_level} needs deep_supervision=True: without it only "
                f"X^{{0,{cfg.depth}}} has a trained head"
            )
        self.cfg = cfg
        d = cfg.depth
        widths = [cfg.base_width * 2**i for i in range(d + 1)]
        self.encoder = nn.ModuleList(
            [DoubleConv(cfg.in_channels, widths[0], cfg.norm, cfg.bias)]
            + [Down(widths[i], widths[i + 1], cfg.norm, cfg.bias) for i in range(d)]
        )
        # Key "i_j" is node X^{i,j}, j >= 1.
        self.nodes = nn.ModuleDict(
            {
                f"{i}_{j}": NestedNode(j, widths[i + 1], widths[i], cfg.up_mode, cfg.norm, cfg.bias)
                for j in range(1, d + 1)
                for i in range(d - j + 1)
            }
        )
        n_heads = d if cfg.deep_supervision else 1
        self.heads = nn.ModuleList(OutConv(widths[0], cfg.out_channels) for _ in range(n_heads))

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, in_channels, H, W) -> the logits (B, out_channels, H, W) of each head in use: heads on
        X^{0,1..p} with deep supervision (p = prune_level, or depth), else the one on X^{0,depth}."""
        h, w = x.shape[-2:]
        p = self.cfg.prune_level or self.cfg.depth
        x = pad_to_multiple(x, 2**self.cfg.depth)
        # nodes[i] = [X^{i,0}, X^{i,1}, ...]: (B, w_i, H/2^i, W/2^i) each.
        nodes = [[self.encoder[0](x)]]
        for i in range(1, p + 1):
            nodes.append([self.encoder[i](nodes[i - 1][0])])
        for j in range(1, p + 1):
            for i in range(p - j + 1):
                nodes[i].append(self.nodes[f"{i}_{j}"](nodes[i], nodes[i + 1][j - 1]))
        top = nodes[0][1:]  # X^{0,1..p}
        if not self.cfg.deep_supervision:
            top = top[-1:]
        return [head(t)[..., :h, :w] for head, t in zip(self.heads, top, strict=False)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = self.forward_heads(x)
        if self.cfg.prune_level or len(heads) == 1:
            return heads[-1]
        return torch.stack(heads).mean(dim=0)
