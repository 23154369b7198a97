"""One-sided lower confidence bounds on a precision `tp / (tp + fp)`, vectorised.

A tag "meets" precision p only when the lower bound of its precision at the chosen threshold
reaches p: a threshold where a few positives happen to line up (5 of 5) looks perfect as a
point estimate and does not hold on new photos; its bound (0.55 at 95%) says so.

- "clopper_pearson" (exact, conservative): the lower end `B^-1(1 - level; tp, fp + 1)` of the
  beta quantile, 0 for tp = 0 (Clopper & Pearson 1934). Testing `bound >= p` needs no quantile:
  it holds iff `P(Binomial(tp + fp, p) >= tp) <= 1 - level`, i.e. the regularised incomplete
  beta `I_p(tp, fp + 1) <= 1 - level`, one cheap `betainc` per point.
- "wilson": the score interval's lower end (Wilson 1927), closed form, slightly less
  conservative for small counts.

`level` is one-sided: with level 0.95 the true precision is below the bound in at most 5% of
samples (the two-sided 90% interval's lower end).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import betainc
from scipy.stats import beta, norm

BoundName = Literal["clopper_pearson", "wilson"]
BOUNDS: tuple[str, ...] = ("clopper_pearson", "wilson")


def precision_lower_bound(
    tp: np.ndarray, fp: np.ndarray, level: float = 0.95, method: str = "clopper_pearson"
) -> np.ndarray:
    """Lower bound `[...]` of the precision from counts `tp, fp` (same shape, float or int).

    NaN where nothing is predicted (tp + fp = 0). Example: `precision_lower_bound(
    np.array([9.0]), np.array([1.0]))` is about 0.606 (9 right of 10 at 95%).
    """
    tp, fp = np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64)
    n = tp + fp
    out = np.full(np.broadcast(tp, fp).shape, np.nan)
    has = n > 0
    if method == "clopper_pearson":
        pos = has & (tp > 0)
        out[has & (tp == 0)] = 0.0
        out[pos] = beta.ppf(1.0 - level, tp[pos], fp[pos] + 1.0)
    elif method == "wilson":
        out[has] = _wilson_lower(tp[has], n[has], level)
    else:
        raise ValueError(f"unknown bound {method!r}; allowed: {list(BOUNDS)}")
    return out


def bound_reaches(
    tp: np.ndarray,
    fp: np.ndarray,
    target: np.ndarray | float,
    level: float = 0.95,
    method: str = "clopper_pearson",
) -> np.ndarray:
    """Bool `[...]`: the lower bound of `tp / (tp + fp)` is >= `target` (broadcast).

    Equal to `precision_lower_bound(tp, fp, level, method) >= target` but without quantiles;
    False where nothing is predicted. Only cells whose point precision reaches the target are
    evaluated (the bound never exceeds the point estimate).
    """
    tp, fp = np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), np.broadcast(tp, fp).shape)
    tp, fp = np.broadcast_to(tp, target.shape), np.broadcast_to(fp, target.shape)
    n = tp + fp
    out = np.zeros(target.shape, dtype=bool)
    cand = (tp > 0) & (tp >= target * n)  # point precision >= target
    if not cand.any():
        return out
    x, f, p = tp[cand], fp[cand], target[cand]
    if method == "clopper_pearson":
        out[cand] = betainc(x, f + 1.0, p) <= 1.0 - level
    elif method == "wilson":
        out[cand] = _wilson_lower(x, x + f, level) >= p
    else:
        raise ValueError(f"unknown bound {method!r}; allowed: {list(BOUNDS)}")
    return out


def _wilson_lower(tp: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    z = float(norm.ppf(level))
    p = tp / n
    z2n = z * z / n
    centre = p + z2n / 2
    spread = z * np.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return np.clip((centre - spread) / (1 + z2n), 0.0, 1.0)
