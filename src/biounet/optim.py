"""The optimiser step of training: Adam in its fastest implementation, and the gradient scaler that
fp16 autocast needs on CUDA (bf16 and fp32 need none).

Measured on the project's 2-core CPU (AMD EPYC, AVX512-BF16, torch 2.13): one Adam step over the
small preset's 1.9M parameters takes 6.2 ms as a per-parameter loop (PyTorch's CPU default),
3.4 ms with ``foreach``, 0.9 ms fused; over the classic 31M U-Net 82, 79 and 15 ms. Hence ``"auto"``
is fused wherever PyTorch has a fused Adam for the parameters' device (CPU and CUDA).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

ADAM_IMPLS = ("auto", "fused", "foreach", "loop")


def make_adam(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float = 0.0,
    impl: str = "auto",
) -> torch.optim.Adam:
    """Adam over ``params``. ``impl``: "fused" (one kernel over all parameters), "foreach" (batched
    per-op kernels), "loop" (one parameter at a time) or "auto" (fused where the parameters' device
    has it, else foreach). All give the same update up to float rounding."""
    if impl not in ADAM_IMPLS:
        raise ValueError(f"adam_impl must be one of {', '.join(ADAM_IMPLS)}, got {impl!r}")
    params = list(params)
    if impl == "auto":
        impl = "fused" if all(_has_fused(p) for p in params) else "foreach"
    kw = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kw)


def _has_fused(p: torch.Tensor) -> bool:
    return p.device.type in ("cpu", "cuda") and p.is_floating_point()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler for fp16 autocast (its small exponent range underflows small gradients); for bf16
    and fp32 a disabled one, whose ``scale``/``step``/``update`` pass through unchanged."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def backward_step(
    loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    """Gradients of ``loss`` and one optimiser step (skipped by the scaler if fp16 overflowed)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
