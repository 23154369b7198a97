"""COCO: instances JSON and the MLPerf mobile ground-truth list (vocabulary "coco", names)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagger.data.readers._common import absolute, make_boxes, make_images, make_labels, require_file
from tagger.data.sources import EXPLICIT_UNKNOWN, POSITIVE, Problem, SourceTable

VOCABULARY = "coco"
# The 80 COCO 2017 detection categories: category id -> name (ids have gaps up to 90).
COCO_CATEGORIES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
    7: "train", 8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant",
    13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog",
    19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite",
    39: "baseball bat", 40: "baseball glove", 41: "skateboard", 42: "surfboard",
    43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork", 49: "knife",
    50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange",
    56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake",
    62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone",
    78: "microwave", 79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book",
    85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier",
    90: "toothbrush",
}  # fmt: skip
MLPERF_BOX_FIELDS = ("normalized_left", "normalized_top", "normalized_right", "normalized_bottom")


class _Collector:
    """Accumulates rows of the images, labels and boxes tables for one source."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[str, int | None, int | None]] = {}
        self.labels: dict[tuple[str, str], int] = {}  # (image_key, label) -> value
        self.box_rows: list[tuple[str, str, tuple[float, float, float, float], bool]] = []
        self.problems: list[Problem] = []

    def add_label(self, key: str, label: str, value: int) -> None:
        # A positive wins over an explicit unknown from another annotation of the same class.
        self.labels[(key, label)] = max(value, self.labels.get((key, label), value))

    def to_table(self, name: str, vocabulary: str, with_size: bool) -> SourceTable:
        keys = list(self.images)
        rows = list(self.images.values())
        images = make_images(
            keys,
            [r[0] for r in rows],
            width=[r[1] for r in rows] if with_size else None,
            height=[r[2] for r in rows] if with_size else None,
        )
        pairs = list(self.labels)
        labels = make_labels(
            [k for k, _ in pairs], vocabulary, [lab for _, lab in pairs], list(self.labels.values())
        )
        boxes = make_boxes(
            [r[0] for r in self.box_rows],
            vocabulary,
            [r[1] for r in self.box_rows],
            [r[2] for r in self.box_rows],
            difficult=[r[3] for r in self.box_rows],
        )
        return SourceTable(name, images, labels, boxes, self.problems)


def read_coco(
    instances_json: str | Path | Sequence[str | Path],
    images_dir: str | Path,
    *,
    name: str = "coco",
    include_crowd: bool = True,
) -> SourceTable:
    """Read one or more COCO instances JSON files into a `SourceTable`.

    image_key: the file name's stem; width/height from the JSON. Labels: category names, one
    positive per (image, category). Boxes: `bbox` [x, y, w, h] pixels normalised by the image
    size; a crowd box is kept with `difficult=True` (COCO evaluation ignores crowds too). With
    `include_crowd=False` crowd annotations give no box, and a category present only as a
    crowd becomes `EXPLICIT_UNKNOWN` rather than an exhaustive negative. Images without
    annotations stay (every COCO category is then a negative). Entries that cannot be used
    become problems; a file that is not COCO instances JSON raises ValueError.
    """
    files = [instances_json] if isinstance(instances_json, str | Path) else list(instances_json)
    out = _Collector()
    for file in files:
        _read_coco_file(require_file(file, "COCO instances JSON"), images_dir, include_crowd, out)
    return out.to_table(name, VOCABULARY, with_size=True)


def _read_coco_file(
    path: Path, images_dir: str | Path, include_crowd: bool, out: _Collector
) -> None:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object with 'images', 'annotations' and "
            f"'categories'; found {type(data).__name__}"
        )
    for section in ("images", "annotations", "categories"):
        if not isinstance(data.get(section), list):
            raise ValueError(
                f"{path}: field {section!r} must be a list; found "
                f"{type(data.get(section)).__name__}"
            )
    categories = {}
    for i, entry in enumerate(data["categories"]):
        _require_fields(entry, ("id", "name"), path, f"categories[{i}]")
        categories[entry["id"]] = str(entry["name"])
    by_id, skipped = _read_coco_images(data["images"], path, images_dir, out)
    for i, ann in enumerate(data["annotations"]):
        _require_fields(ann, ("image_id", "category_id"), path, f"annotations[{i}]")
        if ann["image_id"] not in skipped:  # a skipped image was reported once already
            _read_annotation(ann, f"annotations[{i}]", path, by_id, categories, include_crowd, out)


def _read_coco_images(
    entries: list[Any], path: Path, images_dir: str | Path, out: _Collector
) -> tuple[dict[Any, tuple[str, int, int]], set[Any]]:
    """Add the usable images to `out`: ({image id: (key, width, height)}, skipped ids)."""
    by_id: dict[Any, tuple[str, int, int]] = {}
    skipped: set[Any] = set()
    for i, entry in enumerate(entries):
        _require_fields(entry, ("id", "file_name", "width", "height"), path, f"images[{i}]")
        key = Path(str(entry["file_name"])).stem
        width, height = entry["width"], entry["height"]
        if key in out.images:
            reason = f"images[{i}]: duplicate image {key!r}, kept the first"
        elif not (isinstance(width, int) and isinstance(height, int) and min(width, height) > 0):
            reason = (
                f"images[{i}]: width/height must be positive integers, got {width!r}/{height!r};"
                " image skipped"
            )
        else:
            out.images[key] = (absolute(Path(images_dir) / str(entry["file_name"])), width, height)
            by_id[entry["id"]] = (key, width, height)
            continue
        out.problems.append(Problem(str(path), reason, image_key=key))
        skipped.add(entry["id"])
    return by_id, skipped


