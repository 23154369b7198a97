"""Tag selection: probabilities `[B, num_tags]` -> each image's tags, by thresholds and options."""

from __future__ import annotations

import numpy as np

from label_system.taxonomy import Taxonomy
from tagger.inference.options import PredictOptions
from tagger.inference.records import TagPrediction

_CLASSIFIER, _PARENT = 0, 1  # evidence ranks: at equal scores the classifier's tag sorts first


class TagSelector:
    """Turns probabilities `[B, num_tags]` into tag predictions by thresholds and options.

    A tag is emitted when enabled (threshold not NaN), in an included category, and
    `prob >= max(threshold, min_confidence)` (float32 comparison, as calibration chose it).
    Parents (with `include_parents`) take the best score of their own and their predicted
    descendants'. Tags sort by score, highest first (a tie: the classifier's before a
    parent's, then column order); `max_tags` cuts the list.
    """

    def __init__(self, taxonomy: Taxonomy, thresholds: np.ndarray, options: PredictOptions):
        thresholds = np.asarray(thresholds, dtype=np.float32)
        if thresholds.shape != (len(taxonomy),):
            raise ValueError(
                f"thresholds have shape {thresholds.shape}; the taxonomy "
                f"{taxonomy.name!r} has {len(taxonomy)} tags"
            )
        tag_ids = taxonomy.tag_ids
        categories = [taxonomy.category_of(t) for t in tag_ids]
        allowed = np.ones(len(tag_ids), dtype=bool)
        if options.include_categories is not None:
            unknown = sorted(set(options.include_categories) - set(taxonomy.categories))
            if unknown:
                raise ValueError(
                    f"include_categories: unknown categories {unknown}; allowed: "
                    f"{sorted(taxonomy.categories)}"
                )
            allowed = np.array([c in options.include_categories for c in categories])
        self.emittable = ~np.isnan(thresholds) & allowed
        floor = np.float32(options.min_confidence)
        self.cut = np.where(self.emittable, np.maximum(thresholds, floor), np.inf)
        self.cut = self.cut.astype(np.float32)
        self.options = options
        self.tag_ids = tag_ids
        self.names = [taxonomy.display_name(t, options.language) for t in tag_ids]
        self.categories = categories
        self.ancestors = [taxonomy.ancestors(t) for t in tag_ids]
        self.ancestor_index = [np.asarray(taxonomy.indices(a), dtype=np.int64)
                               for a in self.ancestors]  # fmt: skip

    def __call__(self, probs: np.ndarray) -> list[tuple[TagPrediction, ...]]:
        """probs: float32 `[B, num_tags]` -> per image, its tags sorted by score."""
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != len(self.tag_ids):
            raise ValueError(f"probs must be [B, {len(self.tag_ids)}], got {probs.shape}")
        return [self._select(row) for row in probs]

    def _select(self, row: np.ndarray) -> tuple[TagPrediction, ...]:
        hits = np.flatnonzero(row >= self.cut)
        # tag column -> (score, evidence rank); at equal scores the classifier's tag sorts first
        chosen: dict[int, tuple[float, int]] = {int(i): (float(row[i]), _CLASSIFIER) for i in hits}
        if self.options.include_parents:
            for i in hits:
                for a in map(int, self.ancestor_index[i]):
                    if not self.emittable[a]:
                        continue  # disabled (NaN threshold) or not an included category
                    score, rank = chosen.get(a, (float(row[a]), _PARENT))
                    if rank == _PARENT:  # not predicted on its own: implied by this child
                        chosen[a] = (max(score, float(row[i])), _PARENT)
        order = sorted(chosen, key=lambda i: (-chosen[i][0], chosen[i][1], i))
        if self.options.max_tags is not None:
            order = order[: self.options.max_tags]
        return tuple(
            TagPrediction(
                id=self.tag_ids[i],
                name=self.names[i],
                score=chosen[i][0],
                category=self.categories[i],
                parents=self.ancestors[i],
                evidence="classifier" if chosen[i][1] == _CLASSIFIER else "parent",
            )
            for i in order
        )
