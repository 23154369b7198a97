"""Tests for tagger/readers/voc.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagger.data.readers.voc import read_voc
from tagger.data.sources import EXPLICIT_UNKNOWN, SourceTable


def obj(name: str, difficult: int, box: tuple[int, int, int, int], parts: str = "") -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>{parts}</object>"
    )


def annotation(filename: str, objects: str, size: str = "<width>100</width><height>50</height>"):
    return (
        f"<annotation><folder>VOC2012</folder><filename>{filename}</filename>"
        f"<size>{size}<depth>3</depth></size><segmented>0</segmented>{objects}</annotation>"
    )


HEAD = "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
HEAD += "</bndbox></part>"


@pytest.fixture
def voc_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "Annotations"
    folder.mkdir()
    objects = (
        obj("person", 0, (1, 1, 50, 25), parts=HEAD)
        + obj("chair", 1, (10, 10, 20, 20))  # difficult only
        + obj("dog", 1, (30, 5, 40, 15))
        + obj("dog", 0, (60, 5, 80, 45))
    )
    (folder / "2007_000001.xml").write_text(annotation("2007_000001.jpg", objects))
    (folder / "2007_000002.xml").write_text(
        annotation("2007_000002.jpg", obj("cat", 0, (1, 1, 100, 50)))
    )
    return folder


def values(table: SourceTable, key: str) -> dict[str, int]:
    rows = table.labels[table.labels["image_key"] == key]
    return dict(zip(rows["label"], rows["value"], strict=True))


def test_ignore_policy_makes_difficult_only_classes_unknown(voc_dir: Path) -> None:
    table = read_voc(voc_dir, "/data/JPEGImages")
    assert list(table.images["image_key"]) == ["2007_000001", "2007_000002"]
    assert table.images["path"][0] == "/data/JPEGImages/2007_000001.jpg"
    assert list(table.images["width"]) == [100, 100] and list(table.images["height"]) == [50, 50]
    assert values(table, "2007_000001") == {"person": 1, "chair": EXPLICIT_UNKNOWN, "dog": 1}
    assert "head" not in set(table.labels["label"])  # parts are not labels
    first = table.boxes[table.boxes["image_key"] == "2007_000001"]
    assert list(first["label"]) == ["person", "chair", "dog", "dog"]
    assert list(first["difficult"]) == [False, True, True, False]
    # 1-based inclusive pixels: (1, 1, 50, 25) on 100x50 -> (0, 0, 0.5, 0.5)
    person = first.iloc[0]
    assert (person["xmin"], person["ymin"], person["xmax"], person["ymax"]) == pytest.approx(
        (0.0, 0.0, 0.5, 0.5)
    )


def test_positive_and_drop_policies(voc_dir: Path) -> None:
    positive = read_voc(voc_dir, voc_dir, difficult="positive")
    assert values(positive, "2007_000001") == {"person": 1, "chair": 1, "dog": 1}
    dropped = read_voc(voc_dir, voc_dir, difficult="drop")
    assert values(dropped, "2007_000001") == {"person": 1, "dog": 1}
    assert not dropped.boxes["difficult"].any() and len(dropped.boxes) == 3


def test_unknown_policy_is_refused(voc_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"difficult='skip'.*'ignore', 'positive', 'drop'"):
        read_voc(voc_dir, voc_dir, difficult="skip")  # type: ignore[arg-type]


def test_malformed_xml_is_a_problem_and_the_rest_is_read(voc_dir: Path) -> None:
    (voc_dir / "2007_000003.xml").write_text("<annotation><filename>x.jpg</filename>")
    (voc_dir / "2007_000004.xml").write_text("<html></html>")
    table = read_voc(voc_dir, voc_dir)
    assert len(table.images) == 2
    assert [Path(p.file).name for p in table.problems] == ["2007_000003.xml", "2007_000004.xml"]
    assert "image skipped" in table.problems[0].reason
    assert "expected <annotation>" in table.problems[1].reason


def test_missing_size_keeps_labels_but_not_boxes(voc_dir: Path) -> None:
    (voc_dir / "2007_000005.xml").write_text(annotation("b.jpg", obj("cow", 0, (1, 1, 2, 2)), ""))
    table = read_voc(voc_dir, voc_dir)
    assert values(table, "2007_000005") == {"cow": 1}
    assert "2007_000005" not in set(table.boxes["image_key"])
    assert [p.image_key for p in table.problems] == ["2007_000005"]
    assert table.images["width"].isna().sum() == 1


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOC annotations folder not found"):
        read_voc(tmp_path / "nope", tmp_path)


def test_real_voc2012(shared_data: Path) -> None:
    root = shared_data / "voc2012"
    table = read_voc(root / "Annotations", root / "JPEGImages")
    assert len(table.images) == 523 and table.problems == []
    assert all(Path(p).is_file() for p in table.images["path"])
    assert table.images["width"].notna().all()
    assert len(set(table.labels["label"])) == 20
    assert not {"head", "hand", "foot"} & set(table.labels["label"])
    assert table.boxes["difficult"].any() and (table.labels["value"] == EXPLICIT_UNKNOWN).any()
    coords = table.boxes[["xmin", "ymin", "xmax", "ymax"]].to_numpy()
    assert ((coords >= 0) & (coords <= 1)).all()
