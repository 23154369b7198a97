"""Label changes applied to a manifest as a new manifest version, every change logged.

A change sets one cell (image, tag) to `positive`, `negative` or `unknown`. The manifest's
rows are copied, never edited in place, and the base file is never overwritten: a version is a
folder with the new `manifest.parquet`, `changes.csv` (image_id, tag, old, new, kind, source,
reviewer, decided_at, applied_at, note: one row per cell that changed) and `version.json` (the
base manifest's path and sha256, this manifest's sha256, when, how many changes).

Each changed cell gets a provenance row `{tag, source, source_label: None, kind}` appended
(`reviewed` for annotators' decisions, `pseudo` for accepted pseudo labels, `feedback` for album
users' accept/reject); earlier rows stay, so the last provenance row of a tag is the one that
set its current value. A positive also makes the tag's ancestors positive (kind `implied`), as
assembly does, and those are logged too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from label_system.taxonomy import Taxonomy
from tagger.data.images import hash_file
from tagger.data.manifest import PROVENANCE_KINDS, write_manifest

CellValue = Literal["positive", "negative", "unknown"]
CELL_VALUES: tuple[str, ...] = ("positive", "negative", "unknown")
CHANGE_COLUMNS = [
    "image_id",
    "tag",
    "old",
    "new",
    "kind",
    "source",
    "reviewer",
    "decided_at",
    "applied_at",
    "note",
]
REQUIRED = ["image_id", "tag", "new", "kind", "source"]


@dataclass(frozen=True)
class ManifestVersion:
    """A written manifest version: its folder, files and figures."""

    manifest: Path
    changes: Path
    version: Path
    sha256: str
    base_sha256: str
    num_changes: int


def cell_value(tags: set[str], known: set[str], tag: str) -> CellValue:
    """'positive', 'negative' or 'unknown' for one cell of one manifest row."""
    if tag in tags:
        return "positive"
    return "negative" if tag in known else "unknown"


def apply_label_changes(
    manifest: pd.DataFrame,
    changes: pd.DataFrame,
    taxonomy: Taxonomy,
    *,
    now: datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(new manifest, change log)` after setting the cells of `changes`, in order.

    changes: image_id, tag, new ("positive" | "negative" | "unknown"), kind (a provenance
    kind), source (who/what decided, e.g. "labelstudio:export.json#task=3"); optional
    reviewer, decided_at, note. A later change of the same cell wins. Cells whose value does not
    change are not logged. Raises ValueError naming the change row for an unknown image, tag,
    value or kind.
    """
    missing = [c for c in REQUIRED if c not in changes.columns]
    if missing:
        raise ValueError(f"label changes lack columns {missing}; required: {REQUIRED}")
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    row_of = {image_id: i for i, image_id in enumerate(manifest["image_id"])}
    out = manifest.copy()
    tags = [set(v) for v in out["tags"]]
    known = [set(v) for v in out["known"]]
    provenance = [list(v) for v in out["provenance"]]
    touched: set[int] = set()
    log: list[dict[str, object]] = []
    for i, change in enumerate(changes.to_dict("records")):
        row = _check_change(change, i, row_of, taxonomy)
        extra = {k: _text(change.get(k)) for k in ("reviewer", "decided_at", "note")}
        cells = [(change["tag"], change["new"], change["kind"])]
        if change["new"] == "positive":
            cells += [(a, "positive", "implied") for a in taxonomy.ancestors(change["tag"])]
        for tag, new, kind in cells:
            old = cell_value(tags[row], known[row], tag)
            if old == new:
                continue
            tags[row].discard(tag)
            known[row].discard(tag)
            if new != "unknown":
                known[row].add(tag)
            if new == "positive":
                tags[row].add(tag)
            provenance[row].append(
                {"tag": tag, "source": str(change["source"]), "source_label": None, "kind": kind}
            )
            touched.add(row)
            log.append(
                {
                    "image_id": change["image_id"],
                    "tag": tag,
                    "old": old,
                    "new": new,
                    "kind": kind,
                    "source": str(change["source"]),
                    **extra,
                    "applied_at": stamp,
                }
            )
    order = {t: i for i, t in enumerate(taxonomy.tag_ids)}
    for column, values in (("tags", tags), ("known", known), ("provenance", provenance)):
        column_cells: list[Any] = list(out[column])
        for row in touched:
            value = values[row]
            column_cells[row] = (
                sorted(value, key=order.__getitem__) if isinstance(value, set) else list(value)
            )
        out[column] = pd.Series(column_cells, index=out.index, dtype=object)
    return out, pd.DataFrame(log, columns=CHANGE_COLUMNS)


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _check_change(
    change: dict[Any, Any], i: int, row_of: dict[str, int], taxonomy: Taxonomy
) -> int:
    where = f"label change {i + 1} ({change.get('source')})"
    row = row_of.get(str(change["image_id"]))
    if row is None:
        raise ValueError(f"{where}: image_id {change['image_id']!r} is not in the manifest")
    if change["tag"] not in taxonomy:
        raise ValueError(f"{where}: tag {change['tag']!r} is not in taxonomy {taxonomy.name!r}")
    if change["new"] not in CELL_VALUES:
        raise ValueError(f"{where}: value {change['new']!r}; allowed: {list(CELL_VALUES)}")
    if change["kind"] not in PROVENANCE_KINDS:
        raise ValueError(f"{where}: kind {change['kind']!r}; allowed: {list(PROVENANCE_KINDS)}")
    return row


def write_manifest_version(
    manifest: pd.DataFrame,
    change_log: pd.DataFrame,
    base_manifest: str | Path,
    out_dir: str | Path,
    *,
    description: str = "",
) -> ManifestVersion:
    """Write a new manifest version into `out_dir` (must not hold one already).

    Never touches `base_manifest`; refuses an `out_dir` that is the base's own folder.
    """
    out_dir, base = Path(out_dir), Path(base_manifest)
    target = out_dir / "manifest.parquet"
    if target.resolve() == base.resolve() or target.exists():
        raise FileExistsError(
            f"{target}: a manifest version is never overwritten; use a new folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, target)
    changes = out_dir / "changes.csv"
    change_log.to_csv(changes, index=False)
    info = {
        "base_manifest": str(base.resolve()),
        "base_sha256": hash_file(base),
        "sha256": hash_file(target),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "changes": len(change_log),
        "changes_by_kind": {str(k): int(v) for k, v in change_log["kind"].value_counts().items()},
        "description": description,
    }
    version = out_dir / "version.json"
    version.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return ManifestVersion(
        target, changes, version, str(info["sha256"]), str(info["base_sha256"]), len(change_log)
    )
