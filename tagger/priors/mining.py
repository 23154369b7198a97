"""Mining candidate prior rules from labelled data: implications and exclusions, for review.

Counts come from known cells only (a tag unknown for an image counts neither for nor against):
for tags A, B over the images where both are known,

- n: images with both known; n_a, n_b: of those, images with A (B) positive; n_ab: both.
- implication A -> B: support = n_ab, confidence = P(B | A) = n_ab / n_a,
  lift = confidence / P(B) with P(B) = n_b / n.
- exclusion A / B: n_ab <= `max_cooccurrence` although independence expects
  `expected = n_a * n_b / n >= min_expected` co-occurrences.

Candidates already implied by the taxonomy or the current rules are left out; those that would
create a cycle or a contradiction with the current rules (`label_system.priors.check_priors`)
are listed separately with the reason. Nothing here is ever applied: `write_review` writes a
YAML file in the priors format, with the statistics as comments, for a person to review and
merge into `priors.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from label_system.errors import LabelSystemError
from label_system.mapping import SourceMapping
from label_system.priors import PriorRules, check_priors, implied_closure
from label_system.taxonomy import Taxonomy
from tagger.data.manifest import read_manifest, targets_from_manifest

CANDIDATE_COLUMNS = (
    "kind", "a", "b", "n", "n_a", "n_b", "n_ab", "confidence", "lift", "expected", "status",
    "reason",
)  # fmt: skip


class MiningConfig(BaseModel):
    """Thresholds for candidate rules (defaults: high-precision implications, clear exclusions).

    min_support: images with both tags positive (implications).
    min_confidence: P(B | A) over images where both are known.
    min_lift: confidence / P(B): B must be more likely with A than without knowing A.
    min_expected: co-occurrences independence predicts for an exclusion candidate.
    max_cooccurrence: co-occurrences an exclusion candidate may still have (label noise).
    max_candidates: per kind, the best ones (implications by confidence then support,
      exclusions by expected count).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_support: int = Field(default=10, ge=1)
    min_confidence: float = Field(default=0.9, gt=0.0, le=1.0)
    min_lift: float = Field(default=1.5, ge=1.0)
    min_expected: float = Field(default=5.0, gt=0.0)
    max_cooccurrence: int = Field(default=0, ge=0)
    max_candidates: int = Field(default=50, ge=1)


@dataclass
class MinedRules:
    """Accepted candidates (consistent with the current rules) and rejected ones, as tables
    with `CANDIDATE_COLUMNS`."""

    candidates: pd.DataFrame
    rejected: pd.DataFrame
    config: MiningConfig
    sources: list[str] = field(default_factory=list)

    def top(self, k: int = 20) -> pd.DataFrame:
        return self.candidates.head(k)


def pair_counts(targets: np.ndarray, known: np.ndarray) -> dict[str, np.ndarray]:
    """`n, n_a, n_b, n_ab` as `[T, T]` matrices (row = A, column = B) over known cells."""
    k = known.astype(np.float64)
    p = ((targets != 0) & known).astype(np.float64)
    return {"n": k.T @ k, "n_a": p.T @ k, "n_b": k.T @ p, "n_ab": p.T @ p}


def mine_rules(
    counts: dict[str, np.ndarray],
    taxonomy: Taxonomy,
    current: PriorRules | None = None,
    config: MiningConfig | None = None,
) -> MinedRules:
    """Candidate implications and exclusions from `pair_counts` (summed over sources)."""
    config = config or MiningConfig()
    current = current or PriorRules([], [])
    n, n_a, n_b, n_ab = (counts[k] for k in ("n", "n_a", "n_b", "n_ab"))
    ids = taxonomy.tag_ids
    with np.errstate(divide="ignore", invalid="ignore"):
        confidence = n_ab / n_a
        lift = confidence / (n_b / n)
        expected = n_a * n_b / n
    np.fill_diagonal(n_ab, -1)
    closure = {t: implied_closure([t], current, taxonomy) for t in ids}
    rows: list[dict[str, object]] = []
    imp = (n_ab >= config.min_support) & (confidence >= config.min_confidence)
    imp &= lift >= config.min_lift
    for a, b in zip(*np.nonzero(imp), strict=True):
        if ids[b] not in closure[ids[a]]:
            rows.append(_row("implies", ids[a], ids[b], a, b, counts, confidence, lift, expected))
    exc = (n_ab >= 0) & (n_ab <= config.max_cooccurrence) & (expected >= config.min_expected)
    for a, b in zip(*np.nonzero(np.triu(exc, 1)), strict=True):
        if not _already_excluded(ids[a], ids[b], current, closure):
            rows.append(_row("excludes", ids[a], ids[b], a, b, counts, confidence, lift, expected))
    table = pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))
    table = _rank(table, config)
    return _split_by_consistency(table, taxonomy, current, config)


