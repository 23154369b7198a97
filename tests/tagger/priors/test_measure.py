"""Measuring rules: a helpful rule is not flagged, a harmful one is; reference thresholds; the
before/after tag view."""

from __future__ import annotations

import numpy as np
import pytest

from label_system import PriorRules
from tagger.priors.apply import compile_rules
from tagger.priors.measure import (
    StandardConfig,
    compare_tags,
    harmful_rules,
    max_recall_at_precision,
    measure_rules,
    reference_thresholds,
    summarise_tags,
)
from tests.tagger.bundle_fixtures import tiny_taxonomy

# tiny taxonomy columns: animal, dog (parent animal), cat (parent animal), beach


def scene(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dogs and cats (each an animal) and beaches; the classifier sees dogs well and misses
    many animals; dogs and beaches often co-occur."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 4), np.float32)
    y[:, 1] = rng.random(n) < 0.3
    y[:, 2] = (rng.random(n) < 0.2) & (y[:, 1] == 0)
    y[:, 0] = np.maximum(y[:, 1], y[:, 2])
    y[:, 3] = np.where(y[:, 1] == 1, rng.random(n) < 0.6, rng.random(n) < 0.2)
    p = np.clip(rng.normal(0.25, 0.12, (n, 4)) + 0.5 * y, 0, 1).astype(np.float32)
    p[:, 0] = np.clip(rng.normal(0.3, 0.15, n) + 0.1 * y[:, 0], 0, 1)  # animal: weak
    return p, y, np.ones_like(y, dtype=bool)


def test_a_helpful_parent_edge_and_a_harmful_exclusion() -> None:
    tax = tiny_taxonomy()
    probs, y, known = scene()
    rules = compile_rules(tax, PriorRules([], [("dog", "beach")]))
    th = reference_thresholds(probs, y, known, target_precision=0.8)
    summary, detail = measure_rules(probs, y, known, rules, th)
    by = summary.set_index("rule")
    assert by.loc["parent: dog -> animal", "delta_ap"] > 0.05, "dogs lift the weak animal tag"
    assert not by.loc["parent: dog -> animal", "harmful"]
    assert by.loc["excludes: dog / beach", "harmful"], "dogs and beaches do co-occur"
    assert by.loc["excludes: dog / beach", "changed"] > 0
    assert harmful_rules(summary) == ["excludes: dog / beach"]
    assert set(detail.loc[detail["rule"] == "parent: dog -> animal", "tag"]) == {"animal"}


def test_reference_thresholds_reach_the_precision_or_fall_back() -> None:
    probs, y, known = scene(1)
    th = reference_thresholds(probs, y, known, target_precision=0.8)
    dog = probs[:, 1] >= th[1]
    assert y[dog, 1].mean() >= 0.8
    known[:, 3] = False
    known[:, 2] = y[:, 2] == 1  # positives only: precision means nothing
    th = reference_thresholds(probs, y, known)
    assert th[3] == np.float32(0.5) and th[2] == np.float32(0.5)


def test_the_standard_view_and_the_parent_summary() -> None:
    tax = tiny_taxonomy()
    probs, y, known = scene(2)
    perfect = y.copy()
    rec = max_recall_at_precision(perfect, y, known, 0.9)
    assert rec == pytest.approx([1.0, 1.0, 1.0, 1.0])
    table = compare_tags(probs, perfect, y, known, tax, StandardConfig(0.9, 0.5))
    assert table["meets_after"].all() and list(table["role"]) == ["parent", "leaf", "leaf", "leaf"]
    figures = summarise_tags(table)
    assert figures["parent_tags"] == 1 and figures["parent_ap_after"] == 1.0
    assert figures["meets_standard_after"] == 4
