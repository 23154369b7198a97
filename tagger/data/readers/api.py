"""A competitor tagging API's predictions (vocabulary "competitor_api"), kept with their scores.

One record per image, as JSON lines or one JSON list:
`{"image": "file.jpg", "labels": [{"name": "Dog", "score": 0.93}, ...]}`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tagger.data.readers._common import absolute, make_images, make_labels, require_file
from tagger.data.sources import POSITIVE, Problem, SourceTable

VOCABULARY = "competitor_api"


def read_api_predictions(
    json_path: str | Path,
    images_dir: str | Path,
    *,
    name: str = "api",
    min_confidence: float = 0.0,
) -> SourceTable:
    """Read API predictions into a `SourceTable`; labels carry an extra `score` (float32).

    Labels with score >= `min_confidence` are positives (vocabulary "competitor_api", the name
    as given); the rest are dropped (no negatives: an API's silence is not a verified
    negative). image_key: the `image` field; path: `images_dir/<image>`. A record listed again
    adds its labels (highest score kept). Records or labels that cannot be used become
    problems naming the file and line (JSON lines) or entry (list).
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence={min_confidence!r}; allowed: 0 <= x <= 1")
    path = require_file(json_path, "API predictions JSON")
    problems: list[Problem] = []
    images: dict[str, str] = {}
    scores: dict[tuple[str, str], float] = {}
    for where, record in _read_records(path, problems):
        parsed = _parse_record(record)
        if isinstance(parsed, str):
            problems.append(Problem(str(path), f"{parsed}; record skipped", row=where))
            continue
        key, labels, bad = parsed
        problems.extend(
            Problem(str(path), f"{b}; label skipped", row=where, image_key=key) for b in bad
        )
        if key in images:
            problems.append(
                Problem(str(path), "image listed again; labels united", row=where, image_key=key)
            )
        images[key] = absolute(Path(images_dir) / key)
        for label, score in labels:
            if score >= min_confidence:
                scores[(key, label)] = max(score, scores.get((key, label), score))
    pairs = list(scores)
    return SourceTable(
        name=name,
        images=make_images(list(images), list(images.values())),
        labels=make_labels(
            [k for k, _ in pairs],
            VOCABULARY,
            [lab for _, lab in pairs],
            [POSITIVE] * len(pairs),
            score=list(scores.values()),
        ),
        problems=problems,
    )


def _read_records(path: Path, problems: list[Problem]) -> list[tuple[int, Any]]:
    """(line or entry number, record) from a JSON list or JSON lines; bad lines -> problems."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from None
        return list(enumerate(data, 1))  # entries numbered from 1
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            problems.append(
                Problem(str(path), f"not valid JSON ({error.msg}); line skipped", row=number)
            )
    return records


def _parse_record(record: Any) -> tuple[str, list[tuple[str, float]], list[str]] | str:
    """(image, [(name, score)], reasons for skipped labels), or why the record is unusable."""
    if not isinstance(record, dict):
        return f"expected an object {{image, labels}}, got {type(record).__name__}"
    image = record.get("image")
    if not isinstance(image, str) or not image.strip():
        return f"field 'image' must be a non-empty file name, got {image!r}"
    raw = record.get("labels", [])
    if not isinstance(raw, list):
        return f"field 'labels' must be a list, got {type(raw).__name__}"
    labels: list[tuple[str, float]] = []
    bad: list[str] = []
    for i, item in enumerate(raw):
        label = item.get("name") if isinstance(item, dict) else None
        score = item.get("score") if isinstance(item, dict) else None
        if not isinstance(label, str) or not label.strip():
            bad.append(f"labels[{i}]: 'name' must be a non-empty string, got {label!r}")
        elif isinstance(score, bool) or not (
            isinstance(score, int | float) and math.isfinite(score) and 0 <= score <= 1
        ):
            bad.append(f"labels[{i}] ({label}): 'score' must be a number in 0..1, got {score!r}")
        else:
            labels.append((label.strip(), float(score)))
    return image.strip(), labels, bad
