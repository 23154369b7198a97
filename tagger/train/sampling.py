"""Repeat-factor sampling for a long tail of tags, correct across distributed processes.

Repeat factors follow LVIS (Gupta et al. 2019, https://arxiv.org/abs/1908.03195, section 5),
applied to image-level tags: an image carrying a rare tag is shown more often per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Sampler

Phi = Literal["uniform", "sqrt"]


def compute_repeat_factors(
    targets: np.ndarray, known: np.ndarray, threshold: float, phi: Phi = "sqrt"
) -> np.ndarray:
    """Per-image repeat factors r(I) >= 1, float64 `[N]`, from targets/known `[N, num_tags]`.

    phi "uniform" is the identity, "sqrt" the square root (LVIS' choice).
    """
    if targets.shape != known.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and known {known.shape} must be equal [N, T]")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if phi not in ("uniform", "sqrt"):
        raise ValueError(f"phi {phi!r} not one of 'uniform', 'sqrt'")
    n = targets.shape[0]
    if n == 0:
        return np.ones(0)
    positive = (targets > 0) & known.astype(bool)
    # 1. f(h): fraction of all images in which tag h is a known positive.
    freq = positive.sum(axis=0) / n
    # 2. r(h) = max(1, phi(t / f(h))); a tag no image carries never matters, give it 1.
    with np.errstate(divide="ignore"):
        ratio = np.where(freq > 0, threshold / np.where(freq > 0, freq, 1.0), 1.0)
    tag_factor = np.maximum(1.0, np.sqrt(ratio) if phi == "sqrt" else ratio)
    # 3. r(I) = max over the tags of I of r(h); 1 for an image with no known positive.
    return np.where(positive, tag_factor[None, :], 1.0).max(axis=1, initial=1.0)


class RepeatFactorSampler(Sampler[int]):
    """Epoch sampler over dataset indices with stochastic rounding of repeat factors.

    Each epoch, image i appears floor(r_i) times plus once more with probability frac(r_i),
    so its expected count is exactly r_i; all factors 1 gives a plain shuffle. The epoch's
    draws and permutation come from a torch.Generator seeded by (seed, epoch) alone, so every
    process computes the same list and takes the disjoint slice `list[rank::num_replicas]`.
    The list is padded by wrapping around to a multiple of num_replicas (like
    `DistributedSampler`), so every process runs the same number of steps; at most
    num_replicas - 1 draws repeat. Call `set_epoch(epoch)` before iterating; no other state.
    """

    def __init__(
        self,
        repeat_factors: np.ndarray | torch.Tensor,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
    ) -> None:
        factors = torch.as_tensor(repeat_factors, dtype=torch.float64)
        if factors.ndim != 1 or len(factors) == 0:
            raise ValueError(f"repeat_factors must be a non-empty 1-d array, got {factors.shape}")
        if not bool((factors >= 1).all()):
            raise ValueError(f"repeat factors must be >= 1, got min {factors.min().item()}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, num_replicas={num_replicas})")
        self.repeat_factors = factors
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws the next iteration yields."""
        self.epoch = epoch

    def _generator(self, epoch: int) -> torch.Generator:
        # SeedSequence mixes (seed, epoch) so nearby pairs do not share streams
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """All draws of `epoch` for all processes, int64 `[sum of rounded factors]`, unpadded."""
        g = self._generator(epoch)
        whole = torch.floor(self.repeat_factors)
        frac = self.repeat_factors - whole
        counts = whole + (torch.rand(len(frac), generator=g, dtype=torch.float64) < frac)
        indices = torch.repeat_interleave(torch.arange(len(counts)), counts.long())
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        return indices

    def rank_indices(self, epoch: int) -> torch.Tensor:
        """This process's slice of `epoch_indices(epoch)`, padded to equal length per process."""
        indices = self.epoch_indices(epoch)
        padded = math.ceil(len(indices) / self.num_replicas) * self.num_replicas
        if padded > len(indices):
            reps = math.ceil(padded / len(indices))
            indices = indices.repeat(reps)[:padded]
        return indices[self.rank :: self.num_replicas]

    def expected_length(self) -> int:
        """Expected draws per process and epoch (for sizing a schedule before iterating)."""
        return math.ceil(float(self.repeat_factors.sum()) / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices(self.epoch).tolist())

    def __len__(self) -> int:
        return len(self.rank_indices(self.epoch))


class SeededSampler(Sampler[tuple[int, int]]):
    """Pairs every draw of a `RepeatFactorSampler` with its own augmentation seed.

    Yields `(index, seed)`; the seed is a function of (sampler seed, epoch, rank, position), so
    augmentations are reproducible whatever the number of loader workers and across resume.
    """

    def __init__(self, sampler: RepeatFactorSampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (forwarded to the wrapped sampler)."""
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        s = self.sampler
        indices = s.rank_indices(s.epoch).tolist()
        rng = np.random.default_rng([s.seed, s.epoch, s.rank, 0x5EED])
        seeds = rng.integers(0, 2**63 - 1, size=len(indices), dtype=np.int64).tolist()
        return iter(zip(indices, seeds, strict=True))

    def __len__(self) -> int:
        return len(self.sampler)
