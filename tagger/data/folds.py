"""Multi-label stratified K-fold: every fold gets ~1/K of each tag's positives.

Iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the Stratification of Multi-Label
Data", ECML PKDD 2011), batched per label so it runs on sparse `[N, L]` matrices with millions of
rows: labels are visited rarest first; the unassigned rows carrying the label are shuffled and
shared among folds by water-filling each fold's remaining demand for that label (ties go to the
fold with the most room left); demands are then reduced by everything those rows carry. Rows
without labels fill the folds' remaining room. `iterstrat.MultilabelStratifiedKFold` assigns one
row at a time over a dense matrix: exact but slow at 1M rows and impossible at 1M x 1000 dense.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from label_system.taxonomy import Taxonomy

DEFAULT_FOLDS = 10


def assign_folds(
    labels: np.ndarray | sparse.spmatrix | sparse.sparray,
    k: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> np.ndarray:
    """Fold index (int16 [N], 0..k-1) per row of a binary `[N, L]` label matrix.

    Deterministic for (labels, k, seed). Fold sizes differ by at most a few rows.
    """
    if k < 2:
        raise ValueError(f"k={k}: need at least 2 folds")
    csr = _as_binary(labels)
    n, n_labels = csr.shape
    if n < k:
        raise ValueError(f"{n} rows cannot fill {k} folds; allowed: k <= number of rows")
    csc = csr.tocsc()
    rng = np.random.default_rng(seed)
    counts = np.diff(csc.indptr)
    demand = np.tile(counts / k, (k, 1))  # [k, L] positives each fold still wants
    room = np.full(k, n / k)  # rows each fold still wants
    fold = np.full(n, -1, dtype=np.int16)
    for label in np.lexsort((np.arange(n_labels), counts)):
        if counts[label] == 0:
            continue
        rows = csc.indices[csc.indptr[label] : csc.indptr[label + 1]]
        rows = rows[fold[rows] < 0]
        if len(rows) == 0:
            continue
        rows = rng.permutation(rows)
        share = water_fill(len(rows), demand[:, label], room)
        given = np.repeat(np.arange(k, dtype=np.int16), share)
        fold[rows] = given
        room -= share
        onehot = sparse.csr_array(
            (np.ones(len(rows)), (given, np.arange(len(rows)))), shape=(k, len(rows))
        )
        demand -= (onehot @ csr[rows]).toarray()
    rest = rng.permutation(np.flatnonzero(fold < 0))
    fold[rest] = np.repeat(np.arange(k, dtype=np.int16), water_fill(len(rest), room, room))
    return fold


def water_fill(m: int, need: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Share `m` items among bins (int [k]) so the remaining `need - share` is as level as can be.

    Continuous water level first, then the integer remainder goes to the largest fractional
    parts, ties to the larger `tie`.
    """
    k = len(need)
    order = np.argsort(-need, kind="stable")
    sorted_need = need[order]
    level = sorted_need[0] - m
    for j in range(1, k + 1):
        level = (sorted_need[:j].sum() - m) / j
        if j == k or level >= sorted_need[j]:
            break
    exact = np.maximum(need - level, 0.0)
    share = np.floor(exact).astype(np.int64)
    left = m - int(share.sum())
    if left > 0:  # never negative: the level stops above the smallest filled need
        best = np.lexsort((-tie, -(exact - share)))[:left]
        share[best] += 1
    return share


def stratification_matrix(
    manifest: pa.Table | pd.DataFrame, taxonomy: Taxonomy, *, by_source: bool = True
) -> sparse.csr_array:
    """Binary `[N, T (+ S)]` matrix of known-positive tags (and one column per source).

    Adding the source columns keeps each fold's mix of sources like the whole.
    """
    table = (
        manifest
        if isinstance(manifest, pa.Table)
        else pa.Table.from_pandas(manifest[["tags", "source"]], preserve_index=False)
    )
    tags = table.column("tags").combine_chunks()
    n = table.num_rows
    lengths = pc.fill_null(pc.list_value_length(tags), 0).to_numpy().astype(np.int64)
    found = pc.index_in(pc.list_flatten(tags), value_set=pa.array(taxonomy.tag_ids))
    if found.null_count:
        raise ValueError(f"manifest tags not in taxonomy {taxonomy.name!r}")
    codes = found.to_numpy().astype(np.int32)
    width = len(taxonomy)
    if not by_source:
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return _binary_csr(codes, indptr, (n, width))
    source_codes, names = pd.factorize(table.column("source").to_numpy(zero_copy_only=False))
    indptr = np.concatenate([[0], np.cumsum(lengths + 1)])
    last = indptr[1:] - 1  # each row's source column comes after its tags (sorted columns)
    is_tag = np.ones(indptr[-1], dtype=bool)
    is_tag[last] = False
    indices = np.empty(indptr[-1], dtype=np.int32)
    indices[is_tag] = codes
    indices[last] = width + source_codes
    return _binary_csr(indices, indptr, (n, width + len(names)))


def _binary_csr(
    indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]
) -> sparse.csr_array:
    """A 0/1 int8 CSR matrix (int8 keeps a million-row matrix small)."""
    data = np.ones(len(indices), dtype=np.int8)
    return sparse.csr_array((data, indices, indptr), shape=shape)


def _as_binary(labels: np.ndarray | sparse.spmatrix | sparse.sparray) -> sparse.csr_array:
    """`labels` as a 0/1 int8 CSR matrix (no copy when it already is one)."""
    csr = sparse.csr_array(labels)
    if csr.dtype != np.int8 or not (csr.data == 1).all():
        csr = sparse.csr_array(csr, dtype=np.int8, copy=True)
        csr.eliminate_zeros()
        csr.data[:] = 1
    return csr


def fold_imbalance(
    labels: np.ndarray | sparse.spmatrix | sparse.sparray, folds: np.ndarray, k: int
) -> np.ndarray:
    """Per label: max over folds of |positives in fold - positives / k|, in rows (float [L])."""
    csr = _as_binary(labels)
    onehot = sparse.csr_array(
        (np.ones(len(folds)), (folds.astype(np.int64), np.arange(len(folds)))),
        shape=(k, len(folds)),
    )
    per_fold = (onehot @ csr).toarray()  # [k, L]
    return np.abs(per_fold - per_fold.sum(axis=0) / k).max(axis=0)


def fold_sizes(folds: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Rows per fold (int [k])."""
    return np.bincount(np.asarray(folds, dtype=np.int64), minlength=k)
