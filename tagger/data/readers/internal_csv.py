"""Internal annotations: a CSV of `path,tags` (vocabulary "tags": tag ids, names or aliases)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tagger.data.readers._common import absolute, make_images, make_labels, require_file
from tagger.data.sources import POSITIVE, Problem, SourceTable

VOCABULARY = "tags"
REQUIRED_COLUMNS = ("path", "tags")
_TAG_SEPARATORS = re.compile(r"[|;]")


def read_internal_csv(
    csv_path: str | Path,
    *,
    name: str = "internal",
    base_dir: str | Path | None = None,
) -> SourceTable:
    """Read an internal `path,tags` CSV into a `SourceTable`.

    path: relative paths resolve against `base_dir` (default: the CSV's folder). tags: tag
    ids/names/aliases separated by `|` or `;` (an empty cell = an image with no tags).
    image_key: the path as written. A path listed twice gets the union of its tags and a
    problem. Raises ValueError naming the file, line and field for a missing column or an
    empty path.
    """
    path = require_file(csv_path, "internal CSV")
    base = Path(base_dir) if base_dir is not None else path.parent
    tags_by_key: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    problems: list[Problem] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: line 1 (header) lacks columns {missing}; found {header}; "
                f"expected {list(REQUIRED_COLUMNS)}"
            )
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            key = (row["path"] or "").strip()
            if not key:
                raise ValueError(
                    f"{path}: line {line}: field 'path' is empty; a relative or "
                    "absolute image path is required"
                )
            tags = [t.strip() for t in _TAG_SEPARATORS.split(row["tags"] or "") if t.strip()]
            if key in tags_by_key:
                problems.append(
                    Problem(str(path), "path listed again; tags united", row=line, image_key=key)
                )
                tags_by_key[key].extend(t for t in tags if t not in tags_by_key[key])
                continue
            tags_by_key[key] = list(dict.fromkeys(tags))
            paths[key] = absolute(base / key)  # an absolute `key` stays as is
    label_keys = [k for k, tags in tags_by_key.items() for _ in tags]
    labels = [t for tags in tags_by_key.values() for t in tags]
    return SourceTable(
        name=name,
        images=make_images(list(paths), list(paths.values())),
        labels=make_labels(label_keys, VOCABULARY, labels, [POSITIVE] * len(labels)),
        problems=problems,
    )
