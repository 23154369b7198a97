"""The bundle's prior rules at prediction time: probs -> post-prior scores, and the evidence
of every tag a rule set or changed.

Applied by `Predictor` (so by the local engine, the ONNX backend and the Ray actors alike) after
the classifier (and detector fusion, when the bundle has one) and before `TagSelector`, with the
bundle's thresholds: a tag is present only with the tags its rules imply, never with a tag its
rules exclude (see `tagger.priors.apply`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from label_system.priors import PriorRules
from label_system.taxonomy import Taxonomy
from tagger.inference.records import TagPrediction
from tagger.priors.apply import RuleSet, apply_priors, compile_rules


class RuleStep:
    """`step(probs) -> (scores, source)`; `step.annotate(tags, source)` marks rule evidence.

    Without rules (a bundle with no priors) both are the identity.
    """

    def __init__(self, taxonomy: Taxonomy, priors: PriorRules | None, thresholds: np.ndarray):
        self.rules: RuleSet | None = None if priors is None else compile_rules(taxonomy, priors)
        # a threshold of 0 ("always") normalises as the smallest positive one
        self.thresholds = np.clip(np.asarray(thresholds, dtype=np.float32), 1e-6, 1.0)
        self.column = {t: i for i, t in enumerate(taxonomy.tag_ids)}

    def __call__(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """probs `[B, T]` -> post-prior scores `[B, T]` and the rule source codes (or None)."""
        if self.rules is None:
            return probs, None
        result = apply_priors(probs, self.rules, self.thresholds)
        return result.scores, result.source

    def annotate(
        self, selected: Sequence[tuple[TagPrediction, ...]], source: np.ndarray | None
    ) -> list[tuple[TagPrediction, ...]]:
        """Per image, its tags with `rule` set where a rule changed the score; a tag emitted on
        a score a rule raised gets evidence "rule"."""
        if source is None or self.rules is None:
            return list(selected)
        return [
            tuple(self._mark(tag, row) for tag in tags)
            for tags, row in zip(selected, source, strict=True)
        ]

    def _mark(self, tag: TagPrediction, source_row: np.ndarray) -> TagPrediction:
        assert self.rules is not None
        col = self.column[tag.id]
        code = int(source_row[col])
        if code == 0:
            return tag
        rule = self.rules.describe(col, code)
        if code > 0 and tag.evidence == "classifier":
            return replace(tag, evidence="rule", rule=rule)
        return replace(tag, rule=rule)
