"""Tests for tagger/readers/internal_csv.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagger.data.readers.internal_csv import read_internal_csv


def test_paths_resolve_against_the_csv_folder_and_tags_split(tmp_path: Path) -> None:
    csv_path = tmp_path / "ann" / "labels.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "path,tags,annotator\n"
        "photos/a.jpg,dog|beach,ann\n"
        "photos/b.jpg, sunset ; sea ;,bob\n"
        "/abs/c.jpg,,ann\n"
        "photos/a.jpg,dog|person,bob\n"
    )
    table = read_internal_csv(csv_path)
    images = dict(zip(table.images["image_key"], table.images["path"], strict=True))
    assert images == {
        "photos/a.jpg": str(tmp_path / "ann" / "photos" / "a.jpg"),
        "photos/b.jpg": str(tmp_path / "ann" / "photos" / "b.jpg"),
        "/abs/c.jpg": "/abs/c.jpg",
    }
    pairs = list(zip(table.labels["image_key"], table.labels["label"], strict=True))
    assert pairs == [
        ("photos/a.jpg", "dog"),
        ("photos/a.jpg", "beach"),
        ("photos/a.jpg", "person"),
        ("photos/b.jpg", "sunset"),
        ("photos/b.jpg", "sea"),
    ]
    assert set(table.labels["vocabulary"]) == {"tags"}
    assert [(p.row, p.image_key) for p in table.problems] == [(5, "photos/a.jpg")]


def test_base_dir_overrides_the_csv_folder(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("path,tags\nx.jpg,cat\n")
    table = read_internal_csv(tmp_path / "l.csv", base_dir="/photos", name="team")
    assert table.name == "team" and list(table.images["path"]) == ["/photos/x.jpg"]


def test_missing_column_and_empty_path_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("file,tags\nx.jpg,cat\n")
    with pytest.raises(ValueError, match=r"a\.csv: line 1 \(header\) lacks columns \['path'\]"):
        read_internal_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,tags\nx.jpg,cat\n  ,dog\n")
    with pytest.raises(ValueError, match=r"b\.csv: line 3: field 'path' is empty"):
        read_internal_csv(tmp_path / "b.csv")


def test_real_voc_photos_listed_in_an_internal_csv(shared_data: Path, tmp_path: Path) -> None:
    images = sorted((shared_data / "voc2012" / "JPEGImages").glob("*.jpg"))[:10]
    lines = ["path,tags"] + [f"{p.name},{'dog|outdoor' if i % 2 else 'cat'}" for i, p in
                             enumerate(images)]  # fmt: skip
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    table = read_internal_csv(tmp_path / "labels.csv", base_dir=images[0].parent)
    assert len(table.images) == 10 and len(table.labels) == 15
    assert all(Path(p).is_file() for p in table.images["path"])
