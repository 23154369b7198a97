"""Per-tag metrics against scikit-learn, on known cells only, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from tagger import metrics as M


def _random_tags(rng: np.random.Generator, n: int, t: int, dtype: type) -> tuple[np.ndarray, ...]:
    """Scores rounded to 2 decimals (many ties), ~30% known-unknown cells, a tag with no known."""
    targets = (rng.random((n, t)) < 0.3).astype(np.float32)
    probs = np.round(rng.random((n, t)) * 0.6 + 0.3 * targets, 2).astype(dtype)
    known = rng.random((n, t)) < 0.7
    known[:, -1] = False
    return probs, targets, known


# float16 at 20,000 rows takes the histogram path, below it the sort path
@pytest.mark.parametrize(
    ("dtype", "n"),
    [(np.float16, 60), (np.float16, 20_000), (np.float32, 300), (np.float64, 300)],
)
def test_average_precision_equals_sklearn(dtype: type, n: int) -> None:
    rng = np.random.default_rng(0)
    probs, targets, known = _random_tags(rng, n, 6, dtype)
    probs[:, 2] = -probs[:, 2]  # negative scores (logits) order correctly too
    ap = M.average_precision(probs, targets, known, block_cells=2 * n)  # several blocks
    for j in range(5):
        m = known[:, j]
        ref = average_precision_score(targets[m, j], probs[m, j])
        assert ap[j] == pytest.approx(ref, abs=1e-12)
        p, r, thr = precision_recall_curve(targets[m, j], probs[m, j])
        pp, rr, tt = M.pr_curve(probs[:, j], targets[:, j], known[:, j])
        np.testing.assert_array_equal(pp, p[:-1][::-1])
        np.testing.assert_array_equal(rr, r[:-1][::-1])
        np.testing.assert_array_equal(tt, thr[::-1].astype(np.float64))
    assert np.isnan(ap[-1])  # no known cells


def test_unknown_cells_are_ignored_not_negative() -> None:
    # hand-worked: scores .9 (pos), .8 (unknown neg), .7 (pos), .6 (neg)
    probs = np.array([[0.9], [0.8], [0.7], [0.6]], dtype=np.float32)
    targets = np.array([[1], [0], [1], [0]], dtype=np.float32)
    known = np.array([[True], [False], [True], [True]])
    assert M.average_precision(probs, targets, known)[0] == pytest.approx(1.0)
    all_known = np.ones_like(known)
    # with the .8 negative known: AP = 1/2 * 1 + 1/2 * 2/3
    assert M.average_precision(probs, targets, all_known)[0] == pytest.approx(0.5 + 1 / 3)


def test_ties_collapse_into_one_point() -> None:
    probs = np.array([[0.5], [0.5], [0.5], [0.2]], dtype=np.float32)
    targets = np.array([[1], [0], [1], [1]], dtype=np.float32)
    p, r, thr = M.pr_curve(probs[:, 0], targets[:, 0], np.ones(4, dtype=bool))
    np.testing.assert_array_equal(thr, np.array([0.5, 0.2], dtype=np.float32))
    np.testing.assert_allclose(p, [2 / 3, 3 / 4])
    np.testing.assert_allclose(r, [2 / 3, 1.0])


def test_mean_average_precision_skips_tags_without_positives() -> None:
    assert M.mean_average_precision(np.array([0.5, np.nan, 1.0])) == pytest.approx(0.75)
    assert np.isnan(M.mean_average_precision(np.array([np.nan])))


def test_scores_at_thresholds_hand_worked() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.2], [0.4, 0.3], [0.2, 0.9]], dtype=np.float32)
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=np.float32)
    known = np.array([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=bool)
    s = M.scores_at_thresholds(probs, targets, known, np.array([0.5, np.nan], dtype=np.float32))
    np.testing.assert_array_equal(s.tp, [1, 0])
    np.testing.assert_array_equal(s.fp, [1, 0])
    np.testing.assert_array_equal(s.n_pos, [2, 2])
    np.testing.assert_array_equal(s.n_neg, [2, 1])
    assert s.precision[0] == pytest.approx(0.5) and np.isnan(s.precision[1])
    np.testing.assert_allclose(s.recall, [0.5, 0.0])
    np.testing.assert_allclose(s.f1, [0.5, 0.0])


def test_support_and_empty_inputs() -> None:
    targets = np.array([[1, 0], [0, 0]], dtype=np.float32)
    known = np.array([[1, 0], [1, 0]], dtype=bool)
    pos, neg = M.tag_support(targets, known)
    np.testing.assert_array_equal(pos, [1, 0])
    np.testing.assert_array_equal(neg, [1, 0])
    empty = np.zeros((0, 3), dtype=np.float32)
    ap = M.average_precision(empty, empty, np.zeros((0, 3), dtype=bool))
    assert ap.shape == (3,) and np.isnan(ap).all()


def test_bad_inputs_raise() -> None:
    probs = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="known has shape"):
        M.average_precision(probs, probs, np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="bool mask"):
        M.average_precision(probs, probs, np.zeros((3, 2)))
    probs[1, 0] = np.nan
    for dtype in (np.float16, np.float32, np.float64):
        with pytest.raises(ValueError, match="NaN"):
            M.average_precision(probs.astype(dtype), probs, np.ones((3, 2), dtype=bool))
