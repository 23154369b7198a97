"""Reviewed decisions back into the labels: Label Studio exports and plain CSV.

Both readers return decisions: image_id, tag, new ("positive" | "negative" | "unknown"),
source (file and task or row), reviewer, decided_at, manifest_sha256 ("" when not given),
where (for error messages). `check_decisions` refuses unknown images, unknown tags and decisions
made against another manifest (a stale base: its sha256 differs), naming the row;
`decisions_to_changes` turns them into label changes of kind `reviewed`
(`tagger.clean.changes.apply_label_changes`).

CSV: a header with at least `image_id,tag,decision`; optional `reviewer`, `decided_at`,
`manifest_sha256`, `note`, and `suggested` (the queue's column: it lets `decision` be
`accept`/`reject` of the suggestion). Decision values: positive (yes, 1, present, true),
negative (no, 0, absent, false), unknown (can't tell); `skip` or empty rows are ignored.
The queue CSV that `tagger review export` writes is such a file with an empty `decision`.
"""

from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from label_system.taxonomy import Taxonomy
from tagger.clean.export import LS_FROM_NAME

DECISION_COLUMNS = [
    "image_id",
    "tag",
    "new",
    "source",
    "reviewer",
    "decided_at",
    "manifest_sha256",
    "note",
    "where",
]
_VALUES = {
    **dict.fromkeys(("positive", "yes", "1", "present", "true", "y"), "positive"),
    **dict.fromkeys(("negative", "no", "0", "absent", "false", "n"), "negative"),
    **dict.fromkeys(("unknown", "unsure", "can't tell", "cant_tell"), "unknown"),
}
_SKIP = ("", "skip")


class ReviewImportError(ValueError):
    """A decision that cannot be applied: names the file and row and what is allowed."""


def read_decisions_csv(path: str | Path) -> pd.DataFrame:
    """Decisions from a CSV (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"decisions CSV not found: {path}")
    out: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("image_id", "tag", "decision") if c not in (reader.fieldnames or [])]
        if missing:
            raise ReviewImportError(
                f"{path}: missing columns {missing}; required: image_id,tag,decision"
            )
        for number, row in enumerate(reader, 2):  # line 1 is the header
            where = f"{path}:{number}"
            decision = (row.get("decision") or "").strip().lower()
            if decision in _SKIP:
                continue
            new = _csv_value(decision, (row.get("suggested") or "").strip().lower(), where)
            out.append(
                {
                    "image_id": (row.get("image_id") or "").strip(),
                    "tag": (row.get("tag") or "").strip(),
                    "new": new,
                    "source": f"csv:{path.name}:{number}",
                    "reviewer": (row.get("reviewer") or "").strip(),
                    "decided_at": (row.get("decided_at") or "").strip(),
                    "manifest_sha256": (row.get("manifest_sha256") or "").strip(),
                    "note": (row.get("note") or "").strip(),
                    "where": where,
                }
            )
    return pd.DataFrame(out, columns=DECISION_COLUMNS)


def _csv_value(decision: str, suggested: str, where: str) -> str:
    if decision in ("accept", "reject"):
        if suggested not in ("positive", "negative"):
            raise ReviewImportError(
                f"{where}: decision {decision!r} needs a 'suggested' column of positive/negative "
                f"(got {suggested!r}); or write positive / negative / unknown"
            )
        flip = {"positive": "negative", "negative": "positive"}
        return suggested if decision == "accept" else flip[suggested]
    if decision not in _VALUES:
        raise ReviewImportError(
            f"{where}: decision {decision!r}; allowed: positive, negative, unknown, skip "
            "(or accept/reject with a 'suggested' column)"
        )
    return _VALUES[decision]


def read_label_studio_export(path: str | Path) -> pd.DataFrame:
    """Decisions from a Label Studio JSON export of tasks made by `label_studio_tasks`.

    Per task, the latest annotation that was not cancelled counts; every tag offered in
    `data.review_tags` is positive when ticked, negative when not; a tag ticked that was not
    offered is positive. Tasks without an annotation are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label Studio export not found: {path}")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ReviewImportError(
            f"{path}: not valid JSON ({error.msg}, line {error.lineno})"
        ) from None
    if not isinstance(tasks, list):
        raise ReviewImportError(
            f"{path}: expected a JSON list of tasks (Label Studio 'JSON' export)"
        )
    out: list[dict[str, Any]] = []
    for index, task in enumerate(tasks):
        where = f"{path}: task {task.get('id', index) if isinstance(task, dict) else index}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or "image_id" not in data:
            raise ReviewImportError(
                f"{where}: no data.image_id (not a task of tagger review export)"
            )
        annotation = _latest_annotation(task.get("annotations") or [])
        if annotation is None:
            continue
        offered = [str(o.get("value")) for o in data.get("review_tags") or []]
        chosen = _chosen(annotation.get("result") or [], where)
        reviewer = annotation.get("completed_by")
        if isinstance(reviewer, dict):
            reviewer = reviewer.get("email") or reviewer.get("id")
        for tag in dict.fromkeys([*offered, *chosen]):
            out.append(
                {
                    "image_id": str(data["image_id"]),
                    "tag": tag,
                    "new": "positive" if tag in chosen else "negative",
                    "source": f"labelstudio:{path.name}#task={task.get('id', index)}",
                    "reviewer": "" if reviewer is None else str(reviewer),
                    "decided_at": str(
                        annotation.get("updated_at") or annotation.get("created_at") or ""
                    ),
                    "manifest_sha256": str(data.get("manifest_sha256") or ""),
                    "note": "",
                    "where": where,
                }
            )
    return pd.DataFrame(out, columns=DECISION_COLUMNS)


