"""Measuring prior rules on held-out data: per rule, what it changes and whether it helps.

Inputs are held-out probabilities `[N, T]` with targets and the known mask (unknown cells count
neither way, as everywhere). For each rule, the scores with every rule (`apply_priors`) are
compared with the scores with every rule but that one:

- `changed`: cells whose decision (score >= threshold) differs;
- per tag the rule touches (its scores differ): precision, recall, F1 at the thresholds and AP,
  with and without the rule; the rule is `harmful` when it lowers the F1 or the AP of a tag it
  touches by more than `tolerance`.

Thresholds are reference thresholds chosen on the pre-prior scores (`reference_thresholds`: the
lowest threshold reaching the target precision, else the best-F1 one), the same ones the rules
are applied with. `compare_tags` gives AP and the "meets standard" view (some threshold reaches
precision >= p with recall >= r) per tag before and after all rules, with the tag's role
(parent tags have children in the taxonomy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from label_system.taxonomy import Taxonomy
from tagger.metrics import (
    average_precision,
    iter_curve_blocks,
    scores_at_thresholds,
)
from tagger.priors.apply import RuleSet, apply_priors, build_rule_set

RULE_COLUMNS = (
    "rule", "kind", "changed", "tags", "worst_tag", "delta_ap", "delta_f1", "harmful",
)  # fmt: skip
DETAIL_COLUMNS = (
    "rule", "tag", "changed", "support_pos", "support_neg", "ap_without", "ap_with",
    "precision_without", "precision_with", "recall_without", "recall_with", "f1_without",
    "f1_with",
)  # fmt: skip


@dataclass(frozen=True)
class StandardConfig:
    """The "meets standard" bar: precision >= `precision` at recall >= `recall`."""

    precision: float = 0.9
    recall: float = 0.5


def reference_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    *,
    target_precision: float = 0.9,
    min_positives: int = 3,
    min_negatives: int = 3,
) -> np.ndarray:
    """Per-tag thresholds `[T]` float32 to apply and measure rules at.

    The lowest threshold whose known-cell precision reaches `target_precision`; where none
    does, the best-F1 threshold; tags with fewer than `min_positives` known positives or
    `min_negatives` known negatives (precision means nothing without negatives): 0.5.
    """
    out = np.full(probs.shape[1], 0.5, dtype=np.float32)
    for cols, pts in iter_curve_blocks(probs, targets, known):
        prec = pts.precision()
        f1 = np.where(
            pts.valid, 2 * pts.tp / np.maximum(pts.tp + pts.fp + pts.n_pos[:, None], 1), -1
        )
        for j in range(prec.shape[0]):
            if pts.n_pos[j] < min_positives or pts.n_neg[j] < min_negatives:
                continue
            ok = pts.valid[j] & (prec[j] >= target_precision)
            # points run from the highest threshold down: the last reaching the precision
            k = int(np.flatnonzero(ok)[-1]) if ok.any() else int(np.argmax(f1[j]))
            out[cols.start + j] = np.float32(min(max(pts.thresholds[j, k], 1e-6), 1.0))
    return out


def without_rule(rules: RuleSet, name: str) -> RuleSet:
    """`rules` less the rule called `name`."""
    return build_rule_set(rules.tag_ids, [r for r in rules.rules if r.name != name])


def measure_rules(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    rules: RuleSet,
    thresholds: np.ndarray,
    *,
    tolerance: float = 1e-3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-rule summary (`RULE_COLUMNS`) and per (rule, touched tag) detail (`DETAIL_COLUMNS`).

    probs/targets/known `[N, T]` held-out; thresholds `[T]` (see the module docstring).
    """
    full = apply_priors(probs, rules, thresholds, explain=False).scores
    full_dec = full >= thresholds[None, :]
    ap_full = average_precision(full, targets, known)
    at_full = scores_at_thresholds(full, targets, known, thresholds)
    summary, detail = [], []
    for rule in rules.rules:
        alt = apply_priors(probs, without_rule(rules, rule.name), thresholds, explain=False).scores
        touched = np.flatnonzero((alt != full).any(axis=0))
        changed = (alt >= thresholds[None, :]) != full_dec
        rows = []
        if touched.size:
            sub = slice(None), touched
            ap_alt = average_precision(alt[sub], targets[sub], known[sub])
            at_alt = scores_at_thresholds(alt[sub], targets[sub], known[sub], thresholds[touched])
            for i, tag in enumerate(touched):
                rows.append(
                    {
                        "rule": rule.name,
                        "tag": rules.tag_ids[tag],
                        "changed": int(changed[:, tag].sum()),
                        "support_pos": int(at_full.n_pos[tag]),
                        "support_neg": int(at_full.n_neg[tag]),
                        "ap_without": ap_alt[i],
                        "ap_with": ap_full[tag],
                        "precision_without": at_alt.precision[i],
                        "precision_with": at_full.precision[tag],
                        "recall_without": at_alt.recall[i],
                        "recall_with": at_full.recall[tag],
                        "f1_without": at_alt.f1[i],
                        "f1_with": at_full.f1[tag],
                    }
                )
        detail += rows
        summary.append(_summarise(rule.name, rule.kind, int(changed.sum()), rows, tolerance))
    return (
        pd.DataFrame(summary, columns=list(RULE_COLUMNS)),
        pd.DataFrame(detail, columns=list(DETAIL_COLUMNS)),
    )


