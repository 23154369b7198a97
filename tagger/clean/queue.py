"""The review queue: what annotators should look at first, capped per tag.

Items come from four places, one row per (image, tag):
- `missing` / `wrong`: label issues (known cells; `tagger.clean.issues`);
- `conflict`: the model's top-k or the API calls positive a known negative;
- `feedback`: album users contradict a known label;
- `pseudo`: a pseudo label on an unknown cell that was not accepted automatically.

Priority = suspicion x (1 + rarity_weight x rarity):
- suspicion in 0..1: for label issues, the probability that the label is wrong
  (`flip_prob`, `tagger.clean.issues.flip_probability` on the label-context probabilities of
  `tagger.clean.context`); the larger of
  model probability and API score for conflicts and pseudo labels (x `pseudo_weight`, as
  filling a gap matters less than fixing a wrong label), the share of users who disagree for
  feedback;
- rarity in 0..1: `1 - log(1 + positives) / log(1 + most positives)` over the tags' known
  positives, so a suspect cell of a rare tag outranks a common one of equal suspicion.
The queue keeps at most `max_per_tag` items per tag (rare tags get reviewed too) and
`max_items` in all. A cell listed by several places is one item with all reasons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

QUEUE_KINDS = ("missing", "wrong", "conflict", "feedback", "pseudo")
QUEUE_COLUMNS = [
    "rank",
    "image_id",
    "tag",
    "kind",
    "current",
    "suggested",
    "priority",
    "quality",
    "model_prob",
    "api_score",
    "reasons",
]


class QueueConfig(BaseModel):
    """Size and ordering of the review queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_per_tag: int = Field(default=50, ge=1)
    max_items: int = Field(default=1000, ge=1)
    rarity_weight: float = Field(default=1.0, ge=0.0)
    pseudo_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    include_pseudo: bool = True


def tag_rarity(positives: pd.Series) -> pd.Series:
    """Rarity in 0..1 per tag from its known positives (0: the most common tag)."""
    top = float(np.log1p(max(int(positives.max()), 1))) if len(positives) else 1.0
    rarity = 1.0 - np.log1p(positives.clip(lower=0).to_numpy(dtype=float)) / top
    return pd.Series(rarity, index=positives.index)


def build_review_queue(
    issues: pd.DataFrame,
    conflicts: pd.DataFrame,
    feedback_conflicts: pd.DataFrame,
    pseudo: pd.DataFrame,
    positives: pd.Series,
    config: QueueConfig | None = None,
) -> pd.DataFrame:
    """The ranked, capped queue (columns `QUEUE_COLUMNS`, rank 1 first).

    issues: `LabelIssues.cells`; conflicts / pseudo: `PseudoLabels` frames; feedback_conflicts:
    from `split_feedback` (value, label, votes, users); positives: known positives per tag
    (index: tag id).
    """
    config = config or QueueConfig()
    items = [_from_issues(issues), _from_suggestions(conflicts, "conflict", 1.0)]
    items.append(_from_feedback(feedback_conflicts))
    if config.include_pseudo:
        waiting = pseudo[~pseudo["accepted"]] if "accepted" in pseudo else pseudo
        items.append(_from_suggestions(waiting, "pseudo", config.pseudo_weight))
    items = [i for i in items if not i.empty]
    if not items:
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    frame = pd.concat(items, ignore_index=True)
    rarity = frame["tag"].map(tag_rarity(positives)).fillna(1.0)
    frame["priority"] = frame["suspicion"] * (1.0 + config.rarity_weight * rarity)
    frame = _merge_same_cell(frame)
    frame = frame.sort_values(["priority", "image_id", "tag"], ascending=[False, True, True])
    frame = frame[frame.groupby("tag", sort=False).cumcount() < config.max_per_tag]
    frame = frame.head(config.max_items).reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame[QUEUE_COLUMNS]


def _frame(n: int, **columns: object) -> pd.DataFrame:
    base = {"quality": np.nan, "model_prob": np.nan, "api_score": np.nan}
    return pd.DataFrame(base | columns, index=range(n))


def _from_issues(cells: pd.DataFrame) -> pd.DataFrame:
    if cells.empty:
        return pd.DataFrame()
    wrong = cells["kind"].to_numpy() == "wrong"
    reason = [
        f"labelled {'positive' if w else 'negative'}, model (out-of-fold) says {_says(p, i)}; "
        f"P(label wrong) {f:.2f}{_FOUND_BY.get(b, '')}"
        for w, p, i, f, b in zip(
            wrong,
            cells["prob"],
            cells["image_prob"],
            cells["flip_prob"],
            cells["found_by"],
            strict=True,
        )
    ]
    return _frame(
        len(cells),
        image_id=cells["image_id"].to_numpy(),
        tag=cells["tag"].to_numpy(),
        kind=cells["kind"].to_numpy(),
        current=np.where(wrong, "positive", "negative"),
        suggested=np.where(wrong, "negative", "positive"),
        suspicion=cells["flip_prob"].to_numpy(dtype=float),
        quality=cells["quality"].to_numpy(dtype=float),
        model_prob=cells["prob"].to_numpy(dtype=float),
        reasons=reason,
    )


_FOUND_BY = {"posterior": "; cleanlab's filter did not flag it"}


def _says(prob: float, image_prob: float) -> str:
    """ "0.83", or how the image's other labels moved the image model's score."""
    if abs(prob - image_prob) < 0.005:
        return f"{prob:.2f}"
    return f"{prob:.2f} with the image's other labels (image alone {image_prob:.2f})"


def _from_suggestions(frame: pd.DataFrame, kind: str, weight: float) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame()
    model = frame["model_prob"].to_numpy(dtype=float)
    api = frame["api_score"].to_numpy(dtype=float)
    reasons = [
        "; ".join(
            ([f"model top-k {m:.2f}"] if not np.isnan(m) else [])
            + ([f"API {a:.2f}"] if not np.isnan(a) else [])
        )
        for m, a in zip(model, api, strict=True)
    ]
    return _frame(
        len(frame),
        image_id=frame["image_id"].to_numpy(),
        tag=frame["tag"].to_numpy(),
        kind=kind,
        current="negative" if kind == "conflict" else "unknown",
        suggested="positive",
        suspicion=weight * np.fmax(model, api),
        model_prob=model,
        api_score=api,
        reasons=[f"{'contradicts label: ' if kind == 'conflict' else ''}{r}" for r in reasons],
    )


def _from_feedback(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame()
    value = frame["value"].to_numpy()
    return _frame(
        len(frame),
        image_id=frame["image_id"].to_numpy(),
        tag=frame["tag"].to_numpy(),
        kind="feedback",
        current=np.where(value == 1, "negative", "positive"),
        suggested=np.where(value == 1, "positive", "negative"),
        suspicion=1.0,
        reasons=[
            f"{v} album user(s) {'accepted' if x == 1 else 'rejected'} it ({u})"
            for v, x, u in zip(frame["votes"], value, frame["users"], strict=True)
        ],
    )


def _merge_same_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """One item per (image, tag): the highest-priority row, with every row's reasons."""
    frame = frame.sort_values("priority", ascending=False, kind="stable")
    reasons = frame.groupby(["image_id", "tag"], sort=False)["reasons"].agg(
        lambda r: " | ".join(dict.fromkeys(r))
    )
    first = frame.drop_duplicates(["image_id", "tag"], keep="first").set_index(["image_id", "tag"])
    for column in ("model_prob", "api_score", "quality"):
        first[column] = frame.groupby(["image_id", "tag"], sort=False)[column].max()
    first["reasons"] = reasons
    return first.reset_index()
