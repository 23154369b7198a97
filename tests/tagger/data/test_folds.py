"""Multi-label stratified folds: determinism, balance, rare labels, water filling."""

from __future__ import annotations

import numpy as np
import pytest
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from tagger.data.assembly import assemble
from tagger.data.folds import (
    assign_folds,
    fold_imbalance,
    fold_sizes,
    stratification_matrix,
    water_fill,
)
from tests.tagger.assembly_fixtures import source, tiny_mappings, tiny_taxonomy


def long_tail_labels(n: int = 3000, n_labels: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = 0.3 / np.arange(1, n_labels + 1) ** 1.2
    return rng.random((n, n_labels)) < rates


def test_water_fill_golden_values():
    assert water_fill(4, np.array([3.0, 1.0, 0.0]), np.zeros(3)).tolist() == [3, 1, 0]
    # equal needs: the remainder goes to the bins with most room (tie)
    assert water_fill(2, np.ones(3), np.array([0.0, 5.0, 1.0])).tolist() == [0, 1, 1]
    # a bin that already got too much (negative need) gets nothing
    assert water_fill(3, np.array([-2.0, 2.0, 2.0]), np.zeros(3)).sum() == 3
    assert water_fill(3, np.array([-2.0, 2.0, 2.0]), np.zeros(3))[0] == 0
    assert water_fill(0, np.array([1.0, 2.0]), np.zeros(2)).tolist() == [0, 0]


def test_deterministic_for_a_seed_and_balanced():
    labels = long_tail_labels()
    a, b = assign_folds(labels, 10, seed=7), assign_folds(labels, 10, seed=7)
    assert a.dtype == np.int16 and (a == b).all()
    assert (a != assign_folds(labels, 10, seed=8)).any()
    sizes = fold_sizes(a, 10)
    assert sizes.sum() == len(labels) and sizes.max() - sizes.min() <= 5


def test_rare_label_spread_one_per_fold_and_unlabelled_rows_assigned():
    labels = np.zeros((50, 2), dtype=bool)
    labels[:5, 0] = True  # 5 positives, 5 folds -> exactly one each
    labels[10:30, 1] = True
    folds = assign_folds(labels, 5, seed=0)
    assert sorted(folds[:5].tolist()) == [0, 1, 2, 3, 4]
    assert (np.bincount(folds[10:30], minlength=5) == 4).all()
    assert (folds >= 0).all() and (fold_sizes(folds, 5) == 10).all()


def test_stratification_beats_random_and_matches_iterstrat():
    labels = long_tail_labels()
    ours = fold_imbalance(labels, assign_folds(labels, 10, seed=0), 10)
    rng = np.random.default_rng(0)
    random = fold_imbalance(labels, rng.integers(0, 10, len(labels)).astype(np.int16), 10)
    reference = np.zeros(len(labels), dtype=np.int16)
    splitter = MultilabelStratifiedKFold(n_splits=10, shuffle=True, random_state=0)
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels.astype(int))):
        reference[test] = i
    theirs = fold_imbalance(labels, reference, 10)
    assert ours.mean() < 0.5 * random.mean()
    assert ours.mean() < 1.5 * theirs.mean()


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(np.zeros((5, 1)), 1)
    with pytest.raises(ValueError, match="3 rows cannot fill 10 folds"):
        assign_folds(np.zeros((3, 1)), 10)


def test_stratification_matrix_from_manifest():
    tax = tiny_taxonomy()
    a = source("oi", {"a": "/x/a", "b": "/x/b"}, [("a", "openimages", "/m/dog", 1)])
    c = source("coco", {"c": "/x/c"}, [("c", "coco", "car", 1)])
    manifest = assemble([a, c], tax, tiny_mappings(), hashing=False).manifest
    m = stratification_matrix(manifest, tax).toarray()
    assert m.shape == (3, len(tax) + 2)
    assert m[0, tax.index("dog")] == 1 and m[0, tax.index("animal")] == 1
    assert m[1, : len(tax)].sum() == 0
    assert m[:, len(tax)].tolist() == [1, 1, 0] and m[:, len(tax) + 1].tolist() == [0, 0, 1]
    same = stratification_matrix(manifest.to_pandas(), tax, by_source=False).toarray()
    assert (same == m[:, : len(tax)]).all()
