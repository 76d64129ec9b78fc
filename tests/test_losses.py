"""Loss maths against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from biounet.losses import (
    article_dice_loss_pooled,
    article_iou_pooled,
    bce_dice_loss,
    pixel_weights,
    soft_dice_per_image,
)


def t(rows: list[list[float]]) -> torch.Tensor:
    """A (1, 1, H, W) tensor from nested lists."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


TARGET = t([[1, 0], [1, 0]])  # 2 of 4 pixels


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        # p = 0.5 everywhere: inter = 0.5*2 = 1, sum p = 2, sum t = 2 -> (2*1 + 1) / (2 + 2 + 1)
        (0.5, 3 / 5),
        # p = 0.75: inter 1.5, sum p 3 -> (3 + 1) / (3 + 2 + 1)
        (0.75, 4 / 6),
        # p = 0.25: inter 0.5, sum p 1 -> (1 + 1) / (1 + 2 + 1)
        (0.25, 2 / 4),
    ],
)
def test_soft_dice_known_logits(p: float, expected: float) -> None:
    logits = torch.full((1, 1, 2, 2), math.log(p / (1 - p)))
    d = soft_dice_per_image(logits, TARGET)
    assert d.shape == (1, 1)
    assert d.item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_is_per_image_and_label() -> None:
    logits = torch.zeros(2, 3, 2, 2)  # p = 0.5
    target = torch.zeros(2, 3, 2, 2)
    target[1, 2] = 1  # image 1, label 2: all four pixels
    d = soft_dice_per_image(logits, target)
    assert d.shape == (2, 3)
    # empty target: (0 + 1) / (2 + 0 + 1); full target: (2*2 + 1) / (2 + 4 + 1)
    expected = torch.full((2, 3), 1 / 3)
    expected[1, 2] = 5 / 7
    torch.testing.assert_close(d, expected)


def test_soft_dice_smooth_argument() -> None:
    d = soft_dice_per_image(torch.zeros(1, 1, 2, 2), TARGET, smooth=0.0)
    assert d.item() == pytest.approx(2 * 1 / (2 + 2))


def test_bce_of_half_probability_is_ln2() -> None:
    logits = torch.zeros(2, 2, 5, 7)
    target = (torch.rand(2, 2, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    loss = bce_dice_loss(logits, target, bce_weight=1.0, dice_weight=0.0)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_bce_dice_loss_is_the_weighted_sum() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 2, 8, 9, generator=g) * 3
    target = (torch.rand(3, 2, 8, 9, generator=g) > 0.6).float()
    bce = F.binary_cross_entropy(torch.sigmoid(logits), target)
    dice = soft_dice_per_image(logits, target).mean()
    loss = bce_dice_loss(logits, target, bce_weight=0.3, dice_weight=2.0)
    assert loss.item() == pytest.approx((0.3 * bce + 2.0 * (1 - dice)).item(), rel=1e-5)


def test_bce_dice_loss_of_a_confident_correct_prediction_is_near_zero() -> None:
    target = t([[1, 0, 0], [1, 1, 0]])
    logits = (target * 2 - 1) * 30
    assert bce_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    # and a confident wrong one is large: BCE ~30 per pixel, Dice ~0
    assert bce_dice_loss(-logits, target).item() > 25


def test_bce_dice_loss_accepts_bf16_logits() -> None:
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)
    loss = bce_dice_loss(logits, TARGET)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(2) + (1 - 3 / 5), rel=1e-6)


def test_article_dice_loss_is_pooled_over_batch_not_averaged() -> None:
    logits = torch.zeros(2, 1, 2, 2)  # p = 0.5 on all 8 pixels
    target = torch.zeros(2, 1, 2, 2)
    target[0] = 1  # image 0 full (4 ones), image 1 empty
    # pooled: inter 2, sum p 4, sum t 4 -> 1 - (4 + 1) / (8 + 1) = 4/9
    assert article_dice_loss_pooled(logits, target).item() == pytest.approx(4 / 9, rel=1e-6)
    # averaging per image instead would give 1 - (5/7 + 1/3) / 2 = 10/21
    per_image = 1 - soft_dice_per_image(logits, target).mean().item()
    assert per_image == pytest.approx(10 / 21, rel=1e-6)


def test_article_iou_pooled_hand_example() -> None:
    big = 10.0
    pred = t([[1, 1], [0, 0]])
    logits = torch.cat([(pred * 2 - 1) * big, torch.full((1, 1, 2, 2), -big)])  # image 1: nothing
    target = torch.cat([TARGET, torch.zeros(1, 1, 2, 2)])  # image 1: empty
    # image 0: intersection 1, union 3; image 1 adds nothing to either -> 1/3 (a per-image mean would be 2/3)
    assert article_iou_pooled(logits, target).item() == pytest.approx(1 / 3)


def test_article_iou_empty_vs_empty_is_one() -> None:
    assert article_iou_pooled(torch.full((2, 2, 3, 3), -5.0), torch.zeros(2, 2, 3, 3)).item() == 1.0


def test_article_iou_threshold_is_strict_and_explicit() -> None:
    logits = torch.full((1, 1, 2, 2), math.log(0.6 / 0.4))  # p = 0.6 everywhere
    target = torch.ones(1, 1, 2, 2)
    assert article_iou_pooled(logits, target, threshold=0.5).item() == pytest.approx(1.0)
    assert article_iou_pooled(logits, target, threshold=0.7).item() == pytest.approx(0.0)


def test_polar_area_weights_grow_with_the_row_and_average_one() -> None:
    assert pixel_weights("uniform", 4, 3) is None
    w = pixel_weights("polar_area", 4, 3)
    assert w.shape == (4, 3)
    # rows at radii 0.125, 0.375, 0.625, 0.875 (mean 0.5): weights 0.25, 0.75, 1.25, 1.75
    torch.testing.assert_close(w[:, 0], torch.tensor([0.25, 0.75, 1.25, 1.75]))
    assert (w[:, 0:1] == w).all()
    with pytest.raises(ValueError, match="polar_area"):
        pixel_weights("radial", 4, 3)


def test_weighted_loss_counts_each_pixel_by_its_weight() -> None:

    # target 1 everywhere; prediction right (p = 0.9) on row 0 and wrong (p = 0.1) on row 1
    logit = math.log(0.9 / 0.1)
    logits = torch.tensor([[[[logit, logit], [-logit, -logit]]]])
    target = torch.ones(1, 1, 2, 2)
    ones = torch.ones(2, 2)
    assert torch.allclose(
        bce_dice_loss(logits, target, pixel_weight=ones), bce_dice_loss(logits, target)
    )
    w = torch.tensor([[0.5, 0.5], [1.5, 1.5]])  # the wrong row counts 3x
    # Dice = (2 * sum(w p) + 1) / (sum(w p) + sum(w) + 1): sum(w p) = 0.9 + 0.3 = 1.2, sum(w) = 4
    want_dice = (2 * 1.2 + 1) / (1.2 + 4 + 1)
    got = soft_dice_per_image(logits, target, weight=w)
    assert abs(float(got) - want_dice) < 1e-6
    # BCE = mean(w * -log p) = (0.5 * 2 * -log 0.9 + 1.5 * 2 * -log 0.1) / 4
    want_bce = (1.0 * -math.log(0.9) + 3.0 * -math.log(0.1)) / 4
    loss = bce_dice_loss(logits, target, pixel_weight=w)
    assert abs(float(loss) - (want_bce + 1 - want_dice)) < 1e-5
