"""Tests for tagger/readers/yolo.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.data.readers.yolo import load_class_names, read_yolo


@pytest.fixture
def yolo_dir(tmp_path: Path, write_jpeg: Callable[..., Path]) -> Path:
    write_jpeg(tmp_path / "images" / "train" / "a.jpg")
    write_jpeg(tmp_path / "images" / "train" / "b.png")  # a background image: no label file
    write_jpeg(tmp_path / "images" / "val" / "c.jpg")
    labels = tmp_path / "labels"
    (labels / "train").mkdir(parents=True)
    (labels / "val").mkdir()
    (labels / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n\n1 0.25 0.75 0.5 0.5\n")
    (labels / "val" / "c.txt").write_text(
        "2 0.5 0.5 0.1 0.1\n1 0.5 0.5\n7 0.5 0.5 0.1 0.1\nx 0.5 0.5 0.1 0.1\n0 0.9 0.5 0.5 0.5\n"
    )
    (labels / "val" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    return tmp_path


def test_boxes_labels_and_background_images(yolo_dir: Path) -> None:
    table = read_yolo(yolo_dir / "images", yolo_dir / "labels", ["cat", "dog", "car"])
    assert list(table.images["image_key"]) == ["train/a", "train/b", "val/c"]
    assert table.images["path"][1] == str(yolo_dir / "images" / "train" / "b.png")
    assert list(zip(table.labels["image_key"], table.labels["label"], strict=True)) == [
        ("train/a", "cat"),
        ("train/a", "dog"),
        ("val/c", "car"),
    ]
    assert set(table.labels["vocabulary"]) == {"yolo"}
    dog = table.boxes.iloc[1]
    # cx, cy, w, h = 0.25, 0.75, 0.5, 0.5 -> (0, 0.5, 0.5, 1)
    assert (dog["xmin"], dog["ymin"], dog["xmax"], dog["ymax"]) == pytest.approx(
        (0.0, 0.5, 0.5, 1.0)
    )


def test_bad_lines_are_problems_with_line_numbers(yolo_dir: Path) -> None:
    table = read_yolo(yolo_dir / "images", yolo_dir / "labels", ["cat", "dog", "car"])
    bad = [(Path(p.file).name, p.row) for p in table.problems]
    assert bad == [("c.txt", 2), ("c.txt", 3), ("c.txt", 4), ("c.txt", 5), ("orphan.txt", None)]
    reasons = [p.reason for p in table.problems]
    assert "expected 5 fields" in reasons[0] and "out of range 0..2" in reasons[1]
    assert "outside the image" in reasons[3]
    assert "val/c" in set(table.images["image_key"])


def test_class_names_from_yaml_list_dict_and_text(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("path: .\nnames: [cat, dog]\n")
    (tmp_path / "dict.yaml").write_text("names:\n  1: dog\n  0: cat\n")
    (tmp_path / "coco.names").write_text("cat\n\ndog\n")
    for name in ("list.yaml", "dict.yaml", "coco.names"):
        assert load_class_names(tmp_path / name) == ["cat", "dog"]
    (tmp_path / "gap.yaml").write_text("names:\n  0: cat\n  2: dog\n")
    with pytest.raises(ValueError, match=r"indices must be 0\.\.1"):
        load_class_names(tmp_path / "gap.yaml")


def test_class_names_path_and_vocabulary(yolo_dir: Path) -> None:
    (yolo_dir / "data.yaml").write_text("names: [cat, dog, car]\n")
    table = read_yolo(
        yolo_dir / "images", yolo_dir / "labels", yolo_dir / "data.yaml", vocabulary="coco"
    )
    assert set(table.labels["vocabulary"]) == {"coco"} and len(table.boxes) == 3


def test_real_images_with_yolo_labels(shared_data: Path, tmp_path: Path) -> None:
    """coco_tiny300 written as YOLO txt beside its real images."""
    root = shared_data / "coco_tiny300"
    entries = json.loads((root / "annotations" / "ground_truth_dev.json").read_text())
    class_ids = sorted({o["class_id"] for e in entries for o in e["objects"]})
    for entry in entries:
        lines = []
        for o in entry["objects"]:
            b = o["bounding_box"]
            w = b["normalized_right"] - b["normalized_left"]
            h = b["normalized_bottom"] - b["normalized_top"]
            cx, cy = b["normalized_left"] + w / 2, b["normalized_top"] + h / 2
            lines.append(f"{class_ids.index(o['class_id'])} {cx} {cy} {w} {h}")
        (tmp_path / f"{Path(entry['image_name']).stem}.txt").write_text("\n".join(lines))
    table = read_yolo(root / "images", tmp_path, [str(c) for c in class_ids])
    assert len(table.images) == 207 and table.problems == []
    assert len(table.boxes) == sum(len(e["objects"]) for e in entries)
