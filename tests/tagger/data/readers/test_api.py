"""Tests for tagger/readers/api.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tagger.data.readers.api import read_api_predictions

RECORDS = [
    {"image": "a.jpg", "labels": [{"name": "Dog", "score": 0.93}, {"name": "Grass", "score": 0.4}]},
    {"image": "b.jpg", "labels": []},
]


def test_json_list_keeps_scores_above_the_threshold(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(RECORDS))
    table = read_api_predictions(tmp_path / "p.json", tmp_path / "imgs", min_confidence=0.5)
    assert list(table.images["image_key"]) == ["a.jpg", "b.jpg"]
    assert table.images["path"][0] == str(tmp_path / "imgs" / "a.jpg")
    assert list(table.labels["label"]) == ["Dog"] and (table.labels["value"] == 1).all()
    assert table.labels["score"].dtype == np.float32
    assert table.labels["score"].tolist() == pytest.approx([0.93])
    assert set(table.labels["vocabulary"]) == {"competitor_api"}


def test_json_lines_with_bad_lines_and_labels(tmp_path: Path) -> None:
    lines = [
        json.dumps(RECORDS[0]),
        "{not json",
        "",
        json.dumps({"labels": []}),
        json.dumps({"image": "c.jpg", "labels": [{"name": "Cat", "score": 1.7}, {"score": 0.5}]}),
        json.dumps({"image": "a.jpg", "labels": [{"name": "Dog", "score": 0.99}]}),
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(lines))
    table = read_api_predictions(tmp_path / "p.jsonl", tmp_path)
    assert list(table.images["image_key"]) == ["a.jpg", "c.jpg"]
    scores = dict(zip(table.labels["label"], table.labels["score"], strict=True))
    assert scores == pytest.approx({"Dog": 0.99, "Grass": 0.4})  # highest score kept
    found = [(p.row, p.reason.split(":")[0].split(" (")[0]) for p in table.problems]
    assert found == [
        (2, "not valid JSON"),
        (4, "field 'image' must be a non-empty file name, got None; record skipped"),
        (5, "labels[0]"),
        (5, "labels[1]"),
        (6, "image listed again; labels united"),
    ]


def test_invalid_json_list_and_threshold_raise(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('[{"image": "a.jpg",\n')
    with pytest.raises(ValueError, match=r"p\.json: line 2: not valid JSON"):
        read_api_predictions(tmp_path / "p.json", tmp_path)
    with pytest.raises(ValueError, match="min_confidence"):
        read_api_predictions(tmp_path / "p.json", tmp_path, min_confidence=2)


def test_real_photos_with_api_predictions(shared_data: Path, tmp_path: Path) -> None:
    images = sorted((shared_data / "openimages" / "images").glob("*.jpg"))
    records = [{"image": p.name, "labels": [{"name": "Fruit", "score": 0.8}]} for p in images]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    table = read_api_predictions(tmp_path / "p.jsonl", images[0].parent)
    assert len(table.images) == 75 and len(table.labels) == 75 and table.problems == []
    assert all(Path(p).is_file() for p in table.images["path"])
