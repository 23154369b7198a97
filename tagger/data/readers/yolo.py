"""YOLO txt labels: a file per image, a `<class> <cx> <cy> <w> <h>` line per box (normalised)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from tagger.data.readers._common import (
    IMAGE_EXTENSIONS,
    absolute,
    is_image_file,
    make_boxes,
    make_images,
    make_labels,
    require_dir,
    require_file,
)
from tagger.data.sources import POSITIVE, Problem, SourceTable

_COORD_TOLERANCE = 1e-3  # exporters round; a box this far outside 0..1 is clipped, not refused


def read_yolo(
    images_dir: str | Path,
    labels_dir: str | Path,
    class_names: Sequence[str] | str | Path,
    *,
    name: str = "yolo",
    vocabulary: str = "yolo",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> SourceTable:
    """Read YOLO detection labels into a `SourceTable`.

    Every image under `images_dir` (recursively) is an image; its labels are in
    `labels_dir/<same relative path>.txt` (no file = no objects, a background image).
    class_names: the names in class-index order, or a path to a `data.yaml` (`names:` list or
    {index: name}) or to a text file with one name per line. image_key: the relative path
    without extension. Labels: class names (vocabulary `vocabulary`). Bad lines become
    problems naming the file and line; the image is kept.
    """
    names = [str(n) for n in _class_names(class_names)]
    if not names:
        raise ValueError("class_names is empty; give the class names in index order")
    images_root = require_dir(images_dir, "YOLO images")
    labels_root = Path(labels_dir)
    images = sorted(p for p in images_root.rglob("*") if is_image_file(p, extensions))
    keys = [p.relative_to(images_root).with_suffix("").as_posix() for p in images]
    labels: dict[tuple[str, str], int] = {}
    box_rows: list[tuple[str, str, tuple[float, float, float, float]]] = []
    problems: list[Problem] = []
    for key in keys:
        label_file = labels_root / f"{key}.txt"
        if not label_file.is_file():
            continue  # a background image: every class absent
        for line_number, text in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
            parsed = _parse_line(text, names)
            if isinstance(parsed, str):
                problems.append(
                    Problem(str(label_file), f"{parsed}; line skipped", line_number, key)
                )
            elif parsed is not None:
                labels[(key, parsed[0])] = POSITIVE
                box_rows.append((key, *parsed))
    problems.extend(_orphan_label_files(labels_root, set(keys)))
    pairs = list(labels)
    return SourceTable(
        name=name,
        images=make_images(keys, [absolute(p) for p in images]),
        labels=make_labels(
            [k for k, _ in pairs], vocabulary, [lab for _, lab in pairs], list(labels.values())
        ),
        boxes=make_boxes(
            [r[0] for r in box_rows], vocabulary, [r[1] for r in box_rows], [r[2] for r in box_rows]
        ),
        problems=problems,
    )


def _class_names(class_names: Sequence[str] | str | Path) -> Sequence[str]:
    if isinstance(class_names, str | Path):
        return load_class_names(class_names)
    return class_names


def _orphan_label_files(labels_root: Path, image_keys: set[str]) -> list[Problem]:
    if not labels_root.is_dir():
        return []
    return [
        Problem(str(p), "label file without an image; ignored")
        for p in sorted(labels_root.rglob("*.txt"))
        if p.relative_to(labels_root).with_suffix("").as_posix() not in image_keys
    ]


def _parse_line(
    text: str, names: Sequence[str]
) -> tuple[str, tuple[float, float, float, float]] | str | None:
    """(class name, normalised xyxy) for a box line, None for a blank line, else the reason."""
    fields = text.split()
    if not fields:
        return None
    if len(fields) != 5:
        return f"expected 5 fields '<class> <cx> <cy> <w> <h>', got {len(fields)}: {text.strip()!r}"
    try:
        index = int(fields[0])
        cx, cy, w, h = (float(f) for f in fields[1:])
    except ValueError:
        return f"class must be an integer and coordinates numbers, got {text.strip()!r}"
    if not 0 <= index < len(names):
        return f"class {index} is out of range 0..{len(names) - 1}"
    xyxy = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    lo, hi = -_COORD_TOLERANCE, 1 + _COORD_TOLERANCE
    if not (w > 0 and h > 0 and all(lo <= v <= hi for v in xyxy)):
        return f"box {fields[1:]} is empty or outside the image (normalised 0..1)"
    return names[index], xyxy


def load_class_names(path: str | Path) -> list[str]:
    """Class names in index order from a YOLO `data.yaml` (`names`) or a one-per-line file."""
    path = require_file(path, "YOLO class names")
    if path.suffix.lower() not in (".yaml", ".yml"):
        return [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            indices = sorted(int(k) for k in names)
        except ValueError:
            raise ValueError(
                f"{path}: 'names' keys must be class indices, got {list(names)}"
            ) from None
        if indices != list(range(len(indices))):
            raise ValueError(
                f"{path}: 'names' indices must be 0..{len(indices) - 1}, got {indices}"
            )
        return [str(names[k]) if k in names else str(names[str(k)]) for k in indices]
    raise ValueError(f"{path}: expected 'names:' as a list or a {{index: name}} mapping")
