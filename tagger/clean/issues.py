"""Ranked label issues on known cells only, with cleanlab's multi-label method.

cleanlab's multi-label issue finding (`cleanlab.multilabel_classification.filter`) treats each
class one-vs-rest: a binary confident-learning problem on `[1 - p, p]` per class. Our labels
are not full lists: a tag unknown for an image (its source does not cover the tag) is not a
negative. So we run the same per-class decomposition per *tag on its known rows only*: the
confident thresholds, the confident joint and the issue filter of a tag see only the images
whose value for that tag is known, and an unknown cell can never be flagged nor move another
cell's result. With every cell known this equals
`cleanlab.multilabel_classification.filter.find_multilabel_issues_per_class` (tested).

Two kinds of issues, each with the score that ranked it (cleanlab's self-confidence label
quality: `p` for a labelled positive, `1 - p` for a labelled negative; lower = more suspect):
- `missing`: a known negative the model confidently calls positive (a missed positive);
- `wrong`: a known positive the model confidently calls negative (a wrong positive).

Backends: `cleanlab` calls `cleanlab.filter.find_label_issues` per tag; `numpy` is a vectorised
re-implementation of its `confident_learning` filter for the binary case (the same flags,
tested against cleanlab), for million-image manifests where cleanlab's per-call overhead adds up.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

FilterBy = Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning"]
ISSUE_KINDS = ("missing", "wrong")  # label 0 -> suggested 1; label 1 -> suggested 0
# cleanlab's margin for "the model's prediction equals the given label" (count._reduce_issues)
_FLOAT_MARGIN = 1e-6


class IssueConfig(BaseModel):
    """How label issues are found.

    filter_by: cleanlab's confident-learning filter (`cleanlab.filter.find_label_issues`).
    backend: `cleanlab`, or `numpy` (vectorised, `confident_learning` only).
    min_class_count: a tag needs at least this many known positives and known negatives to be
    checked (confident learning needs both sides to set its thresholds).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    filter_by: FilterBy = "prune_by_noise_rate"
    backend: Literal["cleanlab", "numpy"] = "cleanlab"
    min_class_count: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _numpy_filter(self) -> IssueConfig:
        if self.backend == "numpy" and self.filter_by != "confident_learning":
            raise ValueError(
                f"backend 'numpy' implements filter_by 'confident_learning' only, got "
                f"{self.filter_by!r}; allowed: backend 'cleanlab' with any filter_by"
            )
        return self


@dataclass(frozen=True)
class LabelIssues:
    """Flagged known cells, ranked, and their counts per tag and per image.

    cells: image_id, tag, kind ("missing" | "wrong"), label (0/1), prob (what was ranked),
        image_prob (the image model's own probability; equal to prob unless prob reads the
        label context, `tagger.clean.context`), quality, rank (1 = most suspect overall, by
        quality), tag_rank (within the tag).
    per_tag: tag, known, positives, missing, wrong, checked (False: too few of one class).
    per_image: image_id, issues, worst_quality, tags (the flagged tags, most suspect first).
    """

    cells: pd.DataFrame
    per_tag: pd.DataFrame
    per_image: pd.DataFrame


def tag_label_issues(
    probs: np.ndarray, labels: np.ndarray, config: IssueConfig
) -> tuple[np.ndarray, np.ndarray]:
    """`(is_issue [n] bool, quality [n] float)` for one tag over its known rows.

    probs: `[n]` probabilities of the tag; labels: `[n]` 0/1 given labels (known rows only).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    quality = np.where(y == 1, p, 1.0 - p)  # cleanlab's self-confidence, binary
    if config.backend == "numpy":
        return _confident_learning_binary(p, y), quality
    import cleanlab.filter

    pred_probs = np.column_stack([1.0 - p, p])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns on tiny classes; counts are reported
        mask = cleanlab.filter.find_label_issues(
            labels=y, pred_probs=pred_probs, filter_by=config.filter_by, n_jobs=1
        )
    return np.asarray(mask, dtype=bool), quality


def _confident_learning_binary(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cleanlab's `filter_by="confident_learning"` for pred_probs `[1 - p, p]`, vectorised.

    1. Confident thresholds: mean probability of each class over the rows labelled with it.
    2. A row is confidently class c when its probability of c reaches c's threshold; with both
       classes confident, the larger probability wins (ties: class 0, as numpy's argmax).
    3. Issues: confident rows whose confident class differs from the label ...
    4. ... unless the model's own prediction (with the label given a tiny edge) is the label.
    """
    pos, neg = y == 1, y == 0
    t1 = p[pos].mean() if pos.any() else 2.0  # cleanlab: absent class -> threshold 2
    t0 = (1.0 - p[neg]).mean() if neg.any() else 2.0
    conf0 = (1.0 - p) >= t0 - 1e-6
    conf1 = p >= t1 - 1e-6
    guess = np.where(conf0 & conf1, (p > 1.0 - p).astype(np.int64), conf1.astype(np.int64))
    flagged = (conf0 | conf1) & (guess != y)
    keeps_label = np.where(pos, p + _FLOAT_MARGIN > 1.0 - p, 1.0 - p + _FLOAT_MARGIN >= p)
    return flagged & ~keeps_label


