"""Comparing models on the same held-out data: labels, per-model scores, the promotion rule.

Probabilities and the predictions file live in `tagger.train.predictions`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from label_system.taxonomy import Taxonomy
from tagger.data.manifest import targets_from_manifest
from tagger.metrics import average_precision, mean_average_precision, scores_at_thresholds

# ---- comparing two models on the same held-out data ------------------------------------------


@dataclass(frozen=True)
class EvalData:
    """Held-out labels `targets, known [N, T]` with their column tag ids."""

    tag_ids: tuple[str, ...]
    targets: np.ndarray
    known: np.ndarray

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame, taxonomy: Taxonomy) -> EvalData:
        targets, known = targets_from_manifest(manifest, taxonomy)
        return cls(taxonomy.tag_ids, targets, known)


@dataclass(frozen=True)
class ModelScore:
    """What promotion compares: mAP and the share of precision-target tags that meet it."""

    map: float
    share_meeting_target: float
    n_tags: int  # tags compared with known positives
    n_target_tags: int  # of those, tags with a precision target
    n_images: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in self.__dict__.items()}


def score_model(
    probs: np.ndarray,
    tag_ids: Sequence[str],
    thresholds: np.ndarray,
    report: pd.DataFrame,
    data: EvalData,
    tags: Sequence[str],
) -> ModelScore:
    """Score a model's held-out `probs [N, len(tag_ids)]` on the tags `tags` only.

    A tag with policy "precision" meets its target when its threshold is enabled and its
    precision on `data` is >= the target; nothing predicted counts as not meeting.
    """
    mine, theirs = pd.Index(list(tag_ids)), pd.Index(list(data.tag_ids))
    cols, dcols = mine.get_indexer(pd.Index(tags)), theirs.get_indexer(pd.Index(tags))
    if (cols < 0).any() or (dcols < 0).any():
        raise ValueError("score_model: `tags` must be in both the model's and the data's tags")
    p, y, k = probs[:, cols], data.targets[:, dcols], data.known[:, dcols]
    ap = average_precision(p, y, k)
    s = scores_at_thresholds(p, y, k, np.asarray(thresholds, dtype=np.float32)[cols])
    rep = report.set_index("tag").loc[list(tags)]
    has_pos = s.n_pos > 0
    with_target = has_pos & (rep["policy"].to_numpy() == "precision")
    meets = np.nan_to_num(s.precision, nan=-1.0) >= rep["target"].to_numpy(dtype=np.float64)
    share = float(meets[with_target].mean()) if with_target.any() else math.nan
    return ModelScore(
        map=mean_average_precision(ap),
        share_meeting_target=share,
        n_tags=int(has_pos.sum()),
        n_target_tags=int(with_target.sum()),
        n_images=int(probs.shape[0]),
    )


def decide_promotion(
    candidate: ModelScore, champion: ModelScore | None, tolerance: float = 0.0
) -> tuple[bool, str]:
    """Promote when the candidate does not lose on mAP and on the target share (within
    `tolerance`, absolute). The first model (no champion) is promoted."""
    if champion is None:
        return True, "no current champion: the first registered model becomes champion"
    checks = [
        ("mAP", candidate.map, champion.map),
        (
            "share of tags meeting their precision target",
            candidate.share_meeting_target,
            champion.share_meeting_target,
        ),
    ]
    lost = [
        f"{name} {c:.4f} < champion {ch:.4f}"
        for name, c, ch in checks
        if not math.isnan(ch) and (math.isnan(c) or c < ch - tolerance)
    ]
    if lost:
        return False, "candidate loses: " + "; ".join(lost)
    figures = "; ".join(f"{name} {c:.4f} vs {ch:.4f}" for name, c, ch in checks)
    return True, f"candidate does not lose: {figures}"


def common_tags(*tag_lists: Sequence[str]) -> list[str]:
    """Tags present in every list, in the first list's order."""
    rest = [set(t) for t in tag_lists[1:]]
    return [t for t in tag_lists[0] if all(t in r for r in rest)]
