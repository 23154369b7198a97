"""Ranked label issues: cleanlab per tag on known cells only."""

from __future__ import annotations

import numpy as np
import pytest
from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

import tagger.clean.issues as issues_module
from tagger.clean.issues import (
    IssueConfig,
    false_positive_rate,
    find_label_issues,
    flip_probability,
    positives_per_negative,
    tag_label_issues,
)

FILTER_ONLY = IssueConfig(min_flip_prob=None)


def noisy_problem(n: int = 240, t: int = 5, seed: int = 0) -> tuple[np.ndarray, ...]:
    """True labels, probabilities that follow them, and labels with ~10% of cells flipped."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, t)) < 0.3).astype(np.int64)
    probs = np.clip(0.75 * truth + 0.25 * rng.random((n, t)), 0, 1)
    flips = rng.random((n, t)) < 0.1
    labels = np.where(flips, 1 - truth, truth)
    return truth, probs, labels, flips


def as_mask(result, n: int, tags: list[str]) -> np.ndarray:
    mask = np.zeros((n, len(tags)), bool)
    for row in result.cells.itertuples():
        mask[int(row.image_id), tags.index(row.tag)] = True
    return mask


def test_all_known_equals_cleanlab_multilabel_per_class() -> None:
    _, probs, labels, flips = noisy_problem()
    n, t = labels.shape
    tags = [f"t{j}" for j in range(t)]
    reference = find_multilabel_issues_per_class(
        labels=[list(np.flatnonzero(r)) for r in labels], pred_probs=probs
    )
    result = find_label_issues(
        probs,
        labels,
        np.ones_like(labels, bool),
        [str(i) for i in range(n)],
        tags,
        IssueConfig(min_flip_prob=None),  # cleanlab's filter alone
    )
    mine = as_mask(result, n, tags)
    assert reference.sum() > 20  # the fixture has issues to find
    np.testing.assert_array_equal(mine, reference)
    assert (mine & flips).sum() / mine.sum() > 0.9  # flagged cells are mostly real flips


def test_unknown_cells_are_never_read_nor_flagged() -> None:
    _truth, probs, labels, _ = noisy_problem(seed=1)
    n, t = labels.shape
    rng = np.random.default_rng(5)
    known = rng.random((n, t)) < 0.6
    tags = [f"t{j}" for j in range(t)]
    ids = [str(i) for i in range(n)]
    # an unknown cell holds label 0 (how a full label list would read it) with a confident
    # positive probability: reading it as a negative would flag it as a missing positive
    probs_a = probs.copy()
    probs_a[~known] = 0.99
    labels_a = np.where(known, labels, 0)
    probs_b = probs.copy()
    probs_b[~known] = rng.random(int((~known).sum()))
    a = find_label_issues(probs_a, labels_a, known, ids, tags)
    b = find_label_issues(probs_b, np.where(known, labels, 1), known, ids, tags)
    flagged = as_mask(a, n, tags)
    assert not (flagged & ~known).any()
    # the same flags whatever the unknown cells hold
    np.testing.assert_array_equal(flagged, as_mask(b, n, tags))
    # and, with cleanlab's filter alone, the same as cleanlab on each tag's known rows alone
    filter_only = find_label_issues(probs_a, labels_a, known, ids, tags, FILTER_ONLY)
    flagged = as_mask(filter_only, n, tags)
    assert not (flagged & ~known).any() and len(filter_only.cells)
    for j in range(t):
        rows = np.flatnonzero(known[:, j])
        ref = find_multilabel_issues_per_class(
            labels=[[0] if y else [] for y in labels[rows, j]], pred_probs=probs[rows, j : j + 1]
        )
        np.testing.assert_array_equal(flagged[rows, j], ref[:, 0])
    # while masking nothing (reading unknown as negative) would flag the unknown cells
    c = find_label_issues(probs_a, labels_a, np.ones_like(known), ids, tags)
    assert (as_mask(c, n, tags) & ~known).sum() > 50


def test_posterior_flags_what_cleanlabs_count_leaves() -> None:
    # a common tag whose labelled positives score 0.95 (as the label context makes them):
    # cleanlab counts a labelled negative as confidently positive only from 0.95 on, so the
    # negative at 0.87 is left; under the noise priors it is a missed positive with P = 0.74
    probs = np.array([[0.95]] * 20 + [[0.05]] * 80 + [[0.87], [0.3]])
    labels = np.array([[1]] * 20 + [[0]] * 82)
    known = np.ones_like(labels, bool)
    ids, tags = [f"i{k}" for k in range(len(labels))], ["animal"]
    assert find_label_issues(probs, labels, known, ids, tags, FILTER_ONLY).cells.empty
    # the posterior reads calibrated scores only: uncalibrated (the default), nothing is added
    assert find_label_issues(probs, labels, known, ids, tags).cells.empty
    calibrated = np.ones_like(known)
    result = find_label_issues(probs, labels, known, ids, tags, calibrated=calibrated)
    [cell] = result.cells.itertuples()
    assert (cell.image_id, cell.kind, cell.found_by) == ("i100", "missing", "posterior")
    a = false_positive_rate(20, 102, IssueConfig())
    expected = flip_probability(np.array([0.87]), np.array([0]), 0.1, a)[0]
    assert cell.flip_prob == pytest.approx(expected, abs=1e-6) and 0.5 < cell.flip_prob < 0.9
    assert result.per_tag.iloc[0]["missing"] == 1
    # a higher bar leaves it to cleanlab again
    stricter = IssueConfig(min_flip_prob=0.9)
    assert find_label_issues(
        probs, labels, known, ids, tags, stricter, calibrated=calibrated
    ).cells.empty
    # and an uncalibrated cell is left to cleanlab, whatever its flip probability
    calibrated[100, 0] = False
    assert find_label_issues(probs, labels, known, ids, tags, calibrated=calibrated).cells.empty


def test_kinds_scores_and_ranks() -> None:
    probs = np.array([[0.95], [0.9], [0.05], [0.1], [0.92], [0.08], [0.2], [0.85]])
    labels = np.array([[1], [1], [0], [0], [0], [1], [0], [1]])
    known = np.ones_like(labels, bool)
    result = find_label_issues(probs, labels, known, list("abcdefgh"), ["dog"])
    cells = result.cells.set_index("image_id")
    assert set(cells.index) == {"e", "f"}
    assert cells.loc["e", "kind"] == "missing" and cells.loc["f", "kind"] == "wrong"
    assert cells.loc["e", "quality"] == pytest.approx(0.08, abs=1e-6)  # 1 - p for a negative
    assert cells.loc["f", "quality"] == pytest.approx(0.08, abs=1e-6)  # p for a positive
    assert list(result.cells["rank"]) == [1, 2]
    # equal self-confidence, but a missed positive is likelier than a wrong one (the priors):
    # a = 0.05 x 4 positives / 4 negatives; f: present = 0.03 / 0.85, flip = (1 - present) a / p
    assert list(result.cells["image_id"]) == ["e", "f"]
    assert cells.loc["e", "flip_prob"] > 0.99  # 0.92 > 1 - d: saturated
    assert cells.loc["f", "flip_prob"] == pytest.approx((1 - 0.03 / 0.85) * 0.05 / 0.08, abs=1e-5)
    tag = result.per_tag.iloc[0]
    assert (tag["known"], tag["positives"], tag["missing"], tag["wrong"]) == (8, 4, 1, 1)
    assert set(result.per_image["image_id"]) == {"e", "f"}


def test_numpy_backend_matches_cleanlab_confident_learning() -> None:
    rng = np.random.default_rng(3)
    for _ in range(25):
        n = int(rng.integers(10, 300))
        y = (rng.random(n) < rng.uniform(0.05, 0.7)).astype(np.int64)
        p = np.clip(y * rng.uniform(0.1, 0.8) + rng.random(n) * 0.6, 0, 1)
        flip = rng.random(n) < 0.1
        y = np.where(flip, 1 - y, y)
        a, qa = tag_label_issues(p, y, IssueConfig(filter_by="confident_learning"))
        b, qb = tag_label_issues(p, y, IssueConfig(filter_by="confident_learning", backend="numpy"))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(qa, qb)


def test_too_few_of_a_class_is_not_checked_and_empty_inputs() -> None:
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.7]])
    labels = np.array([[1, 0], [1, 0], [1, 1]])
    known = np.array([[True, False], [True, False], [True, False]])
    result = find_label_issues(probs, labels, known, ["a", "b", "c"], ["x", "y"])
    assert result.cells.empty and result.per_image.empty
    assert result.per_tag["checked"].tolist() == [False, False]
    assert result.per_tag["known"].tolist() == [3, 0]


def test_bad_shapes_and_numpy_filter_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        find_label_issues(
            np.zeros((2, 2)), np.zeros((2, 3)), np.ones((2, 2), bool), ["a", "b"], ["x", "y"]
        )
    with pytest.raises(ValueError, match="confident_learning"):
        IssueConfig(backend="numpy")


def test_flip_probability_hand_worked() -> None:
    # d = 0.1, a = 0.01, p = 0.5: present = 0.49 / 0.89 = 0.550562; P(label 1) = p, so
    # labelled 1: (1 - present) a / p = 0.0089888; labelled 0: present d / (1 - p) = 0.1101124
    got = flip_probability(np.array([0.5, 0.5]), np.array([1, 0]), 0.1, 0.01)
    np.testing.assert_allclose(got, [0.0089888, 0.1101124], atol=1e-6)


def test_flip_probability_properties() -> None:
    p = np.linspace(0.0, 1.0, 101)
    wrong = flip_probability(p, np.ones_like(p), 0.1, 0.01)
    missed = flip_probability(p, np.zeros_like(p), 0.1, 0.01)
    for flips in (wrong, missed):
        assert ((flips >= 0) & (flips <= 1)).all()
    assert (np.diff(wrong) <= 1e-12).all() and (np.diff(missed) >= -1e-12).all()
    # a rare tag's positive at 0.02 is less suspect than a negative the model puts at 0.9
    assert flip_probability(np.array([0.02]), np.array([1]), 0.1, 0.01)[0] < 0.5
    assert flip_probability(np.array([0.9]), np.array([0]), 0.1, 0.01)[0] > 0.5
    # a rate per tag broadcasts
    per_tag = flip_probability(np.full((2, 2), 0.5), np.ones((2, 2)), 0.1, np.array([0.01, 0.1]))
    assert per_tag[0, 0] < per_tag[0, 1] and (per_tag[0] == per_tag[1]).all()
    # symmetric noise: the two kinds mirror each other
    sym = flip_probability(np.array([0.3, 0.7]), np.array([1, 0]), 0.05, 0.05)
    assert sym[0] == pytest.approx(sym[1])


def test_false_positive_rate_mixes_a_tags_use_with_slips() -> None:
    by_use = IssueConfig(false_positive_share=0.05, false_positive_spread=0.0)
    # 5% of 10 positives wrong, spread over 100 negatives; a common tag gets a higher rate
    assert false_positive_rate(10, 110, by_use, overall=0.5) == pytest.approx(0.005)
    assert false_positive_rate(100, 200, by_use, overall=0.5) == pytest.approx(0.05)
    assert false_positive_rate(5, 5, by_use) == 0.25  # no negatives: bounded, never a division
    # slips land on any absent cell alike: 5% x the positives per negative over all tags
    slips = IssueConfig(false_positive_share=0.05, false_positive_spread=1.0)
    assert false_positive_rate(10, 110, slips, overall=0.2) == pytest.approx(0.01)
    assert false_positive_rate(100, 200, slips, overall=0.2) == pytest.approx(0.01)
    # between the two, a weighted mean; with no overall ratio the tag's own stands in
    both = IssueConfig(false_positive_share=0.05, false_positive_spread=0.5)
    assert false_positive_rate(10, 110, both, overall=0.2) == pytest.approx(0.0075)
    assert false_positive_rate(10, 110, both) == pytest.approx(0.005)
    assert IssueConfig().false_positive_spread == 0.0  # the default: wrong positives follow use
    with pytest.raises(ValueError, match="false_positive_spread"):
        IssueConfig(false_positive_spread=1.5)


def test_positives_per_negative_counts_known_cells_over_blocks(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    targets = (rng.random((50, 4)) < 0.3).astype(np.float32)
    known = rng.random((50, 4)) < 0.6
    expected = (targets[known] > 0.5).sum() / (targets[known] < 0.5).sum()
    assert positives_per_negative(targets, known) == pytest.approx(expected)
    monkeypatch.setattr(issues_module, "_COUNT_ROWS", 7)  # several blocks, a short last one
    assert positives_per_negative(targets, known) == pytest.approx(expected)
    targets[~known] = 1.0  # unknown cells count neither way
    assert positives_per_negative(targets, known) == pytest.approx(expected)


def test_slips_make_a_rare_tags_doubtful_positive_more_suspect() -> None:
    # `person` is positive on half its images, `kite` on 2 of 100; the model puts one kite
    # positive at 0.02. If wrong positives only follow a tag's use, a rare tag has almost none,
    # so that label is likely right; if slips land anywhere, a rare tag's few positives hold as
    # many slips as a common tag's, and the label is more suspect.
    n = 100
    labels = np.zeros((n, 2), np.int64)
    labels[:50, 0] = 1
    labels[:2, 1] = 1
    probs = np.where(labels == 1, 0.9, 0.02)
    probs[1, 1] = 0.02
    known, calibrated = np.ones_like(labels, bool), np.ones_like(labels, bool)
    ids, tags = [f"i{k}" for k in range(n)], ["person", "kite"]
    flip = {}
    for spread in (0.0, 0.5):
        config = IssueConfig(false_positive_spread=spread)
        cells = find_label_issues(probs, labels, known, ids, tags, config, calibrated=calibrated)
        cell = cells.cells.set_index(["image_id", "tag"]).loc[("i1", "kite")]
        a = false_positive_rate(2, n, config, overall=52 / 148)  # 52 positives, 148 negatives
        assert cell["flip_prob"] == pytest.approx(
            flip_probability(np.array([0.02]), np.array([1]), 0.1, a)[0], abs=1e-6
        )
        flip[spread] = cell["flip_prob"]
    assert flip[0.5] > flip[0.0]
