"""Speed options that leave the model's maths unchanged: batch norm folded into convolutions,
channels-last memory, bf16 weights, ``torch.compile``, and activation checkpointing for training.

Each function takes any ``nn.Module`` (not a ``ModelConfig``), so every architecture of the family
benefits; none changes the original module except ``checkpoint_blocks``, which says so.
"""

from __future__ import annotations

import copy
import types

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.checkpoint import checkpoint

from biounet.infer import AUTOCAST_DTYPES, PRECISIONS
from biounet.models.blocks import DoubleConv, Down, Up


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which every ``Conv2d`` directly followed by a
    ``BatchNorm2d`` inside an ``nn.Sequential`` carries the norm in its weights and bias, and the
    norm is an ``nn.Identity``. The original module is untouched.

    In eval mode BN is the affine map ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` with
    frozen statistics, so it folds exactly into the conv: one pass over memory fewer per layer.
    """
    folded = copy.deepcopy(model).eval()
    _fold_in_place(folded)
    return folded


def _fold_in_place(module: nn.Module) -> None:
    for child in module.children():
        _fold_in_place(child)
    if not isinstance(module, nn.Sequential):
        return
    names = list(module._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = module._modules[a], module._modules[b]
        if (
            isinstance(conv, nn.Conv2d)
            and isinstance(bn, nn.BatchNorm2d)
            and bn.track_running_stats
            and bn.running_mean is not None
        ):
            module._modules[a] = fuse_conv_bn_eval(conv, bn)
            module._modules[b] = nn.Identity()


def prepare_for_inference(
    model: nn.Module,
    precision: str = "fp32",
    channels_last: bool = True,
    compile: bool = False,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A copy of ``model`` ready to run: BN folded, eval mode, no gradients, on ``device``,
    channels-last weights, bf16/fp16 weights for those precisions, optionally compiled.

    With bf16 weights run the model under ``biounet.infer.autocast(device, "bf16")`` (as
    ``forward_probs`` does): autocast would round the weights to bf16 at every call anyway, so
    casting them once gives the same numbers without the per-call copies.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    m = fold_batchnorm(model).requires_grad_(False)
    if device is not None:
        m = m.to(device)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    if precision in AUTOCAST_DTYPES:
        m = m.to(AUTOCAST_DTYPES[precision])
    if compile:
        # freezing (inference only): inductor takes the weights as constants, folds them into the
        # graph and prepacks them for oneDNN. Small width, 256 px, 2 CPU cores: 1.09 x / 1.14 x
        # the eager speed at batch 1 / 4 (benchmarks/speed_options.py --part compile_infer); in a
        # one-off comparison at batch 1, 1.28 x with freezing against 1.16 x without
        m = torch.compile(m, options={"freezing": True})
    return m


CHECKPOINT_BLOCKS: tuple[type[nn.Module], ...] = (Down, Up, DoubleConv)


def checkpoint_blocks(
    model: nn.Module,
    blocks: tuple[type[nn.Module], ...] = CHECKPOINT_BLOCKS,
    example: torch.Tensor | None = None,
    levels: int = 3,
) -> nn.Module:
    """Activation checkpointing, in place: each outermost module of a type in ``blocks`` keeps only
    its inputs during the forward pass and recomputes its inside during backward. Returns ``model``.

    Memory falls from every activation of the network to the blocks' inputs plus one block's
    activations, for about one more forward pass of compute. The forward is replaced on the
    instances only, so ``state_dict`` keys (and checkpoints) are unchanged. Batch-norm running
    statistics are updated again by the recomputation (one extra momentum step per training step).

    With ``example`` (an input batch, e.g. (1, C, H, W) at the training size) only the blocks of
    the ``levels`` finest levels are checkpointed (``finest_blocks``). In a U-Net every level costs
    about the same compute, while the finer a level the more activations it holds, so this saves
    most of the memory for a fraction of the recomputation ("top" scope of
    ``TrainConfig.activation_checkpointing``; measured in ``benchmarks/speed.py``).
    """
    targets = outermost_blocks(model, blocks)
    if example is not None:
        chosen = finest_blocks(model, targets, example, levels)
        targets = [b for b in targets if id(b) in chosen]
    for block in targets:
        # A bound method (not a closure) so that deepcopy rebinds it to the copy.
        block.forward = types.MethodType(_checkpointed_forward, block)
    return model


def apply_checkpointing(model: nn.Module, scope: str, example: torch.Tensor) -> nn.Module:
    """``TrainConfig.activation_checkpointing`` on ``model``, in place: "off" leaves it, "all"
    checkpoints every block, "top" the finest levels' (``example``: one input batch at the
    training size, for ``finest_blocks``). Returns ``model``."""
    if scope == "all":
        checkpoint_blocks(model)
    elif scope == "top":
        checkpoint_blocks(model, example=example)
    return model


def outermost_blocks(module: nn.Module, blocks: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    """The modules of a type in ``blocks`` that are not inside another such module."""
    out = []
    for child in module.children():
        out.extend([child] if isinstance(child, blocks) else outermost_blocks(child, blocks))
    return out


def finest_blocks(
    model: nn.Module, blocks: list[nn.Module], example: torch.Tensor, levels: int = 3
) -> set[int]:
    """``id`` of each of ``blocks`` (modules inside ``model``) whose output is more than
    1 / 2**``levels`` of the largest output's height in a forward of ``example`` (no gradients,
    eval mode: batch-norm statistics untouched), except the block that runs last. Backward starts
    with that one while every other activation is still stored, so recomputing it would cost
    compute and save no peak memory.
    """
    heights: dict[int, int] = {}
    hooks = [
        b.register_forward_hook(lambda m, _i, o: heights.__setitem__(id(m), o.shape[-2]))
        for b in blocks
    ]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not heights:
        return set()
    top = max(heights.values())
    last = list(heights)[-1]  # dicts keep insertion order: the order the blocks first ran
    return {k for k, h in heights.items() if 2**levels * h > top and k != last}


def _checkpointed_forward(self: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    forward = type(self).forward
    if self.training and torch.is_grad_enabled():
        return checkpoint(forward, self, *args, use_reentrant=False)
    return forward(self, *args)
