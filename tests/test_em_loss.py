from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from biounet.em.loss import weighted_cross_entropy


def test_uniform_logits_hand_computed():
    # K = 2 equal logits: every pixel's CE is ln 2. Weights 2 on half the pixels, 1 on the rest:
    # mean weight 1.5 -> 1.5 ln 2.
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [1, 0]]])
    weight = torch.tensor([[[2.0, 2.0], [1.0, 1.0]]])
    assert weighted_cross_entropy(logits, target, weight).item() == pytest.approx(1.5 * math.log(2))


def test_confident_pixel_hand_computed():
    # logits (0, ln 3) -> softmax (1/4, 3/4); target 1 -> CE = ln(4/3); weight 4 -> 4 ln(4/3)
    logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1)
    out = weighted_cross_entropy(logits, torch.tensor([[[1]]]), torch.tensor([[[4.0]]]))
    assert out.item() == pytest.approx(4 * math.log(4 / 3), rel=1e-6)


def test_unit_weight_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 4, generator=g)
    target = torch.randint(0, 3, (2, 5, 4), generator=g)
    out = weighted_cross_entropy(logits, target, torch.ones(2, 5, 4))
    torch.testing.assert_close(out, F.cross_entropy(logits, target))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="weight"):
        weighted_cross_entropy(
            torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64), torch.ones(1, 4, 3)
        )
    with pytest.raises(ValueError, match="int64"):
        weighted_cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