def find_label_issues(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    image_ids: Sequence[str] | np.ndarray,
    tag_ids: Sequence[str],
    config: IssueConfig | None = None,
    image_probs: np.ndarray | None = None,
) -> LabelIssues:
    """Label issues of the known cells of `[N, T]` out-of-fold `probs` vs `targets`.

    probs: float `[N, T]`, out-of-fold (never in-sample); targets: 0/1 `[N, T]`; known: bool
    `[N, T]`, True where the label is known. Unknown cells are never read (not as negatives,
    not for thresholds) and never flagged. image_probs: `[N, T]`, the image model's own
    probabilities when `probs` also read the label context (recorded, not ranked on).
    """
    config = config or IssueConfig()
    n, t = probs.shape
    image_probs = probs if image_probs is None else image_probs
    shapes = (targets.shape, known.shape, image_probs.shape)
    if any(shape != (n, t) for shape in shapes) or len(image_ids) != n:
        raise ValueError(
            f"find_label_issues: probs {probs.shape}, targets {targets.shape}, known "
            f"{known.shape}, image_probs {image_probs.shape}, {len(image_ids)} image ids; all "
            f"must be [N, T] / N"
        )
    if len(tag_ids) != t:
        raise ValueError(f"find_label_issues: {len(tag_ids)} tag ids for {t} columns")
    parts, tag_rows = [], []
    for j, tag in enumerate(tag_ids):
        rows = np.flatnonzero(known[:, j])
        y = (targets[rows, j] > 0.5).astype(np.int64)
        positives = int(y.sum())
        checked = min(positives, len(y) - positives) >= config.min_class_count
        found = {"missing": 0, "wrong": 0}
        if checked:
            mask, quality = tag_label_issues(probs[rows, j], y, config)
            hit = np.flatnonzero(mask)
            if len(hit):
                kinds = np.where(y[hit] == 1, "wrong", "missing")
                found = {k: int((kinds == k).sum()) for k in ISSUE_KINDS}
                parts.append(
                    pd.DataFrame(
                        {
                            "row": rows[hit],
                            "tag": tag,
                            "kind": kinds,
                            "label": y[hit].astype(np.int8),
                            "prob": probs[rows[hit], j].astype(np.float32),
                            "image_prob": image_probs[rows[hit], j].astype(np.float32),
                            "quality": quality[hit].astype(np.float32),
                        }
                    )
                )
        tag_rows.append(
            {"tag": tag, "known": len(y), "positives": positives, **found, "checked": checked}
        )
    cells = _rank_cells(parts, np.asarray(image_ids, dtype=object))
    return LabelIssues(cells, pd.DataFrame(tag_rows), _per_image(cells))


def _rank_cells(parts: list[pd.DataFrame], image_ids: np.ndarray) -> pd.DataFrame:
    columns = [
        "image_id", "tag", "kind", "label", "prob", "image_prob", "quality", "rank", "tag_rank"
    ]  # fmt: skip
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    cells = pd.concat(parts, ignore_index=True)
    cells.insert(0, "image_id", image_ids[cells.pop("row").to_numpy()])
    cells = cells.sort_values(["quality", "image_id", "tag"], kind="stable", ignore_index=True)
    cells["rank"] = np.arange(1, len(cells) + 1)
    cells["tag_rank"] = cells.groupby("tag", sort=False).cumcount() + 1
    return cells[columns]


def _per_image(cells: pd.DataFrame) -> pd.DataFrame:
    if cells.empty:
        return pd.DataFrame({"image_id": [], "issues": [], "worst_quality": [], "tags": []})
    grouped = cells.groupby("image_id", sort=False)  # cells are sorted by quality
    out = pd.DataFrame(
        {
            "issues": grouped.size(),
            "worst_quality": grouped["quality"].min(),
            "tags": grouped["tag"].agg(list),
        }
    ).reset_index()
    return out.sort_values("worst_quality", kind="stable", ignore_index=True)
