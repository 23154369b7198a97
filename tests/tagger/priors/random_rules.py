"""Random taxonomies and `check_priors`-valid rule sets for property tests (seeded numpy)."""

from __future__ import annotations

import numpy as np

from label_system import LabelSystemError, PriorRules, Taxonomy, check_priors


def random_taxonomy(rng: np.random.Generator, num_tags: int) -> Taxonomy:
    """A random parent DAG: tag i may take parents among tags 0..i-1."""
    tags = []
    for i in range(num_tags):
        k = int(rng.integers(0, 3)) if i else 0
        parents = sorted({f"t{int(p)}" for p in rng.integers(0, i, size=k)}) if i else []
        tags.append({"id": f"t{i}", "names": {"en": f"T{i}"}, "category": "c", "parents": parents})
    return Taxonomy.from_dict(
        {"name": "r", "version": "1", "categories": [{"id": "c", "names": {"en": "C"}}],
         "tags": tags}
    )  # fmt: skip


def random_rules(
    rng: np.random.Generator, tax: Taxonomy, implies: int, excludes: int
) -> PriorRules:
    """Up to `implies` implications and `excludes` exclusions, each kept only when the rule set
    still passes `check_priors` (no cycle, no contradiction)."""
    ids = tax.tag_ids
    rules = PriorRules([], [])
    for _ in range(implies):
        a, b = rng.choice(len(ids), size=2, replace=False)
        cand = PriorRules([*rules.implies, (ids[a], ids[b])], list(rules.excludes))
        rules = _keep_if_valid(cand, rules, tax)
    for _ in range(excludes):
        a, b = rng.choice(len(ids), size=2, replace=False)
        cand = PriorRules(list(rules.implies), [*rules.excludes, (ids[a], ids[b])])
        rules = _keep_if_valid(cand, rules, tax)
    return rules


def _keep_if_valid(cand: PriorRules, old: PriorRules, tax: Taxonomy) -> PriorRules:
    try:
        check_priors(cand, tax)
    except LabelSystemError:
        return old
    return cand
