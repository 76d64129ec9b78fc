"""Attention U-Net: shapes for any input size, the gate's maths, exact parameter counts."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from biounet.checkpoint import load_checkpoint, save_checkpoint
from biounet.config import ModelConfig
from biounet.models import PRESETS, build_model, count_parameters, preset
from biounet.models.attention_unet import AttentionGate, AttentionUNet

SIZES = [(17, 23), (32, 32), (45, 60)]
TINY = [
    ModelConfig(
        arch="attention_unet",
        in_channels=c_in,
        out_channels=c_out,
        base_width=4,
        depth=d,
        up_mode=up,
        norm=nm,
        bias=nm == "none",
    )  # fmt: skip
    for (d, up, nm), (c_in, c_out) in zip(
        itertools.product((2, 3), ("transpose", "nearest_conv"), ("batch", "none")),
        itertools.cycle([(1, 2), (3, 1), (3, 3)]),
        strict=False,
    )
]


@pytest.mark.parametrize(
    "cfg", TINY, ids=lambda c: f"d{c.depth}-{c.up_mode}-{c.norm}-{c.in_channels}to{c.out_channels}"
)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shape(cfg: ModelConfig, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model, AttentionUNet)
    with torch.no_grad():
        y = model(torch.randn(2, cfg.in_channels, *hw))
    assert y.shape == (2, cfg.out_channels, *hw)
    assert torch.isfinite(y).all()


def test_odd_input_equals_crop_of_zero_padded_input() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="attention_unet", base_width=4, depth=3)).eval()
    x = torch.randn(1, 3, 17, 23)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(F.pad(x, (0, 1, 0, 7)))[..., :17, :23])


def test_gate_with_zero_psi_halves_the_skip() -> None:
    """psi weights and bias 0 -> alpha = sigmoid(0) = 1/2 everywhere, whatever g and x."""
    gate = AttentionGate(c_g=6, c_x=4, c_int=2, norm="none", bias=True)
    with torch.no_grad():
        gate.psi[0].weight.zero_()
        gate.psi[0].bias.zero_()
    g, x = torch.randn(2, 6, 5, 7), torch.randn(2, 4, 5, 7)
    alpha = gate.coefficients(g, x)
    assert alpha.shape == (2, 1, 5, 7)
    torch.testing.assert_close(alpha, torch.full_like(alpha, 0.5))
    torch.testing.assert_close(gate(g, x), x / 2)


def test_gate_by_hand_with_1_channel() -> None:
    """alpha = sigmoid(w_psi * relu(w_g g + w_x x + b_g + b_x) + b_psi), computed by hand."""
    gate = AttentionGate(c_g=1, c_x=1, c_int=1, norm="none", bias=True)
    with torch.no_grad():
        for conv, (wt, b) in zip(
            (gate.w_g[0], gate.w_x[0], gate.psi[0]),
            ((2.0, 0.5), (-1.0, 0.0), (3.0, -1.0)),
            strict=True,
        ):
            conv.weight.fill_(wt)
            conv.bias.fill_(b)
    g = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2)
    x = torch.tensor([2.0, 4.0]).view(1, 1, 1, 2)
    # pixel 0: relu(2 + 0.5 - 2) = 0.5 -> sigmoid(1.5 - 1); pixel 1: relu(-2 + 0.5 - 4) = 0 -> sigmoid(-1)
    expected = torch.sigmoid(torch.tensor([0.5, -1.0])).view(1, 1, 1, 2)
    torch.testing.assert_close(gate.coefficients(g, x), expected)
    torch.testing.assert_close(gate(g, x), x * expected)


def test_gate_parameter_count_by_hand() -> None:
    # W_g, W_x: 1x1 conv 8 -> 4 (32 + 4 bias) + BN (8); psi: 1x1 conv 4 -> 1 (4 + 1) + BN (2).
    gate = AttentionGate(c_g=8, c_x=8, c_int=4, norm="batch", bias=True)
    assert count_parameters(gate) == 2 * (32 + 4 + 8) + (4 + 1 + 2)


def test_attention_seed_adds_the_gates_to_seed() -> None:
    """Each gate with F_g = F_l = F, F_int = F/2, biased convs and BN has F^2 + 3.5 F + 3 params."""
    gates = sum(f * f + 7 * f // 2 + 3 for f in (64, 128, 256, 512))
    assert gates == 351_532
    assert count_parameters(build_model(preset("attention_seed"))) == 34_527_106 + gates


@pytest.mark.parametrize(
    ("name", "expected"), [("attention_seed", 34_878_638), ("attention_small", 1_964_962)]
)
def test_preset_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(build_model(PRESETS[name])) == expected


def test_training_mode_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="attention_unet", base_width=4, depth=2, up_mode="nearest_conv")
    model = build_model(cfg).train()
    model(torch.randn(2, 3, 20, 28)).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(PRESETS["attention_small"], base_width=4, depth=2)
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "a.pt", model, cfg, ("cell",), {"image_size": 32})
    ck = load_checkpoint(tmp_path / "a.pt")
    assert ck.model_config == cfg
    x = torch.randn(1, 3, 19, 21)
    with torch.no_grad():
        torch.testing.assert_close(ck.build()(x), model(x))


def test_model_info_cli_prints_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    from biounet.cli import main

    assert main(["model-info", "--preset", "attention_small"]) == 0
    assert "trainable parameters: 1,964,962" in capsys.readouterr().out