def _read_annotation(
    ann: Any,
    where: str,
    path: Path,
    by_id: dict[Any, tuple[str, int, int]],
    categories: dict[Any, str],
    include_crowd: bool,
    out: _Collector,
) -> None:
    if ann["image_id"] not in by_id:
        out.problems.append(
            Problem(
                str(path),
                f"{where}: image_id {ann['image_id']!r} is not in 'images'; annotation skipped",
            )
        )
        return
    key, width, height = by_id[ann["image_id"]]
    if ann["category_id"] not in categories:
        out.problems.append(
            Problem(
                str(path),
                f"{where}: category_id {ann['category_id']!r} is "
                "not in 'categories'; annotation skipped",
                image_key=key,
            )
        )
        return
    label = categories[ann["category_id"]]
    crowd = bool(ann.get("iscrowd", 0))
    if crowd and not include_crowd:
        out.add_label(key, label, EXPLICIT_UNKNOWN)
        return
    out.add_label(key, label, POSITIVE)
    bbox = ann.get("bbox")
    if bbox is None:
        return
    if not (isinstance(bbox, list) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0):
        out.problems.append(
            Problem(
                str(path),
                f"{where}: bbox must be [x, y, w, h] with w, h > 0,"
                f" got {bbox!r}; box skipped, label kept",
                image_key=key,
            )
        )
        return
    x, y, w, h = (float(v) for v in bbox)
    xyxy = (x / width, y / height, (x + w) / width, (y + h) / height)
    out.box_rows.append((key, label, xyxy, crowd))


def read_coco_mlperf(
    ground_truth_json: str | Path,
    images_dir: str | Path,
    *,
    name: str = "coco_mlperf",
) -> SourceTable:
    """Read the MLPerf mobile detection ground truth (a COCO subset) into a `SourceTable`.

    The file is a list of `{image_name, image_id, objects: [{class_id, bounding_box:
    {normalized_top, normalized_bottom, normalized_left, normalized_right}}]}`; `class_id` is a
    COCO category id, emitted as its name from `COCO_CATEGORIES` (vocabulary "coco").
    image_key: the image name's stem. No width/height (the format has none).
    """
    path = require_file(ground_truth_json, "MLPerf ground-truth JSON")
    data = _load_json(path)
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON list of {{image_name, image_id, objects}}; "
            f"found {type(data).__name__}"
        )
    out = _Collector()
    for i, entry in enumerate(data):
        _require_fields(entry, ("image_name", "objects"), path, f"[{i}]")
        key = Path(str(entry["image_name"])).stem
        if key in out.images:
            out.problems.append(
                Problem(str(path), f"[{i}]: duplicate image {key!r}, kept the first", image_key=key)
            )
            continue
        out.images[key] = (absolute(Path(images_dir) / str(entry["image_name"])), None, None)
        for j, obj in enumerate(entry["objects"]):
            _read_mlperf_object(obj, f"[{i}].objects[{j}]", path, key, out)
    return out.to_table(name, VOCABULARY, with_size=False)


def _read_mlperf_object(obj: Any, where: str, path: Path, key: str, out: _Collector) -> None:
    _require_fields(obj, ("class_id", "bounding_box"), path, where)
    label = COCO_CATEGORIES.get(obj["class_id"])
    if label is None:
        out.problems.append(
            Problem(
                str(path),
                f"{where}: class_id {obj['class_id']!r} is not a "
                "COCO category id (1..90, see COCO_CATEGORIES); object "
                "skipped",
                image_key=key,
            )
        )
        return
    out.add_label(key, label, POSITIVE)
    box = obj["bounding_box"]
    try:
        left, top, right, bottom = (float(box[f]) for f in MLPERF_BOX_FIELDS)
    except (KeyError, TypeError, ValueError):
        out.problems.append(
            Problem(
                str(path),
                f"{where}: bounding_box needs numeric "
                f"{list(MLPERF_BOX_FIELDS)}, got {box!r}; box skipped, label "
                "kept",
                image_key=key,
            )
        )
        return
    if not (left < right and top < bottom):
        out.problems.append(
            Problem(
                str(path),
                f"{where}: empty bounding_box {box!r}; box skipped, label kept",
                image_key=key,
            )
        )
        return
    out.box_rows.append((key, label, (left, top, right, bottom), False))


def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from None


def _require_fields(entry: Any, fields: Sequence[str], path: Path, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(
            f"{path}: {where} must be an object with fields {list(fields)}; "
            f"found {type(entry).__name__}"
        )
    missing = [f for f in fields if f not in entry]
    if missing:
        raise ValueError(f"{path}: {where} lacks fields {missing}; it has {sorted(entry)}")