def _row(
    kind: str, a_id: str, b_id: str, a: int, b: int, counts: dict[str, np.ndarray],
    confidence: np.ndarray, lift: np.ndarray, expected: np.ndarray,
) -> dict[str, object]:  # fmt: skip
    return {
        "kind": kind, "a": a_id, "b": b_id,
        **{k: int(counts[k][a, b]) for k in ("n", "n_a", "n_b", "n_ab")},
        "confidence": float(confidence[a, b]), "lift": float(lift[a, b]),
        "expected": float(expected[a, b]), "status": "candidate", "reason": "",
    }  # fmt: skip


def _already_excluded(a: str, b: str, current: PriorRules, closure: dict[str, set[str]]) -> bool:
    """a / b follows from a current exclusion x / y with a -> x and b -> y (or swapped)."""
    return any(
        (x in closure[a] and y in closure[b]) or (y in closure[a] and x in closure[b])
        for x, y in current.excludes
    )


def _rank(table: pd.DataFrame, config: MiningConfig) -> pd.DataFrame:
    imp = table[table["kind"] == "implies"].sort_values(
        ["confidence", "n_ab", "lift"], ascending=False
    )
    exc = table[table["kind"] == "excludes"].sort_values("expected", ascending=False)
    return pd.concat(
        [imp.head(config.max_candidates), exc.head(config.max_candidates)], ignore_index=True
    )


def _split_by_consistency(
    table: pd.DataFrame, taxonomy: Taxonomy, current: PriorRules, config: MiningConfig
) -> MinedRules:
    """Candidates in rank order, each kept when the current rules, the candidates kept so far
    and it still pass `check_priors` (so the review file loads as a whole); a candidate the
    kept ones already imply is left out as redundant."""
    implies, excludes = list(current.implies), list(current.excludes)
    reasons = []
    for r in table.itertuples():
        a, b = str(r.a), str(r.b)
        kept = PriorRules(implies, excludes)
        closure = {t: implied_closure([t], kept, taxonomy) for t in (a, b)}
        if (r.kind == "implies" and b in closure[a]) or (
            r.kind == "excludes" and _pair_excluded(a, b, kept, taxonomy)
        ):
            reasons.append("redundant: follows from the rules and the candidates above")
            continue
        trial = (
            ([*implies, (a, b)], excludes)
            if r.kind == "implies"
            else (implies, [*excludes, (a, b)])
        )
        try:
            check_priors(PriorRules(*trial), taxonomy)
        except LabelSystemError as e:
            reasons.append(f"with the current rules and the candidates above: {e}")
            continue
        implies, excludes = trial
        reasons.append("")
    table = table.assign(reason=reasons)
    bad = table["reason"] != ""
    table.loc[bad, "status"] = "rejected"
    return MinedRules(table[~bad].reset_index(drop=True), table[bad].reset_index(drop=True), config)


def _pair_excluded(a: str, b: str, rules: PriorRules, taxonomy: Taxonomy) -> bool:
    closure = {t: implied_closure([t], rules, taxonomy) for t in (a, b)}
    return _already_excluded(a, b, rules, closure)


# ---- inputs -----------------------------------------------------------------------------------


