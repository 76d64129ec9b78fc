"""The 2x2 up-convolution's matrix-product backward against PyTorch's own transposed conv."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from biounet.models.upconv import UpConv2x2, _UpConvFn


def test_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.double, generator=g, requires_grad=True)
    w = torch.randn(3, 4, 2, 2, dtype=torch.double, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(_UpConvFn.apply, (x, w, b))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(_UpConvFn.apply, (x_cl, w, None))


def grads(m: nn.Module, x: torch.Tensor, g: torch.Tensor, bf16: bool) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    m.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = m(x)
    y.backward(g.to(y.dtype))
    return [y.detach().float(), x.grad, m.weight.grad, m.bias.grad]


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_outputs_and_gradients_as_conv_transpose(bf16: bool, channels_last: bool) -> None:
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(8, 6, 2, stride=2)
    up = UpConv2x2(8, 6)
    up.load_state_dict(ref.state_dict())  # the same keys and shapes
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 8, 7, 9).contiguous(memory_format=fmt)
    g = torch.randn(2, 6, 14, 18)
    tol = 2e-2 if bf16 else 1e-5  # bf16 keeps 8 bits of mantissa
    for a, b in zip(grads(ref, x, g, bf16), grads(up, x, g, bf16), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.allclose(a, b, rtol=tol, atol=tol * a.abs().max().item())


def test_fast_path_only_where_a_gradient_is_wanted() -> None:
    up = UpConv2x2(4, 2)
    x = torch.randn(1, 4, 3, 3)
    assert up._fast_backward(x)  # parameters want gradients
    with torch.no_grad():
        assert not up._fast_backward(x)
    up.requires_grad_(False)
    assert not up._fast_backward(x)
    with torch.inference_mode():
        assert up(x).shape == (1, 2, 6, 6)


def test_pytorch_backward_on_request() -> None:
    up, x = UpConv2x2(4, 2), torch.randn(1, 4, 3, 3)
    UpConv2x2.matrix_backward = False
    try:
        assert not up._fast_backward(x)
    finally:
        UpConv2x2.matrix_backward = True
    assert up._fast_backward(x)


def test_whole_model_gradients_match_pytorchs_backward_in_bf16() -> None:
    """One bf16 training step of the small preset: each parameter's gradient with the matrix
    backward is far closer to PyTorch's own bf16 one (a few bf16 roundings) than bf16 is to fp32."""
    import copy

    from biounet.losses import bce_dice_loss
    from biounet.models import build_model, preset

    torch.manual_seed(0)
    model = build_model(preset("small", in_channels=3, out_channels=2)).train()
    x, y = torch.randn(2, 3, 64, 64), (torch.rand(2, 2, 64, 64) > 0.7).float()

    def step(matrix: bool, bf16: bool) -> dict[str, torch.Tensor]:
        m = copy.deepcopy(model)
        UpConv2x2.matrix_backward = matrix
        try:
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits = m(x)
            bce_dice_loss(logits, y).backward()
        finally:
            UpConv2x2.matrix_backward = True
        return {n: p.grad for n, p in m.named_parameters()}

    ours, theirs, fp32 = step(True, True), step(False, True), step(False, False)
    for n, g in theirs.items():
        assert (ours[n] - g).norm() <= 0.02 * g.norm(), n  # 2^-8 = 0.004 per rounding
        assert (ours[n] - g).norm() <= 0.2 * (fp32[n] - g).norm(), n
