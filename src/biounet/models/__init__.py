"""Model registry: named presets and ``build_model(cfg)``."""

from __future__ import annotations

import dataclasses

from torch import nn

from biounet.config import ModelConfig
from biounet.errors import BiounetError
from biounet.models.attention_unet import AttentionUNet
from biounet.models.unet import UNet
from biounet.models.unet_plus_plus import UNetPlusPlus
from biounet.models.unet_valid import UNetValid

_SEED = ModelConfig(
    in_channels=3,
    out_channels=2,
    base_width=64,
    depth=4,
    norm="batch",
    up_mode="nearest_conv",
    bias=True,
)
_PAPER = ModelConfig(
    in_channels=1,
    out_channels=2,
    base_width=64,
    depth=4,
    norm="none",
    up_mode="transpose",
    bias=True,
)

# name -> architecture. Why these widths: see README ("Models").
PRESETS: dict[str, ModelConfig] = {
    # The article's model: 3 in, 2 out, widths 64..1024, BN after every conv, biased convs, nearest-upsample +
    # 3x3 conv decoder: 34,527,106 parameters.
    "seed": _SEED,
    # Ronneberger et al. 2015 (padded convs): no BN, 2x2 up-conv; 31,030,658 parameters for 1 in / 2 out.
    "paper": _PAPER,
    # Small default for CPU work: widths 16..256, 1.9M parameters.
    "small": ModelConfig(base_width=16, depth=4, norm="batch", up_mode="transpose", bias=False),
    # Middle size: widths 32..512, 7.8M parameters.
    "medium": ModelConfig(base_width=32, depth=4, norm="batch", up_mode="transpose", bias=False),
    # The article's Attention U-Net: "seed" + an attention gate per skip (1x1 convs + BN to F_l/2
    # channels): 34,878,638 parameters, as in the article.
    "attention_seed": dataclasses.replace(_SEED, arch="attention_unet"),
    # The article's UNet++: nested DoubleConv nodes, parameter-free bilinear upsampling, one head:
    # 36,629,698 parameters, as in the article (36,630,088 with deep supervision's 4 heads).
    "unetpp_seed": dataclasses.replace(_SEED, arch="unet_plus_plus", up_mode="bilinear"),
    # The paper's U-Net as published: unpadded convs, 572 -> 388; same weights as "paper".
    "paper_valid": dataclasses.replace(_PAPER, arch="unet_valid"),
    # Its CPU size: the same structure (unpadded, 4 poolings, no BN, 2x2 up-conv, 2-class softmax),
    # widths 16..256: 1,940,834 parameters for 1 in / 2 out (the ISBI 2012 benchmark's model).
    "paper_valid_small": dataclasses.replace(_PAPER, arch="unet_valid", base_width=16),
    # CPU sizes of the family, widths 16..256 like "small".
    "attention_small": ModelConfig(
        arch="attention_unet", base_width=16, depth=4, norm="batch", up_mode="transpose"
    ),
    "unetpp_small": ModelConfig(
        arch="unet_plus_plus", base_width=16, depth=4, norm="batch", up_mode="bilinear"
    ),
}

ARCHS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "unet_valid": UNetValid,
    "attention_unet": AttentionUNet,
    "unet_plus_plus": UNetPlusPlus,
}


def preset(name: str, **overrides: object) -> ModelConfig:
    """The named preset with fields replaced by ``overrides`` (None values are ignored)."""
    if name not in PRESETS:
        raise BiounetError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return dataclasses.replace(
        PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}
    )


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.arch not in ARCHS:
        raise BiounetError(f"unknown architecture {cfg.arch!r}; valid: {', '.join(ARCHS)}")
    return ARCHS[cfg.arch](cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
