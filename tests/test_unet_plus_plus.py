"""UNet++: shapes, exact parameter counts, deep supervision and pruning."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from biounet.checkpoint import load_checkpoint, save_checkpoint
from biounet.config import ModelConfig
from biounet.models import PRESETS, build_model, count_parameters
from biounet.models.unet_plus_plus import UNetPlusPlus

SIZES = [(17, 23), (32, 32), (45, 60)]
UP_MODES = ("nearest", "bilinear", "transpose", "nearest_conv")


def tiny(**kw: object) -> ModelConfig:
    return dataclasses.replace(
        ModelConfig(arch="unet_plus_plus", base_width=4, depth=3, up_mode="bilinear"), **kw
    )


@pytest.mark.parametrize(
    ("up", "ds", "depth"),
    list(itertools.product(UP_MODES, (False, True), (2, 3))),
    ids=lambda v: str(v),
)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shape(up: str, ds: bool, depth: int, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cfg = tiny(up_mode=up, deep_supervision=ds, depth=depth, in_channels=1, out_channels=3)
    model = build_model(cfg).eval()
    assert isinstance(model, UNetPlusPlus)
    with torch.no_grad():
        y = model(torch.randn(2, 1, *hw))
    assert y.shape == (2, 3, *hw)
    assert torch.isfinite(y).all()


def test_odd_input_equals_crop_of_zero_padded_input() -> None:
    torch.manual_seed(0)
    model = build_model(tiny(up_mode="nearest")).eval()
    x = torch.randn(1, 3, 17, 23)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(F.pad(x, (0, 1, 0, 7)))[..., :17, :23])


@pytest.mark.parametrize(
    ("up", "expected"),
    [
        # X00 DoubleConv 1->4: 36+4 + 144+4 = 188; X10 Down 4->8: 288+8 + 576+8 = 880;
        # X01 DoubleConv (4 + 8 upsampled) -> 4: 432+4 + 144+4 = 584; head 4+1.
        ("nearest", 188 + 880 + 584 + 5),
        # The 2x2 up-conv 8->4 (128+4) makes X01's input 4 + 4: 288+4 + 144+4 = 440.
        ("transpose", 188 + 880 + 132 + 440 + 5),
    ],
)
def test_parameter_count_by_hand(up: str, expected: int) -> None:
    cfg = tiny(in_channels=1, out_channels=1, depth=1, norm="none", bias=True, up_mode=up)
    assert count_parameters(build_model(cfg)) == expected


@pytest.mark.parametrize(
    ("name", "ds", "expected"),
    [
        ("unetpp_seed", False, 36_629_698),  # the article's count
        ("unetpp_seed", True, 36_629_698 + 3 * (64 * 2 + 2)),  # three more 1x1 heads
        ("unetpp_small", False, 2_291_986),
    ],
)
def test_preset_parameter_counts(name: str, ds: bool, expected: int) -> None:
    cfg = dataclasses.replace(PRESETS[name], deep_supervision=ds)
    assert count_parameters(build_model(cfg)) == expected


def test_deep_supervision_returns_the_mean_of_the_heads() -> None:
    torch.manual_seed(0)
    model = build_model(tiny(deep_supervision=True)).eval()
    x = torch.randn(2, 3, 19, 24)
    with torch.no_grad():
        heads = model.forward_heads(x)
        y = model(x)
    assert [tuple(h.shape) for h in heads] == [(2, 2, 19, 24)] * 3
    torch.testing.assert_close(y, (heads[0] + heads[1] + heads[2]) / 3)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_pruned_model_equals_head_p_of_the_full_model(p: int) -> None:
    """A full model's weights load into the pruned one, which returns X^{0,p}'s head and never runs
    the levels below p."""
    torch.manual_seed(0)
    full = build_model(tiny(deep_supervision=True)).eval()
    pruned = build_model(tiny(deep_supervision=True, prune_level=p)).eval()
    pruned.load_state_dict(full.state_dict())
    ran: list[str] = []
    for name, mod in pruned.named_children():
        for key, sub in mod.named_children():
            sub.register_forward_hook(lambda *_, n=f"{name}.{key}": ran.append(n))
    x = torch.randn(1, 3, 21, 18)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), full.forward_heads(x)[p - 1])
    assert sorted(n for n in ran if n.startswith("encoder")) == [
        f"encoder.{i}" for i in range(p + 1)
    ]
    nodes = {n.removeprefix("nodes.") for n in ran if n.startswith("nodes")}
    assert nodes == {f"{i}_{j}" for j in range(1, p + 1) for i in range(p - j + 1)}


def test_pruning_needs_deep_supervision_and_a_level_in_range() -> None:
    with pytest.raises(ValueError, match="prune_level=2 needs deep_supervision"):
        build_model(tiny(prune_level=2))
    with pytest.raises(ValueError, match="prune_level must be in 0..depth=3, got 4"):
        build_model(tiny(prune_level=4, deep_supervision=True))
    build_model(tiny(prune_level=3))  # pruning at full depth is the whole net


def test_unknown_up_mode_names_the_argument() -> None:
    with pytest.raises(ValueError, match="up_mode.*'bicubic'"):
        build_model(tiny(up_mode="bicubic"))


def test_training_mode_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(tiny(depth=2, deep_supervision=True, up_mode="transpose")).train()
    model(torch.randn(2, 3, 20, 28)).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_checkpoint_round_trip_keeps_deep_supervision(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny(depth=2, deep_supervision=True)
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "pp.pt", model, cfg, ("cell",), {"image_size": 32})
    ck = load_checkpoint(tmp_path / "pp.pt")
    assert ck.model_config == cfg
    x = torch.randn(1, 3, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(ck.build()(x), model(x))


def test_model_info_cli_prints_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    from biounet.cli import main

    assert main(["model-info", "--preset", "unetpp_small"]) == 0
    assert "trainable parameters: 2,291,986" in capsys.readouterr().out
