"""The label-context regression: out of fold, known cells only, never reads a cell's own label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagger.clean.context import ContextConfig, label_context, label_context_probs


def implied_world(n: int = 400, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Tag 0 ("dining_room") implies tag 1 ("chair"); tag 2 is independent noise. The image
    model is unsure of tag 1 everywhere (p = 0.3), so only the context can tell."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.4
    b = a | (rng.random(n) < 0.2)
    c = rng.random(n) < 0.5
    targets = np.column_stack([a, b, c]).astype(np.float32)
    probs = np.column_stack(
        [np.where(a, 0.8, 0.2), np.full(n, 0.3), rng.uniform(0.2, 0.8, n)]
    ).astype(np.float32)
    known = np.ones_like(targets, dtype=bool)
    groups = np.arange(n) % 4
    return probs, targets, known, groups


@pytest.mark.parametrize("low_rank", [False, True])
def test_context_flags_a_broken_implication(low_rank: bool) -> None:
    probs, targets, known, groups = implied_world()
    targets[0, :2] = [1, 0]  # dining room labelled, chair labelled negative: suspect
    targets[1, :2] = [0, 0]  # consistent
    config = ContextConfig(full_up_to=1, rank=2) if low_rank else ContextConfig()
    q = label_context_probs(probs, targets, known, groups, config)
    assert q[0, 1] > 0.9 > 0.3 > q[1, 1]
    assert q.dtype == np.float32 and q.shape == probs.shape


def test_a_cell_never_reads_its_own_label() -> None:
    probs, targets, known, groups = implied_world()
    before = label_context_probs(probs, targets, known, groups)
    flipped = targets.copy()
    flipped[5, 1] = 1 - flipped[5, 1]
    after = label_context_probs(probs, flipped, known, groups)
    assert after[5, 1] == pytest.approx(before[5, 1], abs=1e-6)
    assert not np.allclose(after[5, [0, 2]], before[5, [0, 2]], atol=1e-6)  # others read it


def test_unknown_cells_are_neither_positive_nor_negative() -> None:
    probs, targets, known, groups = implied_world()
    known[::3, 0] = False
    rng = np.random.default_rng(1)
    garbage = np.where(known, targets, rng.random(targets.shape) < 0.5).astype(np.float32)
    a = label_context_probs(probs, targets, known, groups)
    b = label_context_probs(probs, garbage, known, groups)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_out_of_fold_labels_of_the_scored_group_do_not_fit_it() -> None:
    probs, targets, known, groups = implied_world()
    before = label_context_probs(probs, targets, known, groups)
    changed = targets.copy()
    g0 = groups == 0
    changed[g0, 2] = 1 - changed[g0, 2]  # a tag no other tag depends on, in group 0 only
    after = label_context_probs(probs, changed, known, groups)
    # group 0's own regression never saw those labels, and they are not its rows' features
    # for tag 2 itself
    np.testing.assert_allclose(after[g0, 2], before[g0, 2], atol=1e-6)


def test_rare_tags_keep_the_image_probability_and_off_is_identity() -> None:
    probs, targets, known, groups = implied_world()
    targets[:, 2] = 0
    targets[0, 2] = 1  # one positive: not fitted
    q = label_context_probs(probs, targets, known, groups)
    np.testing.assert_array_equal(q[:, 2], probs[:, 2])
    off = label_context_probs(probs, targets, known, groups, ContextConfig(enabled=False))
    np.testing.assert_array_equal(off, probs)


def test_fitted_marks_the_cells_a_regression_scored() -> None:
    probs, targets, known, groups = implied_world()
    targets[:, 2] = 0
    targets[[0, 4], 2] = 1  # both positives in group 0: only the other groups' fits see them
    q, fitted = label_context(probs, targets, known, groups)
    assert fitted.dtype == bool and fitted.shape == probs.shape
    assert fitted[:, :2].all()
    g0 = groups == 0
    assert not fitted[g0, 2].any() and fitted[~g0, 2].all()
    np.testing.assert_array_equal(q[g0, 2], probs[g0, 2])  # unfitted cells keep the image score
    np.testing.assert_array_equal(q, label_context_probs(probs, targets, known, groups))
    _, off = label_context(probs, targets, known, groups, ContextConfig(enabled=False))
    assert not off.any()


def test_bad_shapes_and_one_group_are_refused() -> None:
    probs, targets, known, groups = implied_world(n=20)
    with pytest.raises(ValueError, match="at least 2"):
        label_context_probs(probs, targets, known, np.zeros(20, int))
    with pytest.raises(ValueError, match="expected"):
        label_context_probs(probs, targets[:10], known, groups)


@pytest.mark.parametrize("low_rank", [False, True])
def test_written_out_gradients_equal_autograd(low_rank: bool) -> None:
    from tagger.clean.context import _linear, _loss_and_grads

    gen = torch.Generator().manual_seed(0)
    n, t, r = 30, 6, 3
    logit, y = torch.randn(n, t, generator=gen), (torch.rand(n, t, generator=gen) < 0.4).float()
    x = torch.randint(-1, 2, (n, t), generator=gen).float()
    weight = (torch.rand(n, t, generator=gen) < 0.7).float()
    a, b = torch.randn(t, generator=gen), torch.randn(t, generator=gen)
    weights = (
        (torch.randn(t, r, generator=gen), torch.randn(t, r, generator=gen))
        if low_rank
        else (torch.randn(t, t, generator=gen), None)
    )
    loss, grads = _loss_and_grads(logit, x, y, weight, a, b, weights, l2=0.7)
    params = [p.clone().double().requires_grad_() for p in [a, b, *weights] if p is not None]
    pa, pb, *pw = params
    pweights = (pw[0], pw[1] if low_rank else None)
    z = _linear(logit.double(), x.double(), pa, pb, pweights)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y.double(), reduction="none")
    expected = (bce * weight.double()).sum() + 0.35 * sum((p * p).sum() for p in pw)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-5)
    for got, param in zip(grads, params, strict=True):
        torch.testing.assert_close(got.double(), param.grad, rtol=1e-4, atol=1e-4)