def _summarise(
    name: str, kind: str, changed: int, rows: list[dict[str, object]], tolerance: float
) -> dict[str, object]:
    d_ap = [_delta(r["ap_with"], r["ap_without"]) for r in rows]
    d_f1 = [_delta(r["f1_with"], r["f1_without"]) for r in rows]
    worst = int(np.argmin([min(a, f) for a, f in zip(d_ap, d_f1, strict=True)])) if rows else -1
    return {
        "rule": name,
        "kind": kind,
        "changed": changed,
        "tags": len(rows),
        "worst_tag": rows[worst]["tag"] if rows else "",
        "delta_ap": min(d_ap) if rows else 0.0,
        "delta_f1": min(d_f1) if rows else 0.0,
        "harmful": bool(rows) and (min(d_ap) < -tolerance or min(d_f1) < -tolerance),
    }


def _delta(with_: object, without: object) -> float:
    a, b = float(with_), float(without)  # type: ignore[arg-type]
    return 0.0 if np.isnan(a) or np.isnan(b) else a - b


def harmful_rules(
    summary: pd.DataFrame, kinds: tuple[str, ...] = ("implies", "excludes")
) -> list[str]:
    """Names of flagged rules of `kinds` (taxonomy parent edges are structure: flagged only)."""
    rows = summary[summary["harmful"] & summary["kind"].isin(kinds)]
    return [str(r) for r in rows["rule"]]


def max_recall_at_precision(
    probs: np.ndarray, targets: np.ndarray, known: np.ndarray, precision: float
) -> np.ndarray:
    """Per tag `[T]`: the highest recall of any threshold with precision >= `precision`
    (0 when none; NaN without known positives)."""
    out = np.full(probs.shape[1], np.nan)
    for cols, pts in iter_curve_blocks(probs, targets, known):
        ok = pts.valid & (pts.precision() >= precision)
        with np.errstate(invalid="ignore"):
            rec = np.where(ok, pts.recall(), 0.0).max(axis=1, initial=0.0)
        out[cols] = np.where(pts.n_pos > 0, rec, np.nan)
    return out


def compare_tags(
    before: np.ndarray,
    after: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    taxonomy: Taxonomy,
    standard: StandardConfig = StandardConfig(),
) -> pd.DataFrame:
    """Per tag: role (parent: has children), known positives, AP and the standard before and
    after the rules (`before`, `after`: scores `[N, T]`)."""
    has_children = {p for t in taxonomy.tag_ids for p in taxonomy.parents(t)}
    pos = ((targets != 0) & known).sum(axis=0)
    neg = known.sum(axis=0) - pos
    rec_b = max_recall_at_precision(before, targets, known, standard.precision)
    rec_a = max_recall_at_precision(after, targets, known, standard.precision)
    return pd.DataFrame(
        {
            "tag": list(taxonomy.tag_ids),
            "role": ["parent" if t in has_children else "leaf" for t in taxonomy.tag_ids],
            "support_pos": pos,
            "support_neg": neg,
            "ap_before": average_precision(before, targets, known),
            "ap_after": average_precision(after, targets, known),
            "recall_at_p_before": rec_b,
            "recall_at_p_after": rec_a,
            "meets_before": rec_b >= standard.recall,
            "meets_after": rec_a >= standard.recall,
        }
    )


def summarise_tags(
    table: pd.DataFrame, min_positives: int = 3, min_negatives: int = 3
) -> dict[str, float]:
    """Mean AP before/after for parent and leaf tags, and how many tags meet the standard, over
    tags with enough known positives and negatives (without negatives AP is 1 whatever)."""
    rows = table[(table["support_pos"] >= min_positives) & (table["support_neg"] >= min_negatives)]
    out: dict[str, float] = {}
    for role in ("parent", "leaf"):
        part = rows[rows["role"] == role]
        out[f"{role}_tags"] = float(len(part))
        out[f"{role}_ap_before"] = float(part["ap_before"].mean()) if len(part) else float("nan")
        out[f"{role}_ap_after"] = float(part["ap_after"].mean()) if len(part) else float("nan")
    out["meets_standard_before"] = float(rows["meets_before"].sum())
    out["meets_standard_after"] = float(rows["meets_after"].sum())
    return out
