"""Tag selection: probabilities `[B, num_tags]` -> each image's tags, by thresholds and options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from label_system.taxonomy import Taxonomy
from tagger.detect.detections import Detections
from tagger.detect.evidence import COUNT_SCORE
from tagger.inference.options import PredictOptions
from tagger.inference.records import Box, Evidence, Instance, TagPrediction

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
        self.index = {t: i for i, t in enumerate(tag_ids)}
        self.names = [taxonomy.display_name(t, options.language) for t in tag_ids]
        self.categories = categories
        self.ancestors = [taxonomy.ancestors(t) for t in tag_ids]
        self.ancestor_index = [np.asarray(taxonomy.indices(a), dtype=np.int64)
                               for a in self.ancestors]  # fmt: skip

    def __call__(
        self,
        probs: np.ndarray,
        *,
        classifier_probs: np.ndarray | None = None,
        detector_cells: np.ndarray | None = None,
        detections: Sequence[Detections | None] | None = None,
    ) -> list[tuple[TagPrediction, ...]]:
        """probs: float32 `[B, num_tags]` -> per image, its tags sorted by score.

        With detector fusion (`tagger.detect.runtime`): probs are the fused scores,
        `classifier_probs` the classifier's own, `detector_cells` bool `[B, num_tags]` the
        cells scored with detector evidence, `detections` the boxes per image (None where the
        detector did not run): those tags get evidence "fused" (or "detector" when the
        classifier alone would not have passed) and their boxes as instances.
        """
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != len(self.tag_ids):
            raise ValueError(f"probs must be [B, {len(self.tag_ids)}], got {probs.shape}")
        if detector_cells is None or classifier_probs is None or detections is None:
            return [self._select(row) for row in probs]
        out = []
        for row, own, cells, det in zip(
            probs, classifier_probs, detector_cells, detections, strict=True
        ):
            tags = self._select(row)
            out.append(tuple(self._with_detector(t, own, cells, det) for t in tags))
        return out

    def _with_detector(
        self, tag: TagPrediction, own: np.ndarray, cells: np.ndarray, det: Detections | None
    ) -> TagPrediction:
        """`tag` with its detector evidence and boxes (unchanged for classifier-only tags)."""
        i = self.index[tag.id]
        if tag.evidence == "parent" or not cells[i]:
            return tag
        evidence: Evidence = "fused" if own[i] >= self.cut[i] else "detector"
        if det is None:
            return replace(tag, evidence=evidence)
        mine = (det.tags == i) & (det.scores >= COUNT_SCORE)
        order = np.argsort(-det.scores[mine], kind="stable")
        boxes, scores = det.boxes[mine][order], det.scores[mine][order]
        w, h = float(max(det.width, 1)), float(max(det.height, 1))
        instances = tuple(
            Instance(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s))
            for b, s in zip(boxes, scores, strict=True)
        )
        normalised = tuple(
            Box(float(b[0]) / w, float(b[1]) / h, float(b[2]) / w, float(b[3]) / h, float(s))
            for b, s in zip(boxes, scores, strict=True)
        )
        return replace(tag, evidence=evidence, instances=instances, boxes=normalised)

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
