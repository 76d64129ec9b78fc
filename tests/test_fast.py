"""Inference speed-ups keep the model's outputs: batch-norm folding (exact in fp32), bf16 weights
(within a stated tolerance), activation checkpointing (same gradients, same checkpoint keys)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from biounet.checkpoint import load_checkpoint, save_checkpoint
from biounet.config import ModelConfig, TrainConfig
from biounet.errors import BiounetError
from biounet.fast import (
    CHECKPOINT_BLOCKS,
    checkpoint_blocks,
    finest_blocks,
    fold_batchnorm,
    outermost_blocks,
    prepare_for_inference,
)
from biounet.infer import autocast, preprocess_spec
from biounet.models import build_model
from biounet.predictor import ModelPredictor

CPU = torch.device("cpu")


def model_with_real_bn(cfg: ModelConfig) -> nn.Module:
    """An eval-mode model whose BN layers have non-trivial statistics and affine parameters."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, cfg.in_channels, 32, 32) * 2 + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("up_mode", ["transpose", "nearest_conv"])
def test_fold_batchnorm_gives_the_same_outputs_in_fp32(up_mode: str) -> None:
    model = model_with_real_bn(ModelConfig(base_width=4, depth=3, up_mode=up_mode))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 27, 41, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # the original is untouched: same BN layers, same weights
    n_bn = 2 * (1 + 2 * 3) + (3 if up_mode == "nearest_conv" else 0)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fold_batchnorm_leaves_a_model_without_norm_alone() -> None:
    model = build_model(ModelConfig(base_width=4, depth=2, norm="none", bias=True)).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), rtol=0, atol=0)


def test_prepare_for_inference_bf16_is_within_tolerance_of_fp32() -> None:
    """Stated tolerance: bf16 keeps 8 significant bits, so over ~20 layers the logits may move by up
    to 2 % of their range; probabilities by at most 0.01, and thresholded masks agree on >= 99.9 %."""
    model = model_with_real_bn(ModelConfig(base_width=8, depth=3))
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    fast = prepare_for_inference(model, "bf16", channels_last=True)
    assert next(fast.parameters()).dtype == torch.bfloat16
    assert not next(fast.parameters()).requires_grad
    with torch.inference_mode(), autocast(CPU, "bf16"):
        out = fast(x.contiguous(memory_format=torch.channels_last)).float()
    span = float(ref.max() - ref.min())
    assert float((out - ref).abs().max()) <= 0.02 * span
    p_ref, p_out = torch.sigmoid(ref), torch.sigmoid(out)
    assert float((p_out - p_ref).abs().max()) <= 0.01
    assert float(((p_out > 0.5) == (p_ref > 0.5)).float().mean()) >= 0.999


def test_prepare_for_inference_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision must be one of bf16, fp16, fp32, got 'fp8'"):
        prepare_for_inference(nn.Conv2d(1, 1, 1), "fp8")


def test_prepare_for_inference_casts_weights_to_the_autocast_dtype() -> None:
    assert prepare_for_inference(nn.Conv2d(1, 1, 1), "fp16").weight.dtype == torch.float16
    assert prepare_for_inference(nn.Conv2d(1, 1, 1), "bf16").weight.dtype == torch.bfloat16


def two_label_checkpoint(tmp_path: Path):
    """A width-4 U-Net with trained-looking batch norm, labels a and b, 32 px: (checkpoint, a
    30 x 45 RGB image)."""
    cfg = ModelConfig(base_width=4, depth=2)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model_with_real_bn(cfg), cfg, ("a", "b"), preprocess_spec(32, 3))
    return load_checkpoint(path), np.random.default_rng(0).integers(0, 256, (30, 45, 3), np.uint8)


def test_predictor_fast_and_as_trained_agree_in_fp32(tmp_path: Path) -> None:
    ck, img = two_label_checkpoint(tmp_path)
    fast = ModelPredictor(ck, "fp32", fast=True).predict(img)
    plain = ModelPredictor(ck, "fp32", fast=False).predict(img)
    assert fast.prob.shape == (2, 30, 45)
    np.testing.assert_allclose(fast.prob, plain.prob, rtol=0, atol=1e-5)


