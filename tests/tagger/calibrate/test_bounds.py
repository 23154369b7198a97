"""Lower confidence bounds of a precision: hand-worked values, the quantile-free test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from tagger.calibrate.bounds import bound_reaches, precision_lower_bound


def cp(tp: float, fp: float, level: float = 0.95) -> float:
    return float(precision_lower_bound(np.array([tp]), np.array([fp]), level)[0])


def test_clopper_pearson_hand_worked() -> None:
    # all right: P(X >= n | n, L) = L^n = 0.05, so L = 0.05 ** (1 / n)
    assert cp(10, 0) == pytest.approx(0.05**0.1, abs=1e-12)  # 0.741
    assert cp(5, 0) == pytest.approx(0.05**0.2, abs=1e-12)  # 0.549: 5 of 5 is far from 0.9
    # 9 of 10: L solves 10 L^9 (1 - L) + L^10 = 0.05
    lo = cp(9, 1)
    assert lo == pytest.approx(0.6058, abs=1e-4)
    assert 10 * lo**9 * (1 - lo) + lo**10 == pytest.approx(0.05, abs=1e-9)
    # 90 of 100: the same point estimate, a much tighter bound
    assert cp(90, 10) == pytest.approx(0.8363, abs=1e-4)
    assert binom.sf(89, 100, cp(90, 10)) == pytest.approx(0.05, abs=1e-9)
    # 29 of 29 is the fewest all-correct predictions whose bound reaches 0.9 at 95%
    assert cp(28, 0) < 0.9 <= cp(29, 0)
    assert cp(9, 1, level=0.99) < cp(9, 1, level=0.9) < 0.9
    assert cp(0, 4) == 0.0
    assert np.isnan(cp(0, 0))  # nothing predicted: no precision


def test_wilson_hand_worked() -> None:
    # z = 1.6449: (0.9 + z^2/20 - z sqrt(0.09/10 + z^2/400)) / (1 + z^2/10) = 0.6523
    got = precision_lower_bound(np.array([9.0]), np.array([1.0]), 0.95, "wilson")[0]
    assert got == pytest.approx(0.6523, abs=1e-4)
    assert precision_lower_bound(np.array([0.0]), np.array([5.0]), 0.95, "wilson")[0] == 0.0
    with pytest.raises(ValueError, match="unknown bound 'agresti'"):
        precision_lower_bound(np.array([1.0]), np.array([1.0]), 0.95, "agresti")


@pytest.mark.parametrize("method", ["clopper_pearson", "wilson"])
def test_bound_reaches_equals_the_quantile_test(method: str) -> None:
    rng = np.random.default_rng(0)
    tp = rng.integers(0, 60, 4000).astype(np.float64)
    fp = rng.integers(0, 12, 4000).astype(np.float64)
    target = rng.choice([0.5, 0.8, 0.9, 0.95], 4000)
    lower = precision_lower_bound(tp, fp, 0.95, method)
    expected = np.nan_to_num(lower, nan=-1.0) >= target
    np.testing.assert_array_equal(bound_reaches(tp, fp, target, 0.95, method), expected)
    point = np.divide(tp, tp + fp, out=np.ones_like(tp), where=tp + fp > 0)
    assert (np.nan_to_num(lower) <= point + 1e-12).all()
