"""Per-tag ranking metrics over the known cells of a tag matrix: PR points, AP, mAP, P/R/F1.

Every function takes `probs [N, num_tags]` (scores, any real dtype), `targets [N, num_tags]`
(1 = positive; bool or float) and `known [N, num_tags]` (bool) and ignores cells where `known` is
False: unknown is not negative.

The precision-recall points of a tag are those of scikit-learn's `precision_recall_curve` on its
known cells: one point per distinct score `s`, counting the cells with `score >= s` (ties
collapse into one point). All tags are computed at once in blocks of columns: float16 scores by
one histogram per block (no sort), other dtypes by one sort per block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

DEFAULT_BLOCK_CELLS = 1 << 20  # cells (rows x tags) per block: bounds the working memory
HISTOGRAM_MIN_ROWS = 1 << 14  # below this many rows, sorting float16 beats a 65,536-bin histogram

_F16_BINS = 1 << 16
# value of every order-preserving float16 code (see _ordered_codes16), as float64
_F16_VALUES = np.where(
    np.arange(_F16_BINS) & 0x8000,
    (np.arange(_F16_BINS) ^ 0x8000).astype(np.uint16).view(np.float16),
    (0xFFFF - np.arange(_F16_BINS)).astype(np.uint16).view(np.float16),
).astype(np.float64)


@dataclass(frozen=True)
class CurvePoints:
    """Precision-recall points of a block of `c` tags, padded to `L` points per tag.

    Arrays are `[c, L]`, ordered by descending threshold along `L`; only `valid` entries are
    points. Point k of tag j counts the known cells with `score >= thresholds[j, k]`: `tp`
    positives and `fp` negatives (exact integers held as float64, like scikit-learn). These are
    scikit-learn's `precision_recall_curve` points in reverse, without its final
    (recall 0, precision 1) entry.
    """

    thresholds: np.ndarray  # [c, L] float64
    tp: np.ndarray  # [c, L] float64
    fp: np.ndarray  # [c, L] float64
    valid: np.ndarray  # [c, L] bool
    n_pos: np.ndarray  # [c] float64, known positives
    n_neg: np.ndarray  # [c] float64, known negatives

    def precision(self) -> np.ndarray:
        """`tp / (tp + fp)` `[c, L]` (0 where nothing is predicted, as scikit-learn)."""
        ps = self.tp + self.fp
        return np.divide(self.tp, ps, out=np.zeros_like(ps), where=ps != 0)

    def recall(self) -> np.ndarray:
        """`tp / n_pos` `[c, L]` (NaN for tags without known positives)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.tp / self.n_pos[:, None]

    def counts_at(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(tp, fp)` `[c]` of the rule `score >= thresholds[j]` (NaN threshold: nothing)."""
        above = self.valid & (self.thresholds >= thresholds[:, None])  # False for NaN
        tp = np.where(above, self.tp, 0.0).max(axis=1, initial=0.0)  # tp, fp grow along L
        fp = np.where(above, self.fp, 0.0).max(axis=1, initial=0.0)
        return tp, fp


def check_tag_arrays(probs: np.ndarray, targets: np.ndarray, known: np.ndarray) -> None:
    """Raise a ValueError naming the argument when shapes or dtypes do not fit `[N, T]`."""
    if probs.ndim != 2:
        raise ValueError(f"probs must be [N, num_tags]; got shape {probs.shape}")
    for name, arr in (("targets", targets), ("known", known)):
        if arr.shape != probs.shape:
            raise ValueError(f"{name} has shape {arr.shape}; probs has {probs.shape}")
    if known.dtype != np.bool_:
        raise ValueError(f"known must be a bool mask; got dtype {known.dtype}")
    if not (np.issubdtype(probs.dtype, np.floating) or np.issubdtype(probs.dtype, np.integer)):
        raise ValueError(f"probs must be real numbers; got dtype {probs.dtype}")


def iter_curve_blocks(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    *,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> Iterator[tuple[slice, CurvePoints]]:
    """PR points of all tags, one block of columns at a time: yields `(columns, points)`.

    Memory: a few arrays of `block_cells` elements (int64/float64) per block.
    """
    check_tag_arrays(probs, targets, known)
    n, t = probs.shape
    step = max(1, block_cells // max(n, 1))
    if probs.dtype == np.float16 and n >= HISTOGRAM_MIN_ROWS:
        step = min(step, max(1, block_cells // (2 * _F16_BINS)))  # bincount output per block
    for j0 in range(0, t, step):
        cols = slice(j0, min(t, j0 + step))
        yield cols, curve_points(probs[:, cols], targets[:, cols], known[:, cols])


def curve_points(probs: np.ndarray, targets: np.ndarray, known: np.ndarray) -> CurvePoints:
    """PR points of a block of tags: `probs, targets, known [N, c]` -> `CurvePoints` `[c, L]`."""
    scores = np.ascontiguousarray(probs.T)  # [c, N]; free for column-major (tag-major) input
    pos = np.ascontiguousarray(targets.T) != 0
    kn = np.ascontiguousarray(known.T)
    if scores.shape[1] == 0 or not kn.any():
        return _no_points(scores.shape[0])
    if scores.dtype == np.float16 and scores.shape[1] >= HISTOGRAM_MIN_ROWS:
        return _points_by_histogram(scores, pos, kn)
    if scores.dtype == np.float16:
        scores = scores.astype(np.float32)  # exact; few rows: sorting beats 65,536 bins
    return _points_by_sorting(scores, pos, kn)


def _no_points(c: int) -> CurvePoints:
    """A block without known cells: one invalid point per tag (keeps `L >= 1`)."""
    zeros = np.zeros((c, 1))
    return CurvePoints(zeros, zeros, zeros, np.zeros((c, 1), dtype=bool), np.zeros(c), np.zeros(c))


def _ordered_codes16(scores: np.ndarray) -> np.ndarray:
    """Float16 bits -> int64 codes whose order is the order of the values (-0.0 joins +0.0)."""
    u = scores.view(np.uint16).astype(np.int64)
    codes = np.where(u & 0x8000, 0xFFFF - u, u | 0x8000)
    codes[codes == 0x7FFF] = 0x8000  # -0.0 == +0.0
    return codes


def _points_by_histogram(scores: np.ndarray, pos: np.ndarray, kn: np.ndarray) -> CurvePoints:
    """Float16 scores `[c, N]`: counts per (tag, distinct value, label), one bincount per tag.

    Non-negative scores (probabilities) are binned by their raw bits, which sort like the
    values; any sign bit switches to order-preserving codes over all 65,536 patterns.
    """
    c = scores.shape[0]
    bits = scores.view(np.uint16)
    top = int(bits.max())
    if top < 0x8000:
        codes, n_codes = bits, top + 1
        code_values = np.arange(n_codes, dtype=np.uint16).view(np.float16).astype(np.float64)
    else:
        codes, n_codes, code_values = _ordered_codes16(scores), _F16_BINS, _F16_VALUES
    label = (kn.view(np.uint8) << 1) | pos.view(np.uint8)  # 2 known negative, 3 known positive
    counts = np.empty((c, n_codes, 2), dtype=np.int64)
    for j in range(c):  # one row at a time stays in cache; bincount dominates
        idx = np.left_shift(codes[j], 2, dtype=np.intp)
        idx |= label[j]
        counts[j] = np.bincount(idx, minlength=4 * n_codes).reshape(n_codes, 4)[:, 2:]
    counts = counts[:, ::-1]  # descending value
    used = np.flatnonzero(counts.any(axis=(0, 2)))
    values = code_values[::-1][used]
    if np.isnan(values).any():
        raise ValueError("probs contain NaN in known cells")
    neg, posc = counts[:, used, 0], counts[:, used, 1]
    tp = np.cumsum(posc, axis=1, dtype=np.float64)
    fp = np.cumsum(neg, axis=1, dtype=np.float64)
    return CurvePoints(
        thresholds=np.broadcast_to(values, tp.shape),
        tp=tp,
        fp=fp,
        valid=(posc + neg) > 0,
        n_pos=tp[:, -1].copy(),
        n_neg=fp[:, -1].copy(),
    )


def _points_by_sorting(scores: np.ndarray, pos: np.ndarray, kn: np.ndarray) -> CurvePoints:
    """Scores `[c, N]` of any other dtype: per tag, sort the known cells by descending score."""
    c = scores.shape[0]
    rows = [_row_points(scores[j][kn[j]], pos[j][kn[j]]) for j in range(c)]
    width = max(1, *(r[0].size for r in rows))
    thr, tp, fp = np.zeros((c, width)), np.zeros((c, width)), np.zeros((c, width))
    valid = np.zeros((c, width), dtype=bool)
    for j, (t, p, f) in enumerate(rows):
        thr[j, : t.size], tp[j, : t.size], fp[j, : t.size], valid[j, : t.size] = t, p, f, True
    n_pos = np.array([r[1][-1] if r[1].size else 0.0 for r in rows])
    n_known = kn.sum(axis=1)
    return CurvePoints(
        thresholds=thr, tp=tp, fp=fp, valid=valid, n_pos=n_pos, n_neg=n_known - n_pos
    )


def _ordered_codes32(bits: np.ndarray) -> np.ndarray:
    """Float32 bits -> uint64 codes whose order is the order of the values (-0.0 joins +0.0)."""
    u = bits.astype(np.uint64)
    codes = np.where(u & 0x80000000, 0xFFFFFFFF - u, u | 0x80000000)
    codes[codes == 0x7FFFFFFF] = 0x80000000
    return codes


def _decode_codes32(codes: np.ndarray) -> np.ndarray:
    """Inverse of `_ordered_codes32`: uint32 float bits."""
    return np.where(codes & 0x80000000, codes ^ 0x80000000, 0xFFFFFFFF - codes).astype(np.uint32)


def _row_points(values: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, ...]:
    """One tag's known cells `[n]` -> `(thresholds, tp, fp)` at its distinct scores, descending.

    Float32 sorts one uint64 key per cell (order-preserving value bits, label bit); other
    dtypes argsort as float64. A run of equal scores is one point, at its last cell.
    """
    if values.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    if values.dtype == np.float32:
        return _row_points32(values, pos)
    v = values.astype(np.float64, copy=False)
    order = np.argsort(-v, kind="stable")
    v, labels = v[order], pos[order]
    last = np.append(v[:-1] != v[1:], True)
    thresholds = v[last]
    _check_no_nan(thresholds)
    ends = np.flatnonzero(last)
    tp = np.cumsum(labels, dtype=np.int64)[ends].astype(np.float64)
    return thresholds, tp, ends + 1.0 - tp


def _row_points32(values: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, ...]:
    """Float32: sort one uint64 key per cell (order-preserving value bits << 1 | label).

    Works in ascending order (contiguous passes); the point at a run of equal values counts
    every cell from the run's start upwards; the few points are reversed at the end.
    """
    n = values.size
    bits = values.view(np.uint32)
    nonneg = int(bits.max()) < 0x80000000  # probabilities: raw bits sort like the values
    keys = bits.astype(np.uint64) if nonneg else _ordered_codes32(bits)
    keys <<= 1
    keys |= pos
    keys.sort()
    first = np.ones(n, dtype=bool)
    first[1:] = (keys[1:] ^ keys[:-1]) > 1  # the value bits differ, not just the label
    starts = np.flatnonzero(first)
    labels = keys & 1
    cpos = np.cumsum(labels)
    before = (cpos[starts] - labels[starts]).astype(np.float64)  # positives below each run
    tp = (float(cpos[-1]) - before)[::-1]
    fp = (n - starts)[::-1] - tp
    cut = keys[starts] >> 1
    cut32 = cut.astype(np.uint32) if nonneg else _decode_codes32(cut)
    thresholds = cut32.view(np.float32).astype(np.float64)[::-1]
    _check_no_nan(thresholds)
    return thresholds, tp, fp


def _check_no_nan(thresholds: np.ndarray) -> None:
    if np.isnan(thresholds[0]) or np.isnan(thresholds[-1]):  # NaN sorts to an end
        raise ValueError("probs contain NaN in known cells")


def average_precision(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    *,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> np.ndarray:
    """Per-tag AP `[T]` on known cells (scikit-learn's `average_precision_score`), NaN without
    known positives.

    AP = sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, highest first.
    """
    out = np.full(probs.shape[1], np.nan)
    for cols, pts in iter_curve_blocks(probs, targets, known, block_cells=block_cells):
        out[cols] = points_average_precision(pts)
    return out


def points_average_precision(pts: CurvePoints) -> np.ndarray:
    """AP `[c]` of a block's points; NaN for tags without known positives."""
    with np.errstate(invalid="ignore"):
        recall = np.where(pts.valid, pts.recall(), 0.0)
    # recall of the previous valid point: running max (recall never decreases along L)
    prev = np.maximum.accumulate(recall, axis=1)
    prev = np.concatenate([np.zeros((prev.shape[0], 1)), prev[:, :-1]], axis=1)
    gain = np.where(pts.valid, (recall - prev) * pts.precision(), 0.0)
    return np.where(pts.n_pos > 0, np.maximum(gain.sum(axis=1), 0.0), np.nan)


def mean_average_precision(ap: np.ndarray) -> float:
    """Mean of per-tag AP over tags with known positives (NaN entries); NaN when none."""
    finite = ap[~np.isnan(ap)]
    return float(finite.mean()) if finite.size else float("nan")


def tag_support(targets: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Known positives and known negatives per tag, `([T], [T])` int64."""
    if targets.shape != known.shape:
        raise ValueError(f"targets has shape {targets.shape}; known has {known.shape}")
    pos = ((targets != 0) & known).sum(axis=0)
    return pos, known.sum(axis=0) - pos


@dataclass(frozen=True)
class ThresholdScores:
    """Per-tag counts and scores of the rule `score >= threshold` on known cells, all `[T]`.

    A NaN threshold (disabled tag) predicts nothing: precision NaN, recall 0. Precision is NaN
    when nothing is predicted; recall NaN without known positives.
    """

    tp: np.ndarray
    fp: np.ndarray
    n_pos: np.ndarray
    n_neg: np.ndarray

    @property
    def precision(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.tp / self.n_pos

    @property
    def f1(self) -> np.ndarray:
        """2 tp / (2 tp + fp + fn); NaN without known positives."""
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = 2 * self.tp / (self.tp + self.fp + self.n_pos)
        return np.where(self.n_pos > 0, f1, np.nan)


def scores_at_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    thresholds: np.ndarray,
    *,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> ThresholdScores:
    """Precision, recall, F1 and counts per tag at `thresholds [T]` (`score >= threshold`)."""
    check_tag_arrays(probs, targets, known)
    if thresholds.shape != (probs.shape[1],):
        raise ValueError(f"thresholds has shape {thresholds.shape}; expected ({probs.shape[1]},)")
    n, t = probs.shape
    tp, fp = np.zeros(t), np.zeros(t)
    step = max(1, block_cells // max(n, 1))
    for j0 in range(0, t, step):
        cols = slice(j0, min(t, j0 + step))
        kn = known[:, cols]
        hit = (probs[:, cols] >= thresholds[cols]) & kn  # False where threshold is NaN
        pos = targets[:, cols] != 0
        tp[cols] = (hit & pos).sum(axis=0)
        fp[cols] = hit.sum(axis=0) - tp[cols]
    n_pos, n_neg = tag_support(targets, known)
    return ThresholdScores(tp=tp, fp=fp, n_pos=n_pos.astype(np.float64), n_neg=n_neg.astype(float))


def pr_curve(
    scores: np.ndarray, targets: np.ndarray, known: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tag's `(precision, recall, thresholds)` on known cells, highest threshold first.

    `scores, targets, known [N]`; the points of `precision_recall_curve` (for plots).
    """
    pts = curve_points(scores[:, None], targets[:, None], known[:, None])
    keep = pts.valid[0]
    return pts.precision()[0, keep], pts.recall()[0, keep], pts.thresholds[0, keep]
