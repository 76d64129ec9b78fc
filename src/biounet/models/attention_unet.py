"""Attention U-Net (Oktay et al. 2018): the U-Net with an additive attention gate on every skip.

The gate follows the widely used PyTorch implementation ("AttU_Net"): the gating signal g is the
coarser decoder level after its up step, so g and the skip x have the same size and the gate needs
no resampling. With the article's widths this reproduces its 34,878,638 parameters exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from biounet.models.blocks import DoubleConv, UpSample
from biounet.models.unet import UNet


def conv1x1_norm(c_in: int, c_out: int, norm: str, bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1, bias=bias)]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers)


class AttentionGate(nn.Module):
    """alpha = sigmoid(psi(ReLU(W_g g + W_x x))); returns x * alpha.

    g: (B, c_g, H, W) gating signal, x: (B, c_x, H, W) skip -> (B, c_x, H, W). W_g, W_x and psi
    are 1x1 convs (each followed by BN when ``norm="batch"``) to ``c_int``, ``c_int`` and 1
    channels.
    """

    def __init__(self, c_g: int, c_x: int, c_int: int, norm: str, bias: bool) -> None:
        super().__init__()
        self.w_g = conv1x1_norm(c_g, c_int, norm, bias)
        self.w_x = conv1x1_norm(c_x, c_int, norm, bias)
        self.psi = conv1x1_norm(c_int, 1, norm, bias)

    def coefficients(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The attention map alpha: (B, 1, H, W) in (0, 1)."""
        return torch.sigmoid(self.psi(torch.relu(self.w_g(g) + self.w_x(x))))

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(g, x)


class AttentionUp(nn.Module):
    """Upsample the deeper map to g, gate the skip with g, concatenate, DoubleConv.

    x: (B, c_in, H, W), skip: (B, c_skip, 2H, 2W) -> (B, c_out, 2H, 2W).
    """

    def __init__(
        self, c_in: int, c_skip: int, c_out: int, mode: str, norm: str, bias: bool
    ) -> None:
        super().__init__()
        self.up = UpSample(c_in, c_out, mode, norm, bias)
        # F_int = F_l / 2 as in Oktay et al.'s code and the common PyTorch port.
        self.gate = AttentionGate(c_out, c_skip, max(c_skip // 2, 1), norm, bias)
        self.conv = DoubleConv(c_out + c_skip, c_out, norm, bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        g = self.up(x)  # (B, c_out, 2H, 2W)
        return self.conv(torch.cat([self.gate(g, skip), g], dim=1))


class AttentionUNet(UNet):
    """The U-Net of ``biounet.models.unet`` with an ``AttentionUp`` in place of every ``Up``.

    forward: (B, in_channels, H, W) float -> (B, out_channels, H, W) logits, for any H, W (zero-padded
    to a multiple of 2**depth, output cropped back).
    """

    up_block = AttentionUp
