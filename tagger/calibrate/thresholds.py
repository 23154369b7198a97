"""Per-tag decision thresholds chosen on precision-recall curves of held-out predictions.

A tag is shown when `score >= threshold[tag]`. Each tag follows a policy (defaults in
`CalibrationConfig`, overrides per category or per tag):

- "precision": reach `target_precision` with the highest recall; with `bound` set (default
  a one-sided 95% Clopper-Pearson bound, `tagger.calibrate.bounds`) the *lower confidence
  bound* of the precision must reach the target, not just the point estimate, so a threshold
  chosen on a handful of positives is not called good;
- "recall": reach `target_recall` with the highest precision;
- "f1": the best F1.

Candidate thresholds are the distinct scores of the tag's known cells, exactly the points of
scikit-learn's `precision_recall_curve` (`calibrate_tag_reference` is that slow per-tag
reference). A tag with too few known positives or negatives, or whose target is unreachable, is
never silently given a number: it takes the first step of its `fallback` chain that applies
(a calibrated ancestor's threshold, the default threshold, or disabled = NaN) and its report row
says why (`status`, `reason`).

Beside its own policy every tag is reported against the "meets standard" view (`standard`:
e.g. precision >= 0.9, judged by the same bound, with recall >= 0.5 at some threshold).

Thresholds must come from predictions on images the model did not train on: use
`calibrate_from_folds`, which refuses folds the model was trained on, ideally on cross-fitted
out-of-fold predictions of every labelled image (`tagger.train.crossfit`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from label_system.taxonomy import Taxonomy
from tagger.calibrate.bounds import bound_reaches, precision_lower_bound
from tagger.metrics import (
    DEFAULT_BLOCK_CELLS,
    CurvePoints,
    check_tag_arrays,
    iter_curve_blocks,
    points_average_precision,
    scores_at_thresholds,
)

PolicyName = Literal["precision", "recall", "f1"]
FallbackName = Literal["parent", "default", "disabled"]
BoundChoice = Literal["none", "clopper_pearson", "wilson"]
POLICIES: tuple[str, ...] = ("precision", "recall", "f1")
STATUSES = ("ok", "fallback_parent", "fallback_default", "disabled")
REPORT_COLUMNS = [
    "tag", "category", "policy", "target", "threshold", "status", "reason", "meets_target",
    "precision", "recall", "f1", "support_pos", "support_neg", "ap",
    "precision_low", "precision_high",
    "precision_bound", "target_reachable", "standard_recall", "meets_standard",
]  # fmt: skip
THRESHOLDS_FORMAT = "album-tagger-thresholds"
THRESHOLDS_VERSION = 1


class PolicyOverride(BaseModel):
    """Fields that a category or a tag overrides; None = inherit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyName | None = None
    target_precision: float | None = Field(default=None, gt=0.0, le=1.0)
    target_recall: float | None = Field(default=None, gt=0.0, le=1.0)
    min_positives: int | None = Field(default=None, ge=1)
    min_negatives: int | None = Field(default=None, ge=0)
    fallback: tuple[FallbackName, ...] | None = None
    default_threshold: float | None = None

    @field_validator("fallback")
    @classmethod
    def _chain_ends(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else _check_chain(v)


class StandardView(BaseModel):
    """The "meets standard" view reported for every tag: some threshold reaches `precision`
    (its lower bound, when the config has one) with recall >= `recall`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: float = Field(default=0.9, gt=0.0, le=1.0)
    recall: float = Field(default=0.5, gt=0.0, le=1.0)


class CalibrationConfig(BaseModel):
    """How thresholds are chosen. Overrides: `tags` (by tag id) beat `categories` beat defaults.

    fallback: steps tried in order for a tag that cannot be calibrated; it must end with a step
    that always applies ("default" or "disabled"). bootstrap_samples > 0 adds a percentile
    interval (`bootstrap_level`) for the precision of the chosen threshold.
    bound: how "precision" policies judge a threshold: "clopper_pearson" or "wilson" = its
    one-sided lower confidence bound at `level` must reach the target; "none" = the point
    estimate (the report still shows the Clopper-Pearson bound). Thresholds files without this
    field were chosen by the point estimate and read as "none".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyName = "precision"
    target_precision: float = Field(default=0.9, gt=0.0, le=1.0)
    target_recall: float = Field(default=0.9, gt=0.0, le=1.0)
    min_positives: int = Field(default=10, ge=1)
    min_negatives: int = Field(default=10, ge=0)
    fallback: tuple[FallbackName, ...] = ("parent", "default")
    default_threshold: float = 0.5
    bootstrap_samples: int = Field(default=0, ge=0)
    bootstrap_level: float = Field(default=0.9, gt=0.0, lt=1.0)
    bound: BoundChoice = "clopper_pearson"
    level: float = Field(default=0.95, ge=0.5, lt=1.0)
    standard: StandardView = StandardView()
    categories: dict[str, PolicyOverride] = Field(default_factory=dict)
    tags: dict[str, PolicyOverride] = Field(default_factory=dict)

    @field_validator("fallback")
    @classmethod
    def _chain_ends(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_chain(v)


def _check_chain(chain: tuple[str, ...]) -> tuple[str, ...]:
    if not chain or chain[-1] not in ("default", "disabled"):
        raise ValueError(
            f"fallback {list(chain)} must end with 'default' or 'disabled' (a step that always "
            "applies), e.g. ['parent', 'default']"
        )
    return chain


def load_calibration_config(path: str | Path) -> CalibrationConfig:
    """Read a `CalibrationConfig` from YAML; errors name the file and the field."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        return CalibrationConfig.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path}: invalid calibration config:\n{e}") from None


@dataclass(frozen=True)
class TagPolicies:
    """The config resolved for every tag, in taxonomy column order (lists and arrays `[T]`)."""

    policy: list[str]
    target: np.ndarray  # float64; NaN for "f1"
    min_positives: np.ndarray  # int64
    min_negatives: np.ndarray  # int64
    fallback: list[tuple[str, ...]]
    default_threshold: np.ndarray  # float64

    def policy_array(self) -> np.ndarray:
        """The policies as an object array `[T]`."""
        return np.array(self.policy, dtype=object)


def resolve_policies(config: CalibrationConfig, taxonomy: Taxonomy) -> TagPolicies:
    """Apply tag and category overrides; unknown tag or category keys raise a ValueError."""
    bad_tags = sorted(set(config.tags) - set(taxonomy.tag_ids))
    if bad_tags:
        raise ValueError(
            f"calibration config tags: unknown tag ids {bad_tags} in taxonomy {taxonomy.name!r}"
        )
    bad_cats = sorted(set(config.categories) - set(taxonomy.categories))
    if bad_cats:
        raise ValueError(
            f"calibration config categories: unknown {bad_cats}; allowed: "
            f"{sorted(taxonomy.categories)}"
        )
    fields = list(PolicyOverride.model_fields)
    base = config.model_dump(include=set(fields))
    tags = {k: v.model_dump() for k, v in config.tags.items()}
    cats = {k: v.model_dump() for k, v in config.categories.items()}
    rows: list[dict[str, Any]] = []
    for tag in taxonomy.tag_ids:
        levels = (tags.get(tag, {}), cats.get(taxonomy.category_of(tag), {}), base)
        rows.append({f: next(lv[f] for lv in levels if lv.get(f) is not None) for f in fields})
    policy = [r["policy"] for r in rows]
    target = [
        r["target_precision"]
        if p == "precision"
        else r["target_recall"]
        if p == "recall"
        else math.nan
        for r, p in zip(rows, policy, strict=True)
    ]
    return TagPolicies(
        policy=policy,
        target=np.array(target, dtype=np.float64),
        min_positives=np.array([r["min_positives"] for r in rows], dtype=np.int64),
        min_negatives=np.array([r["min_negatives"] for r in rows], dtype=np.int64),
        fallback=[tuple(r["fallback"]) for r in rows],
        default_threshold=np.array([r["default_threshold"] for r in rows], dtype=np.float64),
    )


@dataclass(frozen=True)
class Calibration:
    """Chosen thresholds `[T]` float32 (NaN = disabled) and the per-tag report (REPORT_COLUMNS)."""

    thresholds: np.ndarray
    report: pd.DataFrame
    config: CalibrationConfig
    # how the scores were obtained and judged, e.g. {"scores": "crossfit", "k": 5,
    # "calib_folds": [...], "bound": "clopper_pearson", "level": 0.95}; {} when not recorded
    method: dict[str, Any] = field(default_factory=dict)


def calibrate_from_folds(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    folds: np.ndarray,
    calib_folds: Collection[int],
    *,
    train_folds: Collection[int],
    taxonomy: Taxonomy,
    config: CalibrationConfig | None = None,
    rng: np.random.Generator | None = None,
) -> Calibration:
    """Calibrate on the rows whose fold is in `calib_folds` (`folds [N]`).

    `train_folds` are the folds the model that produced `probs` was trained on; a calibration
    fold among them raises a ValueError. Pass `train_folds=()` only for out-of-fold
    predictions, where each row was scored by a model that never saw its fold.
    """
    rows = heldout_rows(folds, calib_folds, train_folds, role="calibration")
    return calibrate_thresholds(probs[rows], targets[rows], known[rows], taxonomy, config, rng=rng)


def heldout_rows(
    folds: np.ndarray, wanted: Collection[int], train_folds: Collection[int], *, role: str
) -> np.ndarray:
    """Bool mask `[N]` of rows in `wanted` folds; refuses training folds and absent folds."""
    wanted_set, train_set = {int(f) for f in wanted}, {int(f) for f in train_folds}
    if not wanted_set:
        raise ValueError(f"{role} folds: none given")
    if wanted_set & train_set:
        raise ValueError(
            f"{role} folds {sorted(wanted_set)} include folds the model was trained on "
            f"{sorted(wanted_set & train_set)}: thresholds must come from held-out predictions"
        )
    present = {int(f) for f in np.unique(folds)}
    if wanted_set - present:
        raise ValueError(
            f"{role} folds {sorted(wanted_set - present)} have no rows; folds "
            f"present: {sorted(present)}"
        )
    return np.isin(folds, sorted(wanted_set))


def calibrate_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    taxonomy: Taxonomy,
    config: CalibrationConfig | None = None,
    *,
    rng: np.random.Generator | None = None,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> Calibration:
    """Thresholds for all tags at once from held-out `probs, targets, known [N, T]`.

    The caller guarantees `probs` are held out (see `calibrate_from_folds`). `rng` seeds the
    bootstrap (required when `config.bootstrap_samples > 0`).
    """
    config = config or CalibrationConfig()
    check_tag_arrays(probs, targets, known)
    if probs.shape[1] != len(taxonomy):
        raise ValueError(
            f"probs has {probs.shape[1]} tag columns; taxonomy {taxonomy.name!r} "
            f"has {len(taxonomy)}"
        )
    pol = resolve_policies(config, taxonomy)
    t = probs.shape[1]
    chosen = np.full(t, np.nan)
    tp, fp, n_pos, n_neg, ap = (np.zeros(t) for _ in range(5))
    reachable = np.zeros(t, dtype=bool)
    standard_tp = np.zeros(t)
    codes = np.array([POLICIES.index(p) for p in pol.policy])
    std_code = np.full(t, POLICIES.index("precision"))
    std_target = np.full(t, config.standard.precision)
    for cols, pts in iter_curve_blocks(probs, targets, known, block_cells=block_cells):
        idx, reach = choose_points(
            pts, codes[cols], pol.target[cols], bound=config.bound, level=config.level
        )
        rows = np.arange(idx.size)
        chosen[cols] = np.where(reach, pts.thresholds[rows, idx], np.nan)
        tp[cols], fp[cols] = pts.tp[rows, idx], pts.fp[rows, idx]
        n_pos[cols], n_neg[cols], reachable[cols] = pts.n_pos, pts.n_neg, reach
        ap[cols] = points_average_precision(pts)
        s_idx, s_reach = choose_points(
            pts, std_code[cols], std_target[cols], bound=config.bound, level=config.level
        )
        standard_tp[cols] = np.where(s_reach, pts.tp[rows, s_idx], 0.0)
    status, reason = _initial_status(pol, n_pos, n_neg, reachable, _bound_note(config))
    thresholds = _to_float32_floor(np.where(status == "ok", chosen, np.nan))
    thresholds, status, reason = _apply_fallbacks(thresholds, status, reason, pol, taxonomy)
    redo = np.flatnonzero(status != "ok")
    if redo.size:  # counts at fallback thresholds: one more pass over those columns only
        s = scores_at_thresholds(
            probs[:, redo],
            targets[:, redo],
            known[:, redo],
            thresholds[redo],
            block_cells=block_cells,
        )
        tp[redo], fp[redo] = s.tp, s.fp
    low, high = np.full(t, np.nan), np.full(t, np.nan)
    if config.bootstrap_samples:
        if rng is None:
            raise ValueError("bootstrap_samples > 0 needs a seeded rng (np.random.Generator)")
        low, high = bootstrap_precision(
            tp,
            fp,
            n_pos,
            n_neg,
            thresholds,
            rng=rng,
            samples=config.bootstrap_samples,
            level=config.bootstrap_level,
        )
    report = _report(taxonomy, pol, thresholds, status, reason, tp, fp, n_pos, n_neg, ap, low, high)
    report["precision_bound"] = precision_lower_bound(
        tp, fp, config.level, "clopper_pearson" if config.bound == "none" else config.bound
    )
    report["target_reachable"] = reachable & (pol.policy_array() != "f1")
    with np.errstate(divide="ignore", invalid="ignore"):
        report["standard_recall"] = np.where(n_pos > 0, standard_tp / n_pos, np.nan)
    enough = (n_pos >= pol.min_positives) & (n_neg >= pol.min_negatives)
    report["meets_standard"] = enough & (
        np.nan_to_num(report["standard_recall"].to_numpy(), nan=-1.0) >= config.standard.recall
    )
    return Calibration(thresholds=thresholds, report=report, config=config)


def _bound_note(config: CalibrationConfig) -> str:
    if config.bound == "none":
        return ""
    return f" (one-sided {config.level:g} {config.bound} lower bound of precision)"


def choose_points(
    pts: CurvePoints,
    policy_codes: np.ndarray,
    targets: np.ndarray,
    *,
    bound: str = "none",
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Index `[c]` of the chosen point per tag along `L`, and whether the policy is reachable.

    policy_codes index POLICIES. Ties: "precision" takes the highest recall, then the highest
    threshold; "recall" the highest precision, then the highest recall; "f1" the highest F1,
    then the highest threshold. bound: for "precision", a point qualifies only when the lower
    confidence bound (`tagger.calibrate.bounds`, one-sided `level`) of its precision reaches
    the target ("none": the point estimate).
    """
    c, n_points = pts.tp.shape
    idx = np.zeros(c, dtype=np.int64)
    reach = np.zeros(c, dtype=bool)
    for code in np.unique(policy_codes):
        rows = np.flatnonzero(policy_codes == code)
        valid, tp = pts.valid[rows], pts.tp[rows]
        p = _rows_precision(tp, pts.fp[rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            r = tp / pts.n_pos[rows, None]
        target = targets[rows, None]
        if POLICIES[code] == "precision":
            feasible = valid & (p >= target)
            if bound != "none":  # the bound only on points whose estimate reaches the target
                at = np.nonzero(feasible)
                goal = np.broadcast_to(target, feasible.shape)[at]
                feasible[at] = bound_reaches(tp[at], pts.fp[rows][at], goal, level, bound)
            idx[rows] = np.argmax(np.where(feasible, tp, -1.0), axis=1)  # first = highest thr
        elif POLICIES[code] == "recall":
            feasible = valid & (r >= target)
            last = np.argmax(np.where(feasible, p, -1.0)[:, ::-1], axis=1)
            idx[rows] = n_points - 1 - last  # last maximum = the highest recall
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                f1 = 2 * p * r / (p + r)
            f1 = np.where(valid & (p + r > 0), f1, -1.0)
            feasible = f1 > 0
            idx[rows] = np.argmax(f1, axis=1)
        reach[rows] = feasible.any(axis=1)
    return idx, reach


def _rows_precision(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    ps = tp + fp
    return np.divide(tp, ps, out=np.zeros_like(ps), where=ps != 0)


def _initial_status(
    pol: TagPolicies,
    n_pos: np.ndarray,
    n_neg: np.ndarray,
    reachable: np.ndarray,
    bound_note: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """'ok' or 'todo' per tag, with the reason a tag cannot be calibrated."""
    status = np.full(len(pol.policy), "ok", dtype=object)
    reason = np.full(len(pol.policy), "", dtype=object)
    for j, policy in enumerate(pol.policy):
        if n_pos[j] < pol.min_positives[j]:
            why = f"too few known positives ({n_pos[j]:.0f} < min_positives {pol.min_positives[j]})"
        elif n_neg[j] < pol.min_negatives[j]:
            why = f"too few known negatives ({n_neg[j]:.0f} < min_negatives {pol.min_negatives[j]})"
        elif not reachable[j] and policy == "f1":
            why = "no threshold with F1 > 0"
        elif not reachable[j]:
            why = f"target {policy} {pol.target[j]:g} unreachable"
            why += bound_note if policy == "precision" else ""
        else:
            continue
        status[j], reason[j] = "todo", why
    return status, reason


def _apply_fallbacks(
    thresholds: np.ndarray,
    status: np.ndarray,
    reason: np.ndarray,
    pol: TagPolicies,
    taxonomy: Taxonomy,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk each uncalibrated tag's fallback chain; parents inherit only from 'ok' ancestors."""
    thresholds, status, reason = thresholds.copy(), status.copy(), reason.copy()
    calibrated = status == "ok"
    for j in np.flatnonzero(~calibrated):
        tag = taxonomy.tag_ids[j]
        notes = [reason[j]]
        for step in pol.fallback[j]:
            if step == "parent":
                parent = next(
                    (a for a in taxonomy.ancestors(tag) if calibrated[taxonomy.index(a)]), None
                )
                if parent is None:
                    notes.append("no calibrated ancestor")
                    continue
                thresholds[j] = thresholds[taxonomy.index(parent)]
                status[j] = "fallback_parent"
                notes.append(f"inherits the threshold of ancestor {parent!r}")
            elif step == "default":
                thresholds[j] = np.float32(pol.default_threshold[j])
                status[j] = "fallback_default"
                notes.append(f"default threshold {pol.default_threshold[j]:g}")
            else:
                thresholds[j] = np.nan
                status[j] = "disabled"
                notes.append("disabled")
            break
        reason[j] = "; ".join(notes)
    return thresholds, status, reason


def _to_float32_floor(x: np.ndarray) -> np.ndarray:
    """Float32 thresholds never above the float64 ones (the chosen point stays included)."""
    y = x.astype(np.float32)
    up = y.astype(np.float64) > x
    y[up] = np.nextafter(y[up], np.float32(-np.inf))
    return y


def bootstrap_precision(
    tp: np.ndarray,
    fp: np.ndarray,
    n_pos: np.ndarray,
    n_neg: np.ndarray,
    thresholds: np.ndarray,
    *,
    rng: np.random.Generator,
    samples: int = 1000,
    level: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval `([T], [T])` of the precision at fixed thresholds under resampling.

    Resampling the known cells with replacement is a multinomial draw over their four cells of
    the confusion matrix (tp, fp, fn, tn); the threshold stays fixed. NaN for disabled tags,
    tags without known cells, and when no resample predicts anything.
    """
    n = n_pos + n_neg
    ok = np.flatnonzero(~np.isnan(thresholds) & (n > 0))
    low, high = np.full(tp.shape, np.nan), np.full(tp.shape, np.nan)
    if ok.size == 0:
        return low, high
    cells = np.stack([tp[ok], fp[ok], n_pos[ok] - tp[ok], n_neg[ok] - fp[ok]], axis=1)
    draws = rng.multinomial(n[ok].astype(np.int64), cells / n[ok, None], size=(samples, ok.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = draws[..., 0] / (draws[..., 0] + draws[..., 1])  # [samples, k]
    has = ~np.isnan(prec).all(axis=0)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    if has.any():
        lo_hi = np.nanpercentile(prec[:, has], q, axis=0)
        low[ok[has]], high[ok[has]] = lo_hi[0], lo_hi[1]
    return low, high


def _report(
    taxonomy: Taxonomy,
    pol: TagPolicies,
    thresholds: np.ndarray,
    status: np.ndarray,
    reason: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    n_pos: np.ndarray,
    n_neg: np.ndarray,
    ap: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> pd.DataFrame:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
        recall = np.where(n_pos > 0, tp / n_pos, np.nan)
        f1 = np.where(n_pos > 0, 2 * tp / (2 * tp + fp + (n_pos - tp)), np.nan)
    policy = np.array(pol.policy, dtype=object)
    return pd.DataFrame(
        {
            "tag": list(taxonomy.tag_ids),
            "category": [taxonomy.category_of(t) for t in taxonomy.tag_ids],
            "policy": policy,
            "target": pol.target,
            "threshold": thresholds.astype(np.float64),
            "status": status,
            "reason": reason,
            "meets_target": (status == "ok") & (policy != "f1"),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support_pos": n_pos.astype(np.int64),
            "support_neg": n_neg.astype(np.int64),
            "ap": ap,
            "precision_low": low,
            "precision_high": high,
        },
        columns=REPORT_COLUMNS,
    )


def calibrate_tag_reference(
    scores: np.ndarray,
    positives: np.ndarray,
    policy: str,
    target: float,
    *,
    bound: str = "none",
    level: float = 0.95,
) -> float:
    """One tag's threshold by `policy` from scikit-learn's `precision_recall_curve` (slow).

    `scores, positives [n]` are the tag's known cells. NaN when the policy is unreachable.
    bound: for "precision", each point's lower bound by its quantile (`precision_lower_bound`)
    must reach the target. The reference for tests and `bench/calibrate_scale.py`; ties broken
    as `choose_points`.
    """
    from sklearn.metrics import precision_recall_curve

    p, r, thr = precision_recall_curve(positives, scores)
    p, r = p[:-1], r[:-1]  # the final (recall 0, precision 1) entry has no threshold
    if policy == "precision":
        judged = p
        if bound != "none":
            n_pos = float(np.sum(positives))
            tp = np.round(r * n_pos)
            fp = np.round(tp / np.where(p > 0, p, 1.0) - tp)
            judged = np.nan_to_num(precision_lower_bound(tp, fp, level, bound), nan=-1.0)
        ok = np.flatnonzero(judged >= target)
        if not ok.size:
            return math.nan
        cand = ok[r[ok] == r[ok].max()]
        i = cand[np.argmax(p[cand])]
    elif policy == "recall":
        ok = np.flatnonzero(r >= target)
        if not ok.size:
            return math.nan
        cand = ok[p[ok] == p[ok].max()]
        i = cand[np.argmax(r[cand])]
    elif policy == "f1":
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        if f1.max() <= 0:
            return math.nan
        cand = np.flatnonzero(f1 == f1.max())
        i = cand[np.argmax(thr[cand])]
    else:
        raise ValueError(f"unknown policy {policy!r}; allowed: {list(POLICIES)}")
    return float(thr[i])


# ---- held-out check ----------------------------------------------------------------------


def check_thresholds(
    probs: np.ndarray, targets: np.ndarray, known: np.ndarray, calibration: Calibration
) -> pd.DataFrame:
    """Per-tag precision and recall of the chosen thresholds on data NOT used to calibrate.

    Columns: tag, policy, target, status, meets_target, threshold, precision_calib,
    precision, recall, tp, fp, support_pos, support_neg (the last six on `probs`).
    """
    s = scores_at_thresholds(probs, targets, known, calibration.thresholds)
    rep = calibration.report
    return pd.DataFrame(
        {
            "tag": rep["tag"],
            "policy": rep["policy"],
            "target": rep["target"],
            "status": rep["status"],
            "meets_target": rep["meets_target"],
            "threshold": rep["threshold"],
            "precision_calib": rep["precision"],
            "precision": s.precision,
            "recall": s.recall,
            "tp": s.tp.astype(np.int64),
            "fp": s.fp.astype(np.int64),
            "support_pos": s.n_pos.astype(np.int64),
            "support_neg": s.n_neg.astype(np.int64),
        }
    )


def summarize_check(check: pd.DataFrame, tolerance: float = 0.05) -> dict[str, float]:
    """Headline figures of `check_thresholds` for tags marked as meeting a precision target.

    Counts tags with policy "precision", `meets_target`, and something predicted on the check
    data. `share_within_tolerance`: held-out precision >= target - tolerance.
    """
    sel = check[(check["policy"] == "precision") & check["meets_target"].astype(bool)]
    predicted = sel[(sel["tp"] + sel["fp"]) > 0]
    prec = predicted["precision"].to_numpy(dtype=np.float64)
    target = predicted["target"].to_numpy(dtype=np.float64)
    tp, fp = predicted["tp"].sum(), predicted["fp"].sum()
    return {
        "tags_meeting_target": float(len(sel)),
        "tags_with_predictions": float(len(predicted)),
        "median_precision": float(np.median(prec)) if prec.size else math.nan,
        "mean_precision": float(prec.mean()) if prec.size else math.nan,
        "micro_precision": float(tp / (tp + fp)) if tp + fp else math.nan,
        "share_at_target": float((prec >= target).mean()) if prec.size else math.nan,
        "share_within_tolerance": float((prec >= target - tolerance).mean())
        if prec.size
        else math.nan,
    }


# ---- files -------------------------------------------------------------------------------


def write_thresholds(calibration: Calibration, path: str | Path, taxonomy: Taxonomy) -> Path:
    """Write the thresholds file (JSON): config, taxonomy name/version, one entry per tag."""
    path = Path(path)
    records = calibration.report.astype(object).where(calibration.report.notna(), None)
    doc = {
        "format": THRESHOLDS_FORMAT,
        "version": THRESHOLDS_VERSION,
        "taxonomy": {"name": taxonomy.name, "version": taxonomy.version},
        "config": calibration.config.model_dump(mode="json"),
        "method": calibration.method,
        "tags": records.to_dict(orient="records"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
    tmp.replace(path)
    return path


def read_thresholds(path: str | Path, taxonomy: Taxonomy | None = None) -> Calibration:
    """Read a thresholds file; with `taxonomy`, its tags must be the taxonomy's, in order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"thresholds file not found: {path}")
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != THRESHOLDS_FORMAT:
        raise ValueError(f"{path}: not a thresholds file (format != {THRESHOLDS_FORMAT!r})")
    if doc.get("version") != THRESHOLDS_VERSION:
        raise ValueError(f"{path}: version {doc.get('version')!r}; supported: {THRESHOLDS_VERSION}")
    report = pd.DataFrame(doc["tags"], columns=REPORT_COLUMNS)  # older files: new columns NaN
    for col in (
        "target",
        "threshold",
        "precision",
        "recall",
        "f1",
        "ap",
        "precision_low",
        "precision_high",
        "precision_bound",
        "standard_recall",
    ):
        report[col] = pd.to_numeric(report[col]).astype(np.float64)
    for col in ("meets_target", "target_reachable", "meets_standard"):
        report[col] = np.array([v is True for v in report[col].tolist()], dtype=bool)
    bad = sorted(set(report["status"]) - set(STATUSES))
    if bad:
        raise ValueError(f"{path}: unknown status {bad}; allowed: {list(STATUSES)}")
    if taxonomy is not None and tuple(report["tag"]) != taxonomy.tag_ids:
        missing = sorted(set(taxonomy.tag_ids) - set(report["tag"]))[:10]
        extra = sorted(set(report["tag"]) - set(taxonomy.tag_ids))[:10]
        raise ValueError(
            f"{path}: tags differ from taxonomy {taxonomy.name!r} (missing "
            f"{missing}, extra {extra}, or another order)"
        )
    config_doc = dict(doc["config"])
    config_doc.setdefault("bound", "none")  # written before bounds: chosen by point estimate
    try:
        config = CalibrationConfig.model_validate(config_doc)
    except ValidationError as e:
        raise ValueError(f"{path}: invalid config section:\n{e}") from None
    thresholds = report["threshold"].to_numpy(dtype=np.float32)
    method = dict(doc.get("method") or {})
    return Calibration(thresholds=thresholds, report=report, config=config, method=method)


def write_report(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a per-tag table as CSV or Parquet, by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        raise ValueError(f"{path}: report suffix {path.suffix!r}; allowed: .csv, .parquet")
    return path
