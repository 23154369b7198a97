"""Album users' accept/reject of predicted tags (JSON lines) as label evidence.

The format, one JSON object per line (blank lines are skipped)::

    {"image_id": "2b9eb276eed6eb3a", "tag": "dog", "decision": "accept",
     "user": "u-1842", "time": "2026-11-30T10:15:00Z"}
    {"content_hash": "<sha256 hex of the file>", "tag": "beach", "decision": "reject",
     "user": "u-77", "time": "2026-11-30T10:16:02Z", "job": "album-2026-11-30"}

- `image_id` (the manifest's id) or `content_hash` (sha256 of the photo's bytes): one required;
- `tag`: a tag id, display name or alias of the taxonomy;
- `decision`: `accept` (the tag is right: positive) or `reject` (wrong: negative);
- `user`, `time` (ISO 8601): required; `job`, `score`: optional, kept as notes.

Several users on the same photo and tag: the majority decides; a tie is no evidence. The
evidence then fills *unknown* cells of the manifest (provenance kind `feedback`) for the next
retrain, and where it contradicts a known label the pair goes to the review queue.
Photos that are not in the training manifest cannot teach anything and are reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from label_system.taxonomy import Taxonomy

DECISIONS = {"accept": 1, "reject": 0}
FEEDBACK_COLUMNS = ["image_id", "tag", "value", "user", "time", "source"]


@dataclass(frozen=True)
class Feedback:
    """Parsed feedback: one row per usable line, and lines that could not be used.

    rows: image_id, tag, value (1 accept / 0 reject), user, time, source ("file:line").
    problems: "file:line: reason" for each skipped line (photo not in the manifest ...).
    """

    rows: pd.DataFrame
    problems: list[str]


def read_feedback(
    paths: list[Path] | list[str], manifest: pd.DataFrame, taxonomy: Taxonomy
) -> Feedback:
    """Read feedback JSON lines files against a manifest and taxonomy.

    A malformed line (bad JSON, missing field, unknown decision or tag) raises ValueError naming
    the file and line: the producer is broken. A photo not in the manifest is a problem, not an
    error: users tag photos that were never training data.
    """
    by_id = set(manifest["image_id"])
    by_hash = {
        h: i for h, i in zip(manifest["content_hash"], manifest["image_id"], strict=True) if h
    }
    rows: list[dict[str, object]] = []
    problems: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"feedback file not found: {path}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            record = _parse_line(line, where, taxonomy)
            image_id = record.get("image_id")
            if image_id is None or image_id not in by_id:
                image_id = by_hash.get(str(record.get("content_hash") or ""))
                if image_id is None:
                    key = record.get("image_id") or record.get("content_hash")
                    problems.append(f"{where}: photo {key!r} is not in the manifest; skipped")
                    continue
            rows.append(
                {
                    "image_id": image_id,
                    "tag": record["tag"],
                    "value": DECISIONS[str(record["decision"])],
                    "user": record["user"],
                    "time": record["time"],
                    "source": where,
                }
            )
    return Feedback(pd.DataFrame(rows, columns=FEEDBACK_COLUMNS), problems)


def _parse_line(line: str, where: str, taxonomy: Taxonomy) -> dict[str, object]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not record.get("image_id") and not record.get("content_hash"):
        raise ValueError(f"{where}: needs 'image_id' or 'content_hash'")
    for field in ("tag", "decision", "user", "time"):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise ValueError(f"{where}: field {field!r} must be a non-empty string")
    if record["decision"] not in DECISIONS:
        raise ValueError(f"{where}: decision {record['decision']!r}; allowed: {sorted(DECISIONS)}")
    tag = taxonomy.resolve(record["tag"])
    if tag is None:
        raise ValueError(f"{where}: tag {record['tag']!r} is not in taxonomy {taxonomy.name!r}")
    try:
        datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: time {record['time']!r} is not ISO 8601") from None
    return record | {"tag": tag}


def feedback_evidence(rows: pd.DataFrame) -> pd.DataFrame:
    """One verdict per (image, tag): image_id, tag, value (1/0), votes, users, sources.

    The majority of users decides (a user's latest line counts once); ties are dropped.
    """
    if rows.empty:
        return pd.DataFrame(columns=["image_id", "tag", "value", "votes", "users", "sources"])
    latest = rows.sort_values("time", kind="stable").drop_duplicates(
        ["image_id", "tag", "user"], keep="last"
    )
    grouped = latest.groupby(["image_id", "tag"], sort=True)
    out = grouped.agg(
        accepts=("value", "sum"),
        votes=("value", "size"),
        users=("user", lambda s: ",".join(sorted(set(s)))),
        sources=("source", lambda s: ";".join(s)),
    ).reset_index()
    out = out[2 * out["accepts"] != out["votes"]].copy()  # a tie is no evidence
    out["value"] = (2 * out["accepts"] > out["votes"]).astype(np.int8)
    return out[["image_id", "tag", "value", "votes", "users", "sources"]].reset_index(drop=True)


def split_feedback(
    evidence: pd.DataFrame,
    targets: np.ndarray,
    known: np.ndarray,
    image_ids: np.ndarray,
    tag_ids: tuple[str, ...],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(fills, conflicts)`: verdicts on unknown cells, and verdicts contradicting a known label
    (with `label`, the current value). Verdicts that agree with the label are dropped."""
    rows = pd.Index(np.asarray(image_ids, dtype=object)).get_indexer(pd.Index(evidence["image_id"]))
    cols = pd.Index(list(tag_ids)).get_indexer(pd.Index(evidence["tag"]))
    is_known = known[rows, cols] if len(evidence) else np.zeros(0, bool)
    label = (targets[rows, cols] > 0.5).astype(np.int8) if len(evidence) else np.zeros(0, np.int8)
    fills = evidence[~is_known].reset_index(drop=True)
    conflicting = is_known & (label != evidence["value"].to_numpy())
    conflicts = evidence[conflicting].copy()
    conflicts["label"] = label[conflicting]
    return fills, conflicts.reset_index(drop=True)
