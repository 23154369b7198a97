"""The review queue: ranked by suspicion and rarity, capped per tag, one item per cell."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tagger.clean.queue import QUEUE_COLUMNS, QueueConfig, build_review_queue, tag_rarity

EMPTY_SUGGESTIONS = pd.DataFrame(columns=["image_id", "tag", "model_prob", "api_score", "accepted"])
EMPTY_FEEDBACK = pd.DataFrame(columns=["image_id", "tag", "value", "votes", "users"])


def issues(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """(image, tag, kind, quality) -> LabelIssues.cells."""
    frame = pd.DataFrame(rows, columns=["image_id", "tag", "kind", "quality"])
    frame["label"] = (frame["kind"] == "wrong").astype(int)
    frame["prob"] = np.where(frame["label"] == 1, frame["quality"], 1 - frame["quality"])
    frame["image_prob"] = frame["prob"]
    frame["flip_prob"] = 1 - frame["quality"]  # the queue ranks label issues on flip_prob
    frame["found_by"] = "cleanlab"
    return frame


def test_rarity_in_unit_range() -> None:
    rarity = tag_rarity(pd.Series({"common": 1000, "rare": 3, "none": 0}))
    assert rarity["common"] == 0.0 and rarity["none"] == 1.0 and 0 < rarity["rare"] < 1


def test_rare_tags_first_at_equal_suspicion_and_caps() -> None:
    cells = issues(
        [(f"c{i}", "common", "missing", 0.1) for i in range(5)]
        + [("r0", "rare", "wrong", 0.1), ("r1", "rare", "missing", 0.3)]
    )
    positives = pd.Series({"common": 500, "rare": 5})
    queue = build_review_queue(
        cells, EMPTY_SUGGESTIONS, EMPTY_FEEDBACK, EMPTY_SUGGESTIONS, positives,
        QueueConfig(max_per_tag=3, max_items=5),
    )  # fmt: skip
    assert list(queue.columns) == QUEUE_COLUMNS
    assert queue["tag"].tolist() == ["rare", "rare", "common", "common", "common"]
    assert queue["rank"].tolist() == [1, 2, 3, 4, 5]
    first = queue.iloc[0]
    assert (first["current"], first["suggested"]) == ("positive", "negative")
    assert (queue["priority"].diff().dropna() <= 0).all()


def test_one_item_per_cell_with_every_reason_and_pseudo_weighted_down() -> None:
    cells = issues([("a", "dog", "missing", 0.2)])
    conflicts = pd.DataFrame(
        {"image_id": ["a"], "tag": ["dog"], "model_prob": [0.8], "api_score": [0.9]}
    )
    pseudo = pd.DataFrame(
        {"image_id": ["b"], "tag": ["dog"], "model_prob": [0.9], "api_score": [np.nan],
         "accepted": [False]}
    )  # fmt: skip
    accepted = pseudo.assign(image_id="c", accepted=True)
    queue = build_review_queue(
        cells, conflicts, EMPTY_FEEDBACK, pd.concat([pseudo, accepted]), pd.Series({"dog": 10})
    )
    assert queue[["image_id", "kind"]].values.tolist() == [["a", "conflict"], ["b", "pseudo"]]
    assert "model (out-of-fold) says 0.80" in queue.iloc[0]["reasons"]
    assert "API 0.90" in queue.iloc[0]["reasons"]
    assert queue.iloc[1]["current"] == "unknown"  # accepted pseudo labels are not queued


def test_nothing_to_review() -> None:
    empty = issues([])
    queue = build_review_queue(
        empty, EMPTY_SUGGESTIONS, EMPTY_FEEDBACK, EMPTY_SUGGESTIONS, pd.Series(dtype=float)
    )
    assert queue.empty and list(queue.columns) == QUEUE_COLUMNS
