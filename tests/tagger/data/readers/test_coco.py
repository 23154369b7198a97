"""Tests for tagger/readers/coco.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tagger.data.readers.coco import COCO_CATEGORIES, read_coco, read_coco_mlperf
from tagger.data.sources import EXPLICIT_UNKNOWN


def instances() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "file_name": "000001.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "000002.jpg", "width": 50, "height": 50},  # no annotations
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "bbox": [20, 10, 100, 50], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 100], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def label_values(table: Any) -> dict[tuple[str, str], int]:
    rows = table.labels.itertuples()
    return {(r.image_key, r.label): r.value for r in rows}


def test_instances_give_sizes_labels_and_normalised_boxes(tmp_path: Path) -> None:
    table = read_coco(write_json(tmp_path / "i.json", instances()), tmp_path / "images")
    assert list(table.images["image_key"]) == ["000001", "000002"]
    assert list(table.images["width"]) == [200, 50] and list(table.images["height"]) == [100, 50]
    assert table.images["path"][0] == str(tmp_path / "images" / "000001.jpg")
    assert label_values(table) == {("000001", "dog"): 1, ("000001", "person"): 1}
    dog = table.boxes[table.boxes["label"] == "dog"].iloc[0]
    # [x, y, w, h] = [20, 10, 100, 50] on 200x100 -> (0.1, 0.1, 0.6, 0.6)
    assert (dog["xmin"], dog["ymin"], dog["xmax"], dog["ymax"]) == pytest.approx(
        (0.1, 0.1, 0.6, 0.6)
    )
    assert list(table.boxes["difficult"]) == [False, True]  # the crowd box
    assert set(table.labels["vocabulary"]) == {"coco"}


def test_excluded_crowd_makes_its_class_explicitly_unknown(tmp_path: Path) -> None:
    path = write_json(tmp_path / "i.json", instances())
    table = read_coco(path, tmp_path, include_crowd=False)
    assert label_values(table)[("000001", "person")] == EXPLICIT_UNKNOWN
    assert list(table.boxes["label"]) == ["dog"]


def test_unusable_annotations_are_problems(tmp_path: Path) -> None:
    data = instances()
    data["annotations"] += [
        {"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]},
        {"image_id": 2, "category_id": 77, "bbox": [0, 0, 1, 1]},
        {"image_id": 2, "category_id": 18, "bbox": [5, 5, 0, 3]},
    ]
    table = read_coco(write_json(tmp_path / "i.json", data), tmp_path)
    reasons = [p.reason for p in table.problems]
    assert len(reasons) == 3
    assert "annotations[2]: image_id 99" in reasons[0]
    assert "annotations[3]: category_id 77" in reasons[1]
    assert "annotations[4]: bbox" in reasons[2] and "label kept" in reasons[2]
    assert label_values(table)[("000002", "dog")] == 1


def test_structure_errors_name_file_and_entry(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"field 'images' must be a list"):
        read_coco(write_json(tmp_path / "a.json", {"annotations": [], "categories": []}), tmp_path)
    data = instances()
    del data["images"][1]["width"]
    with pytest.raises(ValueError, match=r"b\.json: images\[1\] lacks fields \['width'\]"):
        read_coco(write_json(tmp_path / "b.json", data), tmp_path)
    (tmp_path / "c.json").write_text('{"images": [\n oops')
    with pytest.raises(ValueError, match=r"c\.json: line 2: not valid JSON"):
        read_coco(tmp_path / "c.json", tmp_path)


def test_two_files_merge_and_duplicates_are_reported(tmp_path: Path) -> None:
    first = write_json(tmp_path / "train.json", instances())
    second = instances()
    second["images"][1] = {"id": 3, "file_name": "000003.jpg", "width": 10, "height": 10}
    table = read_coco([first, write_json(tmp_path / "val.json", second)], tmp_path)
    assert list(table.images["image_key"]) == ["000001", "000002", "000003"]
    assert [p.image_key for p in table.problems] == ["000001"]


def test_mlperf_list_maps_class_ids_to_coco_names(tmp_path: Path) -> None:
    box = {"normalized_top": 0.1, "normalized_bottom": 0.5, "normalized_left": 0.2,
           "normalized_right": 0.9}  # fmt: skip
    data = [
        {"image_name": "a.jpg", "image_id": 1, "objects": [{"class_id": 18, "bounding_box": box}]},
        {"image_name": "b.jpg", "image_id": 2, "objects": [{"class_id": 12, "bounding_box": box}]},
    ]
    table = read_coco_mlperf(write_json(tmp_path / "gt.json", data), tmp_path)
    assert list(table.images["image_key"]) == ["a", "b"]
    assert "width" not in table.images.columns
    assert label_values(table) == {("a", "dog"): 1}
    row = table.boxes.iloc[0]
    assert (row["xmin"], row["ymin"], row["xmax"], row["ymax"]) == pytest.approx(
        (0.2, 0.1, 0.9, 0.5)
    )
    assert len(table.problems) == 1 and "class_id 12" in table.problems[0].reason


def test_mlperf_rejects_a_non_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected a JSON list"):
        read_coco_mlperf(write_json(tmp_path / "gt.json", {"images": []}), tmp_path)


def test_category_table_has_the_80_coco_classes() -> None:
    assert len(COCO_CATEGORIES) == 80 and len(set(COCO_CATEGORIES.values())) == 80
    assert (COCO_CATEGORIES[1], COCO_CATEGORIES[44], COCO_CATEGORIES[90]) == (
        "person", "bottle", "toothbrush"
    )  # fmt: skip


def test_real_coco_mini(shared_data: Path) -> None:
    root = shared_data / "coco_mini"
    files = sorted((root / "annotations").glob("instances_*_dev.json"))
    table = read_coco(files, root / "images")
    assert len(files) == 2 and len(table.images) == 116 and table.problems == []
    assert table.images["image_key"].is_unique
    assert all(Path(p).is_file() for p in table.images["path"])
    assert set(table.labels["label"]) <= set(COCO_CATEGORIES.values())
    coords = table.boxes[["xmin", "ymin", "xmax", "ymax"]].to_numpy()
    assert ((coords >= 0) & (coords <= 1)).all()
    assert table.boxes["difficult"].sum() == 11  # crowd annotations in the two files
    categories = json.loads(files[0].read_text())["categories"]
    assert {c["id"]: c["name"] for c in categories} == COCO_CATEGORIES


def test_real_coco_tiny300(shared_data: Path) -> None:
    root = shared_data / "coco_tiny300"
    table = read_coco_mlperf(root / "annotations" / "ground_truth_dev.json", root / "images")
    assert len(table.images) == 207 and table.problems == []
    assert all(Path(p).is_file() for p in table.images["path"])
    assert {"person", "dog", "boat", "bottle"} <= set(table.labels["label"])
