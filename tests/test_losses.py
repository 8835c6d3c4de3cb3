"""Hand-computed checks of the segmentation and CDCR losses (method/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch

from method.losses import (
    consensus_divergence_losses,
    consistency_mse,
    masked_cross_entropy,
    masked_dice_loss,
    one_hot,
    supervised_loss,
    unsupervised_loss,
)

LN3 = math.log(3.0)


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """2 classes on a 2x2 image. Pixel probabilities (class 0, class 1):
    a = (.25, .75), b = (.5, .5), c = (.75, .25), d = (.25, .75); targets a=1, b=c=d=0."""
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0]], [[LN3, 0.0], [0.0, LN3]]]).unsqueeze(0)
    target = torch.tensor([[[1, 0], [0, 0]]])
    return logits, target


def test_case_probabilities() -> None:
    logits, _ = _case()
    probs = logits.softmax(1)[0, 1].flatten()
    torch.testing.assert_close(probs, torch.tensor([0.75, 0.5, 0.25, 0.75]))


def test_cross_entropy_by_hand() -> None:
    logits, target = _case()
    # -log of the target-class probability: a .75, b .5, c .75, d .25.
    per_pixel = [-math.log(0.75), -math.log(0.5), -math.log(0.75), -math.log(0.25)]
    assert masked_cross_entropy(logits, target).item() == pytest.approx(sum(per_pixel) / 4)
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # Divided by all 4 pixels, not by the 2 confident ones (the reference).
    expected = (per_pixel[0] + per_pixel[1]) / 4
    assert masked_cross_entropy(logits, target, mask).item() == pytest.approx(expected)


def test_dice_by_hand_squared_denominators() -> None:
    logits, target = _case()
    # Class 0: P = [.25 .5 .75 .25], T = [0 1 1 1]: 2*1.5 / (.9375 + 3).
    # Class 1: P = [.75 .5 .25 .75], T = [1 0 0 0]: 2*.75 / (1.4375 + 1).
    expected = ((1 - 3.0 / 3.9375) + (1 - 1.5 / 2.4375)) / 2
    assert masked_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # Pixels a, b only. Class 0: P = [.25 .5], T = [0 1]: 2*.5 / (.3125 + 1).
    # Class 1: P = [.75 .5], T = [1 0]: 2*.75 / (.8125 + 1).
    expected = ((1 - 1.0 / 1.3125) + (1 - 1.5 / 1.8125)) / 2
    assert masked_dice_loss(logits, target, mask).item() == pytest.approx(expected, rel=1e-6)


def test_zero_mask_gives_exactly_zero_for_every_class() -> None:
    logits = torch.randn(2, 3, 5, 5)
    target = torch.randint(0, 3, (2, 5, 5))
    zero = torch.zeros(2, 5, 5)
    # The reference's background term ignored the mask; ours does not (docs/METHOD.md item 5).
    assert masked_dice_loss(logits, target, zero).item() == 0.0
    assert unsupervised_loss(logits, target, zero).item() == 0.0


def test_full_mask_equals_unmasked() -> None:
    logits = torch.randn(2, 3, 5, 5)
    target = torch.randint(0, 3, (2, 5, 5))
    ones = torch.ones(2, 5, 5)
    torch.testing.assert_close(
        unsupervised_loss(logits, target, ones), supervised_loss(logits, target)
    )


def test_losses_are_float32_from_half_logits() -> None:
    logits = torch.randn(1, 2, 4, 4).to(torch.bfloat16)
    target = torch.randint(0, 2, (1, 4, 4))
    assert supervised_loss(logits, target).dtype == torch.float32


def test_one_hot_matches_torch() -> None:
    target = torch.randint(0, 4, (2, 3, 3))
    expected = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert torch.equal(one_hot(target, 4), expected)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="target"):
        masked_cross_entropy(torch.randn(1, 2, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="mask"):
        masked_dice_loss(
            torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(4, 4)
        )


def _cdcr_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Foundation 1x1 map (.8, .2); U-Net 2x2 pixels (.6,.4) (.3,.7) (.9,.1) (.2,.8):
    argmax 0 vs [0, 1, 0, 1] -> consensus on pixels 0 and 2."""
    prob_f = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1)
    p1 = torch.tensor([[0.4, 0.7], [0.1, 0.8]])
    prob_u = torch.stack([1 - p1, p1]).unsqueeze(0)
    return prob_f, prob_u


def _h(*ps: float) -> float:
    return -sum(p * math.log(p) for p in ps)


def test_cdcr_by_hand() -> None:
    prob_f, prob_u = _cdcr_case()
    loss_c, loss_d = consensus_divergence_losses(prob_f, prob_u)
    # Foundation: 2 elements, its one pixel is consensus (nearest from 2x2 picks pixel (0, 0)).
    # U-Net: 8 elements, entropies of pixels 0 and 2.
    expected_c = 0.5 * (_h(0.8, 0.2) / 2 + (_h(0.6, 0.4) + _h(0.9, 0.1)) / 8)
    # Divergent pixels 1 and 3: (.8-.3)^2 + (.2-.7)^2 and (.8-.2)^2 + (.2-.8)^2, over 8 elements.
    expected_d = (0.5 + 0.72) / 8
    assert loss_c.item() == pytest.approx(expected_c, rel=1e-6)
    assert loss_d.item() == pytest.approx(expected_d, rel=1e-6)
    # +CR: all four pixels, (.08 + .5 + .02 + .72) / 8.
    assert consistency_mse(prob_f, prob_u).item() == pytest.approx(1.32 / 8, rel=1e-6)


def test_cdcr_agreement_and_disagreement() -> None:
    prob_f, _ = _cdcr_case()
    agree = torch.tensor([0.7, 0.3]).view(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous()
    loss_c, loss_d = consensus_divergence_losses(prob_f, agree)
    assert loss_d.item() == 0.0
    assert loss_c.item() == pytest.approx(0.5 * (_h(0.8, 0.2) / 2 + 4 * _h(0.7, 0.3) / 8), rel=1e-6)
    disagree = agree.flip(1)
    loss_c, loss_d = consensus_divergence_losses(prob_f, disagree)
    assert loss_c.item() == 0.0
    # Each pixel: (.8 - .3)^2 + (.2 - .7)^2 = .5, four pixels over 8 elements.
    assert loss_d.item() == pytest.approx(4 * 0.5 / 8, rel=1e-6)


def test_cdcr_nearest_upsampling_and_gradients() -> None:
    prob_f = torch.rand(2, 3, 4, 4).softmax(1).requires_grad_()
    prob_u = torch.rand(2, 3, 8, 8).softmax(1).requires_grad_()
    loss_c, loss_d = consensus_divergence_losses(prob_f, prob_u)
    (loss_c + loss_d).backward()
    # No detach: both students receive gradients (the reference's behaviour).
    assert prob_f.grad.abs().sum() > 0 and prob_u.grad.abs().sum() > 0


def test_entropy_of_zero_probability_is_finite() -> None:
    prob_f = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    prob_u = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    loss_c, loss_d = consensus_divergence_losses(prob_f, prob_u)
    assert loss_c.item() == 0.0 and loss_d.item() == 0.0
