"""Losses: golden values, equivalences, the known mask, the factory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from tagger.train.losses import (
    AsymmetricLossConfig,
    asymmetric_loss,
    bce_loss,
    create_loss,
    sigmoid_focal_loss,
)


def _batch(seed: int = 0, shape: tuple[int, int] = (6, 5)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(shape, generator=g) < 0.4).double()
    known = torch.rand(shape, generator=g) < 0.7
    return logits, targets, known


def test_bce_golden_value() -> None:
    # one known positive at logit 0 (log 2) and one known negative at logit ln 3:
    # -log(1 - 3/4) = log 4; the unknown cell (huge loss if counted) is ignored
    logits = torch.tensor([[0.0, math.log(3.0), -20.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    known = torch.tensor([[True, True, False]])
    assert bce_loss(logits, targets, known).item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert bce_loss(logits, targets, known, reduction="sum").item() == pytest.approx(math.log(8))


def test_focal_golden_value() -> None:
    # p = 1/2 for a positive: alpha * (1/2)^2 * log 2
    loss = sigmoid_focal_loss(torch.zeros(1, 1), torch.ones(1, 1), alpha=0.25, gamma=2.0)
    assert loss.item() == pytest.approx(0.25 * 0.25 * math.log(2))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 1.5), (0.7, 0.0)])
def test_focal_matches_torchvision_when_all_known(
    reduction: str, alpha: float, gamma: float
) -> None:
    logits, targets, _ = _batch(1)
    ours = sigmoid_focal_loss(logits, targets, None, alpha=alpha, gamma=gamma, reduction=reduction)  # type: ignore[arg-type]
    ref = tv_focal(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(ours, ref)
    all_known = torch.ones_like(targets, dtype=torch.bool)
    masked = sigmoid_focal_loss(
        logits, targets, all_known, alpha=alpha, gamma=gamma, reduction=reduction
    )  # type: ignore[arg-type]
    torch.testing.assert_close(masked, ref)


def test_focal_gamma0_no_alpha_equals_bce_with_gradients() -> None:
    logits, targets, known = _batch(2)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    focal = sigmoid_focal_loss(a, targets, known, alpha=-1, gamma=0)
    bce = bce_loss(b, targets, known)
    torch.testing.assert_close(focal, bce)
    focal.backward()
    bce.backward()
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad)


def test_asl_reduces_to_bce_and_focal() -> None:
    logits, targets, known = _batch(3)
    asl0 = asymmetric_loss(logits, targets, known, gamma_pos=0, gamma_neg=0, clip=0)
    torch.testing.assert_close(asl0, bce_loss(logits, targets, known))
    asl2 = asymmetric_loss(logits, targets, known, gamma_pos=2, gamma_neg=2, clip=0)
    torch.testing.assert_close(asl2, sigmoid_focal_loss(logits, targets, known, alpha=-1, gamma=2))


def test_asl_golden_value_with_probability_shift() -> None:
    # negative with p = 0.3, clip 0.05: p_m = 0.25, loss = 0.25^4 * -log(0.75)
    logit = math.log(0.3 / 0.7)
    loss = asymmetric_loss(torch.tensor([[logit]]), torch.zeros(1, 1), gamma_neg=4, clip=0.05)
    assert loss.item() == pytest.approx(0.25**4 * -math.log(0.75), rel=1e-5)
    # a very easy negative (p < clip) contributes nothing
    easy = asymmetric_loss(torch.tensor([[-5.0]]), torch.zeros(1, 1), clip=0.05)
    assert easy.item() == 0.0


@pytest.mark.parametrize(
    "fn", [bce_loss, sigmoid_focal_loss, asymmetric_loss], ids=["bce", "focal", "asl"]
)
def test_unknown_cells_have_zero_gradient_and_do_not_normalise(fn: object) -> None:
    logits, targets, known = _batch(4)
    x = logits.clone().requires_grad_()
    loss = fn(x, targets, known)  # type: ignore[operator]
    loss.backward()
    assert x.grad is not None
    assert (x.grad[~known] == 0).all()
    assert (x.grad[known] != 0).any()
    # mean over known cells only: the same as the mean of the elementwise loss on known cells
    elementwise = fn(logits, targets, known, reduction="none")  # type: ignore[operator]
    assert (elementwise[~known] == 0).all()
    torch.testing.assert_close(loss.detach(), elementwise[known].mean())
    # changing targets of unknown cells changes nothing
    flipped = torch.where(known, targets, 1 - targets)
    torch.testing.assert_close(fn(logits, flipped, known), loss.detach())  # type: ignore[operator]


def test_unknown_cell_with_infinite_loss_keeps_gradient_finite() -> None:
    logits = torch.tensor([[1000.0, 0.5]], requires_grad=True)
    targets = torch.tensor([[0.0, 1.0]])
    known = torch.tensor([[False, True]])
    loss = asymmetric_loss(logits, targets, known, clip=0)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0] == 0


def test_no_known_cell_gives_zero_not_nan() -> None:
    logits, targets, _ = _batch(5)
    x = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss(x, targets, torch.zeros_like(targets, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert x.grad is not None and (x.grad == 0).all()


def test_float_known_weights_scale_cells() -> None:
    logits, targets, _ = _batch(6, (2, 2))
    weights = torch.tensor([[1.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
    per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = (per * weights).sum() / weights.sum()
    torch.testing.assert_close(bce_loss(logits, targets, weights), expected)


def test_create_loss_from_dict_and_config() -> None:
    logits, targets, known = _batch(7)
    focal = create_loss({"name": "focal", "alpha": -1, "gamma": 0})
    torch.testing.assert_close(focal(logits, targets, known), bce_loss(logits, targets, known))
    asl = create_loss(AsymmetricLossConfig(gamma_neg=2))
    torch.testing.assert_close(
        asl(logits, targets, known),
        asymmetric_loss(logits, targets, known, gamma_neg=2, gamma_pos=0, clip=0.05),
    )


def test_create_loss_errors_list_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'.*\['asl', 'bce', 'focal'\]"):
        create_loss({"name": "hinge"})
    with pytest.raises(ValueError, match="gamma"):
        create_loss({"name": "bce", "gamma": 2.0})  # bce has no gamma: refused, not ignored
    with pytest.raises(ValueError, match="reduction"):
        bce_loss(*_batch(8), reduction="avg")  # type: ignore[arg-type]
