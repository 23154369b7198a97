"""Tests for tagger/readers/keywords.py."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.data.readers.keywords import read_keyword_folders


def test_folder_names_are_keywords(tmp_path: Path, write_jpeg: Callable[..., Path]) -> None:
    write_jpeg(tmp_path / "beach" / "1.jpg")
    write_jpeg(tmp_path / "beach" / "2.JPEG")
    write_jpeg(tmp_path / "Golden Retriever" / "1.jpg")  # same name, other folder: other image
    (tmp_path / "beach" / "notes.txt").write_text("x")
    (tmp_path / "beach" / ".DS_Store").write_text("x")
    (tmp_path / "beach" / "deeper").mkdir()
    (tmp_path / "stray.jpg").write_bytes(b"")
    table = read_keyword_folders(tmp_path)
    assert list(table.images["image_key"]) == [
        "Golden Retriever/1.jpg",
        "beach/1.jpg",
        "beach/2.JPEG",
    ]
    assert list(table.labels["label"]) == ["Golden Retriever", "beach", "beach"]
    assert set(table.labels["vocabulary"]) == {"keywords"} and (table.labels["value"] == 1).all()
    assert table.images["path"][1] == str(tmp_path / "beach" / "1.jpg")
    reasons = sorted(p.reason.split(" (")[0].split(";")[0] for p in table.problems)
    assert reasons == [
        "file outside a keyword folder",
        "nested folder",
        "skipped 1 files that are not images by extension {'.txt': 1}",
    ]


def test_extensions_can_be_restricted(tmp_path: Path, write_jpeg: Callable[..., Path]) -> None:
    write_jpeg(tmp_path / "cat" / "1.jpg")
    write_jpeg(tmp_path / "cat" / "2.png")
    assert list(read_keyword_folders(tmp_path, extensions=(".PNG",)).images["image_key"]) == [
        "cat/2.png"
    ]


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="keyword folder not found"):
        read_keyword_folders(tmp_path / "nope")


def test_real_photos_in_keyword_folders(shared_data: Path, tmp_path: Path) -> None:
    """Open Images photos linked into folders named after their class, one in both."""
    root = shared_data / "openimages"
    with (root / "sample_manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        folder = tmp_path / row["labels"].lower()
        folder.mkdir(exist_ok=True)
        os.symlink(root / "images" / row["filename"], folder / row["filename"])
    (tmp_path / "fruit").mkdir()
    os.symlink(root / "images" / rows[0]["filename"], tmp_path / "fruit" / rows[0]["filename"])
    table = read_keyword_folders(tmp_path)
    assert len(table.images) == len(rows) + 1 == 76 and table.problems == []
    assert set(table.labels["label"]) == {"apple", "orange", "fruit"}