def test_checkpoint_blocks_gives_the_same_gradients_and_state_dict_keys() -> None:
    model = model_with_real_bn(ModelConfig(base_width=4, depth=2)).train()
    ckpt = checkpoint_blocks(copy.deepcopy(model))
    assert list(ckpt.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    for m in (model, ckpt):
        m(x).square().mean().backward()
    for (name, a), b in zip(model.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)
    # a copy of a checkpointed model runs its own blocks, not the original's
    twin = copy.deepcopy(ckpt).eval()
    with torch.no_grad():
        for p in twin.downs[0].parameters():
            p.mul_(-1)
        assert not torch.allclose(twin(x), ckpt.eval()(x))


def block_names(model: nn.Module, ids: set[int]) -> list[str]:
    return [name for name, m in model.named_modules() if id(m) in ids]


def test_top_scope_picks_the_three_finest_levels_but_the_last_block() -> None:
    # depth 4 at 64 px: inc 64, downs 32/16/8/4, ups 8/16/32/64 rows; the finest three levels are
    # outputs taller than 64 / 8 = 8 rows, and ups.3 runs last.
    model = build_model(ModelConfig(base_width=4, depth=4)).train()
    blocks = outermost_blocks(model, CHECKPOINT_BLOCKS)
    ids = finest_blocks(model, blocks, torch.zeros(1, 3, 64, 64))
    assert block_names(model, ids) == ["inc", "downs.0", "downs.1", "ups.1", "ups.2"]
    assert model.training  # the dry forward leaves the mode as it was
    only_finest = finest_blocks(model, blocks, torch.zeros(1, 3, 64, 64), levels=1)
    assert block_names(model, only_finest) == ["inc"]


def test_top_scope_gives_the_same_gradients_and_leaves_batch_norm_statistics() -> None:
    model = model_with_real_bn(ModelConfig(base_width=4, depth=3)).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    top = checkpoint_blocks(copy.deepcopy(model), example=torch.zeros(1, 3, 32, 32))
    for k, v in top.state_dict().items():  # the dry forward ran in eval mode
        if "running" in k:
            torch.testing.assert_close(v, stats[k], rtol=0, atol=0, msg=k)
    patched = [n for n, m in top.named_modules() if "forward" in vars(m)]
    assert patched == ["inc", "downs.0", "downs.1", "ups.0", "ups.1"]  # not ups.2, the last
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for m in (model, top):
        m(x).square().mean().backward()
    for (name, a), b in zip(model.named_parameters(), top.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_scope_in_the_config() -> None:
    assert TrainConfig(activation_checkpointing=True).activation_checkpointing == "all"
    assert TrainConfig(activation_checkpointing=False).activation_checkpointing == "off"
    assert TrainConfig(activation_checkpointing="top").activation_checkpointing == "top"
    with pytest.raises(BiounetError, match="'off', 'top' or 'all', got 'some'"):
        TrainConfig(activation_checkpointing="some")


def test_single_model_tta_is_the_mean_of_the_flipped_views_flipped_back(tmp_path: Path) -> None:
    ck, img = two_label_checkpoint(tmp_path)
    one = ModelPredictor(ck, "fp32", fast=False)
    lr = one.predict(img[:, ::-1].copy()).prob[:, :, ::-1]
    ud = one.predict(img[::-1].copy()).prob[:, ::-1]
    tta = ModelPredictor(ck, "fp32", fast=False, tta=True).predict(img)
    np.testing.assert_allclose(tta.prob, (one.predict(img).prob + lr + ud) / 3, atol=1e-6)
    assert not np.allclose(tta.prob, one.predict(img).prob, atol=1e-4)  # it does change something
    assert tta.masks["a"].shape == (30, 45)