def label_table_targets(
    path: str | Path,
    mapping: SourceMapping,
    taxonomy: Taxonomy,
    *,
    labels_column: str = "labels",
    separator: str = "|",
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and known mask `[N, T]` of a label-only CSV (one row per image, labels joined by
    `separator`, e.g. ../shared/data/voc_labels), through a source mapping.

    Positives: the tags of each label and their ancestors. Known: those, and every tag whose
    absence the mapping makes a known negative (an exhaustive vocabulary's tags).
    """
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if labels_column not in table.columns:
        raise ValueError(f"{path}: no column {labels_column!r}; columns: {list(table.columns)}")
    index = {t: i for i, t in enumerate(taxonomy.tag_ids)}
    n, t = len(table), len(taxonomy)
    targets = np.zeros((n, t), dtype=np.float32)
    known = np.zeros((n, t), dtype=bool)
    known[:, [index[x] for x in mapping.known_tags]] = True
    unmapped: set[str] = set()
    for i, cell in enumerate(table[labels_column]):
        for label in filter(None, (s.strip() for s in cell.split(separator))):
            tags = mapping.tags_for(label)
            if not tags and label not in mapping:
                unmapped.add(label)
            for tag in taxonomy.with_ancestors(tags):
                targets[i, index[tag]] = 1
    if unmapped:
        raise ValueError(
            f"{path}: labels not in the {mapping.vocabulary!r} mapping: {sorted(unmapped)[:10]}"
        )
    known |= targets.astype(bool)
    return targets, known


# ---- the review file --------------------------------------------------------------------------


def review_yaml(mined: MinedRules, header: str = "") -> str:
    """The review file: a priors YAML (loadable by `label_system.priors.load_priors` once the
    reviewer keeps what they accept) with the statistics as comments; rejected candidates are
    listed, commented out, at the end with the reason."""
    c = mined.config
    lines = [
        "# Candidate prior rules mined from data: REVIEW, then copy what you accept into",
        "# label_system/data/priors.yaml. Never applied automatically.",
        *(f"# {line}" for line in header.splitlines()),
        f"# thresholds: min_support={c.min_support} min_confidence={c.min_confidence} "
        f"min_lift={c.min_lift} min_expected={c.min_expected} "
        f"max_cooccurrence={c.max_cooccurrence}",
        "# counts over images where both tags are known: n, n_a (A positive), n_b, n_ab (both)",
    ]
    cand = mined.candidates
    lines.append("implies:" if (cand["kind"] == "implies").any() else "implies: []")
    for r in cand[cand["kind"] == "implies"].itertuples():
        lines.append(f"  - {{if: {r.a}, then: {r.b}}}  # {_stats(r)}")
    lines.append("excludes:" if (cand["kind"] == "excludes").any() else "excludes: []")
    for r in cand[cand["kind"] == "excludes"].itertuples():
        lines.append(f"  - {{tags: [{r.a}, {r.b}]}}  # {_stats(r)}")
    if len(mined.rejected):
        lines.append("# Rejected: would create a cycle or a contradiction with the current rules")
        for r in mined.rejected.itertuples():
            rule = (
                f"{{if: {r.a}, then: {r.b}}}"
                if r.kind == "implies"
                else f"{{tags: [{r.a}, {r.b}]}}"
            )
            reason = str(r.reason).replace("\n", " ")
            lines.append(f"#   {r.kind}: {rule}  # {_stats(r)}; {reason}")
    return "\n".join(lines) + "\n"


def _stats(r: object) -> str:
    g = r.__getattribute__
    if g("kind") == "implies":
        return (
            f"support {g('n_ab')}, confidence {g('confidence'):.3f}, lift {g('lift'):.2f} "
            f"(n {g('n')}, n_a {g('n_a')}, n_b {g('n_b')})"
        )
    return (
        f"co-occur {g('n_ab')}, expected {g('expected'):.1f} "
        f"(n {g('n')}, n_a {g('n_a')}, n_b {g('n_b')})"
    )


def write_review(mined: MinedRules, path: str | Path, header: str = "") -> Path:
    """Write `review_yaml` to `path`, and the candidate table beside it (`<stem>.csv`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(review_yaml(mined, header), encoding="utf-8")
    pd.concat([mined.candidates, mined.rejected], ignore_index=True).to_csv(
        path.with_suffix(".csv"), index=False
    )
    return path


def mine_sources(
    taxonomy: Taxonomy,
    current: PriorRules | None,
    config: MiningConfig,
    *,
    manifest: str | Path | None = None,
    label_tables: list[tuple[Path, SourceMapping]] | None = None,
) -> MinedRules:
    """Candidates from a manifest's known cells and/or label-only tables, counts summed."""
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []
    if manifest is not None:
        table = read_manifest(manifest, columns=["tags", "known"])
        parts.append((str(manifest), *targets_from_manifest(table, taxonomy)))
    for path, mapping in label_tables or []:
        parts.append(
            (f"{path} ({mapping.vocabulary})", *label_table_targets(path, mapping, taxonomy))
        )
    if not parts:
        raise ValueError("nothing to mine: give a manifest or label tables")
    counts: dict[str, np.ndarray] = {}
    for _, targets, known in parts:
        for key, value in pair_counts(targets, known).items():
            counts[key] = counts.get(key, 0) + value
    mined = mine_rules(counts, taxonomy, current, config)
    mined.sources = [name for name, _, _ in parts]
    return mined
