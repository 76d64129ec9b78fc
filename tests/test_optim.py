"""The optimiser step: Adam implementations agree, the fp16 loss scaler, precision choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from biounet.cli import main
from biounet.config import RunConfig, TrainConfig
from biounet.errors import BiounetError
from biounet.infer import autocast, resolve_precision
from biounet.optim import backward_step, grad_scaler, make_adam


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))


def trained(impl: str, steps: int = 5) -> list[torch.Tensor]:
    net = tiny_net()
    opt = make_adam(net.parameters(), lr=1e-2, weight_decay=1e-4, impl=impl)
    scaler = grad_scaler("fp32", torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(2, 3, 8, 8, generator=gen)
        backward_step(net(x).square().mean(), opt, scaler)
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("impl", ["fused", "foreach", "auto"])
def test_every_adam_implementation_gives_the_loop_update(impl: str) -> None:
    ref = trained("loop")
    for a, b in zip(trained(impl), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ref[0], tiny_net()[0].weight)  # the steps did move the weights


def test_auto_is_fused_on_the_cpu() -> None:
    opt = make_adam(tiny_net().parameters(), lr=1e-3)
    assert opt.defaults["fused"] is True


def test_unknown_adam_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="adam_impl"):
        make_adam(tiny_net().parameters(), lr=1e-3, impl="apex")


def test_scaler_is_a_pass_through_except_for_fp16() -> None:
    cpu = torch.device("cpu")
    assert not grad_scaler("bf16", cpu).is_enabled()
    assert not grad_scaler("fp32", cpu).is_enabled()
    loss = torch.tensor(3.0, requires_grad=True)
    assert grad_scaler("fp32", cpu).scale(loss) is loss


def test_precision_choice_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")  # never fp16 on a CPU
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(BiounetError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp8", cpu)


def test_bf16_autocast_runs_convolutions_in_bf16() -> None:
    net = tiny_net()
    with autocast(torch.device("cpu"), "bf16"):
        assert net(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16


def test_old_configs_without_adam_impl_still_load() -> None:
    d = RunConfig().to_dict()
    del d["train"]["adam_impl"]
    assert RunConfig.from_dict(d).train.adam_impl == "auto"
    assert TrainConfig().adam_impl == "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_fp16_training_on_the_cpu_is_refused_before_anything_is_written(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    rc = main(["train", "--data", str(synthetic_data), "--out", str(out), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert rc == 2 and "fp16 needs a CUDA GPU" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_fp16_fundus_training_on_the_cpu_is_refused_before_any_folder(
    synthetic_data: Path, tmp_path: Path
) -> None:
    from biounet.fundus.pipeline import FundusConfig, fit_fundus

    out = tmp_path / "f"
    with pytest.raises(BiounetError, match="fp16 needs a CUDA GPU"):
        fit_fundus(FundusConfig(data_root=str(synthetic_data), precision="fp16"), out)
    assert not out.exists()


def test_speed_options_reach_the_run_config(synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["-q", "train", "--data", str(synthetic_data), "--out", str(out), "--epochs", "1"]
    args += ["--image-size", "64", "--precision", "fp32", "--adam", "foreach", "--no-channels-last"]
    assert main([*args, "--checkpointing"]) == 0
    t = RunConfig.load_yaml(out / "config.yaml").train
    assert (t.adam_impl, t.channels_last, t.activation_checkpointing) == ("foreach", False, "all")
    assert (out / "best.pt").is_file()  # a checkpointed model trains, validates and saves


def test_top_checkpointing_trains_from_the_cli(synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["-q", "train", "--data", str(synthetic_data), "--out", str(out), "--epochs", "1"]
    assert main([*args, "--image-size", "64", "--checkpointing", "top"]) == 0
    assert RunConfig.load_yaml(out / "config.yaml").train.activation_checkpointing == "top"
    assert (out / "best.pt").is_file()
