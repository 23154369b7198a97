"""Repeat factors (hand-worked) and the distributed repeat-factor sampler."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from tagger.train.sampling import RepeatFactorSampler, SeededSampler, compute_repeat_factors

# three images, tags (a, b, c):
#   image 0: a, b        image 1: a        image 2: nothing known positive
# column c is positive in image 2 but *unknown* there, so it does not count.
TARGETS = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
KNOWN = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=bool)


def test_repeat_factors_hand_worked_uniform() -> None:
    # f(a) = 2/3, f(b) = 1/3, f(c) = 0 (its only positive is unknown); t = 0.6
    # r(a) = max(1, 0.6 / (2/3)) = max(1, 0.9) = 1;  r(b) = 0.6 / (1/3) = 1.8
    # r(I0) = max(r(a), r(b)) = 1.8;  r(I1) = r(a) = 1;  r(I2) = 1 (no known positive)
    r = compute_repeat_factors(TARGETS, KNOWN, threshold=0.6, phi="uniform")
    np.testing.assert_allclose(r, [1.8, 1.0, 1.0])


def test_repeat_factors_hand_worked_sqrt() -> None:
    r = compute_repeat_factors(TARGETS, KNOWN, threshold=0.6, phi="sqrt")
    np.testing.assert_allclose(r, [math.sqrt(1.8), 1.0, 1.0])


def test_repeat_factors_properties() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 12)) < rng.random(12) ** 3).astype(np.float32)
    known = rng.random((200, 12)) < 0.8
    r = compute_repeat_factors(targets, known, threshold=0.2)
    assert r.shape == (200,) and (r >= 1).all()
    no_positive = ~((targets > 0) & known).any(axis=1)
    assert (r[no_positive] == 1).all()
    # a higher threshold never lowers a factor
    assert (compute_repeat_factors(targets, known, threshold=0.5) >= r).all()
    # empty and all-unknown inputs
    assert compute_repeat_factors(np.zeros((0, 3)), np.zeros((0, 3), bool), 0.1).shape == (0,)
    np.testing.assert_array_equal(
        compute_repeat_factors(targets, np.zeros_like(known), 0.5), np.ones(200)
    )


def test_repeat_factors_bad_input() -> None:
    with pytest.raises(ValueError, match="threshold"):
        compute_repeat_factors(TARGETS, KNOWN, threshold=0)
    with pytest.raises(ValueError, match="phi"):
        compute_repeat_factors(TARGETS, KNOWN, threshold=0.1, phi="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be equal"):
        compute_repeat_factors(TARGETS, KNOWN[:2], threshold=0.1)
    with pytest.raises(ValueError, match=">= 1"):
        RepeatFactorSampler(np.array([1.0, 0.5]))


def test_sampler_deterministic_per_seed_and_epoch() -> None:
    factors = np.array([1.0, 2.5, 1.3, 1.0, 3.0])
    a = RepeatFactorSampler(factors, seed=7)
    b = RepeatFactorSampler(factors, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    a.set_epoch(4)
    assert list(a) == list(b)  # nothing else carried between epochs
    c = RepeatFactorSampler(factors, seed=8)
    c.set_epoch(4)
    assert list(c) != list(b)


def test_sampler_counts_follow_stochastic_rounding() -> None:
    per_image = np.array([1.0, 2.0, 2.25, 1.5])
    sampler = RepeatFactorSampler(np.tile(per_image, 500), seed=0)  # image i has factor i % 4
    totals = torch.zeros(4, dtype=torch.float64)
    epochs = 20
    for epoch in range(epochs):
        counts = torch.bincount(sampler.epoch_indices(epoch), minlength=2000).view(500, 4)
        # integer part always, plus at most one more
        assert (counts[:, 0] == 1).all() and (counts[:, 1] == 2).all()
        assert ((counts[:, 2] == 2) | (counts[:, 2] == 3)).all()
        assert ((counts[:, 3] == 1) | (counts[:, 3] == 2)).all()
        totals += counts.sum(dim=0)
    mean = totals / (epochs * 500)
    # E[count] = r exactly; binomial std of the mean is <= 0.5 / sqrt(10000) = 0.005
    torch.testing.assert_close(mean, torch.from_numpy(per_image), atol=0.02, rtol=0)


@pytest.mark.parametrize("n", [9, 10])
def test_sampler_two_ranks_disjoint_and_complete(n: int) -> None:
    rng = np.random.default_rng(1)
    factors = 1 + 2 * rng.random(n)
    ranks = [RepeatFactorSampler(factors, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        full = ranks[0].epoch_indices(epoch).tolist()
        assert full == ranks[1].epoch_indices(epoch).tolist()  # same draws everywhere
        parts = [list(s) for s in ranks]
        assert len(parts[0]) == len(parts[1]) == len(ranks[0])
        # positions are split disjointly: interleaving the slices rebuilds the padded list
        padded = full + full[: len(parts[0]) * 2 - len(full)]
        assert [x for pair in zip(*parts, strict=True) for x in pair] == padded
        # every draw of the epoch is served; only the padding (< num_replicas) repeats
        served = Counter(parts[0]) + Counter(parts[1])
        assert served - Counter(full) == Counter(full[: len(padded) - len(full)])
        assert len(padded) - len(full) < 2


def test_uniform_factors_give_a_permutation() -> None:
    sampler = RepeatFactorSampler(np.ones(17), seed=5)
    assert sorted(sampler) == list(range(17))
    assert sampler.expected_length() == 17


def test_seeded_sampler_pairs_indices_with_reproducible_seeds() -> None:
    sampler = RepeatFactorSampler(np.array([1.0, 2.0, 1.5]), seed=2)
    seeded = SeededSampler(sampler)
    seeded.set_epoch(1)
    pairs = list(seeded)
    assert [i for i, _ in pairs] == sampler.rank_indices(1).tolist()
    assert len({s for _, s in pairs}) == len(pairs)  # repeated images get fresh augmentation
    assert list(SeededSampler(RepeatFactorSampler(np.array([1.0, 2.0, 1.5]), seed=2))) != pairs
    again = SeededSampler(RepeatFactorSampler(np.array([1.0, 2.0, 1.5]), seed=2))
    again.set_epoch(1)
    assert list(again) == pairs
