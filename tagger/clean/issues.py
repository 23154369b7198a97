"""Ranked label issues on known cells only, with cleanlab's multi-label method.

cleanlab's multi-label issue finding (`cleanlab.multilabel_classification.filter`) treats each
class one-vs-rest: a binary confident-learning problem on `[1 - p, p]` per class. Our labels
are not full lists: a tag unknown for an image (its source does not cover the tag) is not a
negative. So we run the same per-class decomposition per *tag on its known rows only*: the
confident thresholds, the confident joint and the issue filter of a tag see only the images
whose value for that tag is known, and an unknown cell can never be flagged nor move another
cell's result. With every cell known (and `min_flip_prob` None) this equals
`cleanlab.multilabel_classification.filter.find_multilabel_issues_per_class` (tested).

Two kinds of issues:
- `missing`: a known negative the model confidently calls positive (a missed positive);
- `wrong`: a known positive the model confidently calls negative (a wrong positive).

Each carries cleanlab's self-confidence label quality (`p` for a labelled positive, `1 - p` for
a labelled negative) and the score that ranks it, `flip_prob`: the probability that the label
is wrong (`flip_probability`). Self-confidence alone ranks the two kinds as if a label were as
likely to be a wrong positive as a missed one. They are not: annotators leave out far more
present tags than they add absent ones, and a tag is absent from most photos. So a labelled
positive of a rare tag that the model puts at 0.02 is usually right (its tag is rare, and false
positives are rare), while a labelled negative it puts at 0.9 is usually a missed positive. With
10% of the shared data's known positives dropped and false positives added on 0.5% of its known
negatives (`bench/cleaning_noise.py`, default priors), the 1,000-item queue held 664 injected
flips ranked by `flip_prob`, against 435 in self-confidence order.

A cell is an issue when cleanlab's filter flags it, or when its probability is calibrated and
its `flip_prob` reaches `min_flip_prob` (default 0.5: the label is more likely wrong than
right); `found_by` says which rule flagged it, or "both". cleanlab's filter removes, per tag, as
many cells as its confident joint counts, and it counts a labelled negative only when its score
reaches the *mean* score of the tag's labelled positives. With the label context those run high
(a photo labelled `dog` puts `animal` at 0.95), so a common tag's missed positive at 0.87 is
never counted, however sure the posterior is. On the cleaning benchmark the posterior rule added
105 cells that the filter had left: 76 labelled negatives, every one an injected flip, and 29
labelled positives, none of them one. The 1,000-item queue went from 0.50 to 0.52 of the flips
at precision 0.66 -> 0.69 (on both halves of the pool, and with a second cross-fit model alike;
on a second noise seed from 0.47 to 0.50).
The posterior reads a score as the probability of a positive label, so it needs calibrated
scores: the label-context regression's are (a logistic regression fitted on these labels); the
focal-loss image model's are not (its common tags' labelled positives sit near 0.5). On the
image model's own scores the same rule flagged 974 labelled positives, none of them a flip, and
halved the queue's recall; hence the rule reads only cells marked `calibrated`.
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
_COUNT_ROWS = 65_536  # rows per block when counting over [N, T]


class IssueConfig(BaseModel):
    """How label issues are found.

    filter_by: cleanlab's confident-learning filter (`cleanlab.filter.find_label_issues`).
    backend: `cleanlab`, or `numpy` (vectorised, `confident_learning` only).
    min_class_count: a tag needs at least this many known positives and known negatives to be
    checked (confident learning needs both sides to set its thresholds).
    missing_rate / false_positive_share: the label noise expected before any review (priors of
    `flip_probability`; set them from a review round's decisions when you have one):
    missing_rate is the share of present tags left unlabelled; false_positive_share the share
    of the labelled positives that are wrong. The defaults say "annotators leave out 1 in 10
    present tags, and 1 in 20 of the tags they mark is wrong".
    false_positive_spread: where those wrong positives fall (`false_positive_rate`). Some come
    with a tag's use (a crawl for "dog", a mapping of a look-alike), so a rare tag has few;
    others are slips (a mis-click, a photo filed under the wrong keyword) that land on any
    absent cell alike, so a rare tag's few positives hold as many as a common tag's. This is the
    share of the slips: 0 (default) puts every wrong positive in proportion to its tag's
    positives, 1 spreads them all evenly over absent cells. Where a model cannot see a rare tag,
    its labelled positives score low whether right or not, and this prior alone decides how
    suspect they are. On the shared data's real labels, 0.5 put 17 rare-tag positives among the
    queue's first 20; in 15 of them the tag's object is there to see (two tennis rackets, trays
    of donuts), and none is plainly wrong. On noise injected evenly over known negatives
    (`bench/cleaning_noise.py`), 1 raised the queue's share of the flips from 0.52 to 0.55.
    min_flip_prob: a known cell of a checked tag whose P(label wrong) reaches this is an issue
    even where cleanlab's filter leaves it, if its probability is calibrated (the label-context
    regression scored it); None: cleanlab's filter alone decides.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    filter_by: FilterBy = "prune_by_noise_rate"
    backend: Literal["cleanlab", "numpy"] = "cleanlab"
    min_class_count: int = Field(default=2, ge=1)
    missing_rate: float = Field(default=0.10, gt=0.0, lt=0.5)
    false_positive_share: float = Field(default=0.05, gt=0.0, lt=0.5)
    false_positive_spread: float = Field(default=0.0, ge=0.0, le=1.0)
    min_flip_prob: float | None = Field(default=0.5, gt=0.0, le=1.0)

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

    cells: image_id, tag, kind ("missing" | "wrong"), label (0/1), prob (the probability
        judged), image_prob (the image model's own probability; equal to prob unless prob reads
        the label context, `tagger.clean.context`), quality (cleanlab's self-confidence),
        flip_prob (P(label wrong), what ranks), rank (1 = most suspect overall), tag_rank
        (within the tag), found_by ("cleanlab": its filter flagged the cell; "posterior":
        flip_prob reached `min_flip_prob` alone; "both").
    per_tag: tag, known, positives, missing, wrong, checked (False: too few of one class).
    per_image: image_id, issues, max_flip_prob, tags (the flagged tags, most suspect first).
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


def flip_probability(
    probs: np.ndarray,
    labels: np.ndarray,
    missing_rate: float,
    false_positive_rate: float | np.ndarray,
) -> np.ndarray:
    """P(the given label is wrong), per cell, under class-conditional label noise.

    probs: `[...]` out-of-fold probabilities of a positive *label* (the model learnt from noisy
    labels); labels: 0/1, same shape; false_positive_rate: a float, or an array broadcasting
    against probs (a rate per tag). With d = missing_rate = P(label 0 | present) and
    a = false_positive_rate = P(label 1 | absent), the probability that the tag is present is
    `pi = (p - a) / (1 - d - a)` (clipped into (0, 1)), and by Bayes
    - labelled 1: P(absent | label 1) = (1 - pi) a / ((1 - pi) a + pi (1 - d));
    - labelled 0: P(present | label 0) = pi d / (pi d + (1 - pi) (1 - a)).
    A score below a (or above 1 - d) is more extreme than the noise allows: it saturates at 1.
    """
    d, a = float(missing_rate), np.asarray(false_positive_rate, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    present = np.clip((p - a) / (1.0 - d - a), 1e-9, 1.0 - 1e-9)
    wrong_positive = (1 - present) * a / ((1 - present) * a + present * (1 - d))
    missed_positive = present * d / (present * d + (1 - present) * (1 - a))
    return np.where(np.asarray(labels) > 0.5, wrong_positive, missed_positive)


def false_positive_rate(
    positives: int, known: int, config: IssueConfig, overall: float | None = None
) -> float:
    """A tag's P(label 1 | absent), at most 0.5: `false_positive_share` of the positives are
    wrong, of which `1 - false_positive_spread` fall on this tag's negatives in proportion to
    its positives (rate `share x positives / negatives`) and `false_positive_spread` on every
    absent cell alike (rate `share x overall`). overall: known positives per known negative over
    all tags (None: this tag's own ratio, so the spread makes no difference)."""
    own = positives / max(known - positives, 1)
    even = own if overall is None else overall
    spread = config.false_positive_spread
    return min(config.false_positive_share * ((1.0 - spread) * own + spread * even), 0.5)


def positives_per_negative(targets: np.ndarray, known: np.ndarray) -> float:
    """Known positives per known negative over every cell (`false_positive_rate`'s overall),
    counted over blocks of rows: no `[N, T]` temporary."""
    positives = labelled = 0
    for start in range(0, len(targets), _COUNT_ROWS):
        block = known[start : start + _COUNT_ROWS]
        positives += int(np.count_nonzero((targets[start : start + _COUNT_ROWS] > 0.5) & block))
        labelled += int(np.count_nonzero(block))
    return positives / max(labelled - positives, 1)


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
    calibrated: np.ndarray | None = None,
) -> LabelIssues:
    """Label issues of the known cells of `[N, T]` out-of-fold `probs` vs `targets`.

    probs: float `[N, T]`, out-of-fold (never in-sample); targets: 0/1 `[N, T]`; known: bool
    `[N, T]`, True where the label is known. Unknown cells are never read (not as negatives,
    not for thresholds) and never flagged. image_probs: `[N, T]`, the image model's own
    probabilities when `probs` also read the label context (recorded, not ranked on).
    calibrated: bool `[N, T]`, True where `probs` are calibrated probabilities of a positive
    label (`tagger.clean.context.label_context`'s fitted cells): only there can `min_flip_prob`
    flag a cell (None: nowhere). With `false_positive_spread` above 0, the even part of a tag's
    false-positive rate reads the positives per negative of all the tags given: pass them all
    in one call.
    """
    config = config or IssueConfig()
    n, t = probs.shape
    image_probs = probs if image_probs is None else image_probs
    threshold = config.min_flip_prob  # the posterior rule; it reads calibrated cells only
    shapes = [targets.shape, known.shape, image_probs.shape]
    shapes += [calibrated.shape] if calibrated is not None else []
    if any(shape != (n, t) for shape in shapes) or len(image_ids) != n:
        calibrated_shape = None if calibrated is None else calibrated.shape
        raise ValueError(
            f"find_label_issues: probs {probs.shape}, targets {targets.shape}, known "
            f"{known.shape}, image_probs {image_probs.shape}, calibrated {calibrated_shape}, "
            f"{len(image_ids)} image ids; all must be [N, T] / N"
        )
    if len(tag_ids) != t:
        raise ValueError(f"find_label_issues: {len(tag_ids)} tag ids for {t} columns")
    spread = config.false_positive_spread > 0  # it reads the positives per negative of all tags
    overall = positives_per_negative(targets, known) if spread else None
    parts, tag_rows = [], []
    for j, tag in enumerate(tag_ids):
        rows = np.flatnonzero(known[:, j])
        y = (targets[rows, j] > 0.5).astype(np.int64)
        positives = int(y.sum())
        checked = min(positives, len(y) - positives) >= config.min_class_count
        found = {"missing": 0, "wrong": 0}
        if checked:
            p = probs[rows, j]
            mask, quality = tag_label_issues(p, y, config)
            fpr = false_positive_rate(positives, len(y), config, overall)
            if threshold is not None and calibrated is not None:  # the rule reads every row
                flip = flip_probability(p, y, config.missing_rate, fpr)
                by_posterior = (flip >= threshold) & calibrated[rows, j]
                hit = np.flatnonzero(mask | by_posterior)
                flip = flip[hit]
            else:  # only the flagged rows' (the ranking's)
                by_posterior = np.zeros(len(y), bool)
                hit = np.flatnonzero(mask)
                flip = flip_probability(p[hit], y[hit], config.missing_rate, fpr)
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
                            "prob": p[hit].astype(np.float32),
                            "image_prob": image_probs[rows[hit], j].astype(np.float32),
                            "quality": quality[hit].astype(np.float32),
                            "flip_prob": flip.astype(np.float32),
                            "found_by": np.where(
                                mask[hit],
                                np.where(by_posterior[hit], "both", "cleanlab"),
                                "posterior",
                            ),
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
        "image_id", "tag", "kind", "label", "prob", "image_prob", "quality", "flip_prob", "rank",
        "tag_rank", "found_by",
    ]  # fmt: skip
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    cells = pd.concat(parts, ignore_index=True)
    cells.insert(0, "image_id", image_ids[cells.pop("row").to_numpy()])
    cells = cells.sort_values(
        ["flip_prob", "quality", "image_id", "tag"],
        ascending=[False, True, True, True],
        kind="stable",
        ignore_index=True,
    )
    cells["rank"] = np.arange(1, len(cells) + 1)
    cells["tag_rank"] = cells.groupby("tag", sort=False).cumcount() + 1
    return cells[columns]


def _per_image(cells: pd.DataFrame) -> pd.DataFrame:
    if cells.empty:
        return pd.DataFrame({"image_id": [], "issues": [], "max_flip_prob": [], "tags": []})
    grouped = cells.groupby("image_id", sort=False)  # cells are in rank order
    out = pd.DataFrame(
        {
            "issues": grouped.size(),
            "max_flip_prob": grouped["flip_prob"].max(),
            "tags": grouped["tag"].agg(list),
        }
    ).reset_index()
    return out  # groupby(sort=False) keeps first appearance: the image's best rank