def _latest_annotation(annotations: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))


def _chosen(result: list[dict[str, Any]], where: str) -> list[str]:
    chosen: list[str] = []
    for item in result:
        if item.get("from_name") != LS_FROM_NAME or item.get("type") != "choices":
            continue
        choices = (item.get("value") or {}).get("choices")
        if not isinstance(choices, list):
            raise ReviewImportError(
                f"{where}: result value.choices must be a list, got {choices!r}"
            )
        chosen += [str(c) for c in choices]
    return chosen


def check_decisions(
    decisions: pd.DataFrame, manifest: pd.DataFrame, taxonomy: Taxonomy, manifest_sha256: str
) -> None:
    """Raise ReviewImportError naming the first row with an unknown image or tag, or made
    against another manifest version than the one given (sha256 mismatch)."""
    ids = set(manifest["image_id"])
    for row in decisions.to_dict("records"):
        where = row["where"]
        if row["manifest_sha256"] and row["manifest_sha256"] != manifest_sha256:
            raise ReviewImportError(
                f"{where}: made against manifest sha256 {row['manifest_sha256'][:12]}..., but the "
                f"base manifest given has {manifest_sha256[:12]}...: the base is stale or not the "
                "one reviewed; import against the manifest version the queue was exported from"
            )
        if row["image_id"] not in ids:
            raise ReviewImportError(f"{where}: image_id {row['image_id']!r} is not in the manifest")
        if row["tag"] not in taxonomy:
            close = difflib.get_close_matches(row["tag"], list(taxonomy.tag_ids), n=3)
            raise ReviewImportError(
                f"{where}: tag {row['tag']!r} is not in taxonomy {taxonomy.name!r}"
                + (f"; close matches: {close}" if close else "")
            )


def decisions_to_changes(decisions: pd.DataFrame) -> pd.DataFrame:
    """Label changes (kind `reviewed`) for `apply_label_changes`, in file order."""
    changes = decisions.drop(columns=["where", "manifest_sha256"]).copy()
    changes["kind"] = "reviewed"
    return changes
