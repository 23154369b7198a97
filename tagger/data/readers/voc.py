"""PASCAL VOC: one XML file per image (vocabulary "voc", class names such as "pottedplant")."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tagger.data.readers._common import absolute, make_boxes, make_images, make_labels, require_dir
from tagger.data.sources import EXPLICIT_UNKNOWN, POSITIVE, Problem, SourceTable

VOCABULARY = "voc"
DIFFICULT_POLICIES = ("ignore", "positive", "drop")
DifficultPolicy = Literal["ignore", "positive", "drop"]


@dataclass
class _Annotation:
    """One parsed XML file."""

    filename: str
    width: int | None
    height: int | None
    objects: list[tuple[str, bool, tuple[float, float, float, float] | None]]
    problems: list[str] = field(default_factory=list)


def read_voc(
    annotations_dir: str | Path,
    images_dir: str | Path,
    *,
    name: str = "voc",
    difficult: DifficultPolicy = "ignore",
) -> SourceTable:
    """Read a folder of VOC XML annotations into a `SourceTable`.

    image_key: the XML file's stem; path: `images_dir/<filename>` from the XML; width/height
    from `<size>`. Labels: object class names. `difficult` decides a class whose objects are
    all difficult: "ignore" -> `EXPLICIT_UNKNOWN` (neither positive nor negative), "positive"
    -> positive, "drop" -> the objects are removed (so an exhaustive mapping makes the class
    negative). Boxes: VOC 1-based inclusive pixels -> normalised `(xmin-1)/W, (ymin-1)/H,
    xmax/W, ymax/H`, flag `difficult` kept (none under "drop"). `<part>` elements (head,
    hand, foot) are ignored. Malformed XML: a problem, the image skipped.
    """
    if difficult not in DIFFICULT_POLICIES:
        raise ValueError(f"difficult={difficult!r} is not allowed; use one of {DIFFICULT_POLICIES}")
    folder = require_dir(annotations_dir, "VOC annotations")
    keys: list[str] = []
    paths: list[str] = []
    widths: list[int | None] = []
    heights: list[int | None] = []
    labels: dict[tuple[str, str], int] = {}
    box_rows: list[tuple[str, str, tuple[float, float, float, float], bool]] = []
    problems: list[Problem] = []
    for xml_path in sorted(folder.glob("*.xml")):
        key = xml_path.stem
        try:
            ann = _parse_voc_xml(xml_path)
        except (ET.ParseError, ValueError) as error:
            problems.append(Problem(str(xml_path), f"{error}; image skipped", image_key=key))
            continue
        problems.extend(Problem(str(xml_path), p, image_key=key) for p in ann.problems)
        keys.append(key)
        paths.append(absolute(Path(images_dir) / ann.filename))
        widths.append(ann.width)
        heights.append(ann.height)
        for label, is_difficult, box in ann.objects:
            if is_difficult and difficult == "drop":
                continue
            value = EXPLICIT_UNKNOWN if is_difficult and difficult == "ignore" else POSITIVE
            labels[(key, label)] = max(value, labels.get((key, label), value))
            if box is not None:
                box_rows.append((key, label, box, is_difficult))
    pairs = list(labels)
    return SourceTable(
        name=name,
        images=make_images(keys, paths, width=widths, height=heights),
        labels=make_labels(
            [k for k, _ in pairs], VOCABULARY, [lab for _, lab in pairs], list(labels.values())
        ),
        boxes=make_boxes(
            [r[0] for r in box_rows],
            VOCABULARY,
            [r[1] for r in box_rows],
            [r[2] for r in box_rows],
            difficult=[r[3] for r in box_rows],
        ),
        problems=problems,
    )


def _parse_voc_xml(path: Path) -> _Annotation:
    """Parse one VOC annotation; raises ValueError for a file that cannot be used at all."""
    root = ET.parse(path).getroot()
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip() or f"{path.stem}.jpg"
    problems: list[str] = []
    width = _int_or_none(root.findtext("size/width"))
    height = _int_or_none(root.findtext("size/height"))
    if not (width and height and width > 0 and height > 0):
        problems.append(
            f"<size> width/height missing or not positive ({width}/{height}); boxes skipped"
        )
        width = height = None
    objects: list[tuple[str, bool, tuple[float, float, float, float] | None]] = []
    # Direct <object> children only: person <part> elements nest inside <object>.
    for number, obj in enumerate(root.findall("object"), 1):
        label = (obj.findtext("name") or "").strip()
        if not label:
            problems.append(f"<object> #{number} has no <name>; object skipped")
            continue
        is_difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
        box = None
        if width and height:
            box = _normalised_box(obj.find("bndbox"), width, height)
            if box is None:
                problems.append(
                    f"<object> #{number} ({label}) has no usable <bndbox>; label kept, box skipped"
                )
        objects.append((label, is_difficult, box))
    return _Annotation(filename, width, height, objects, problems)


def _normalised_box(
    element: ET.Element | None, width: int, height: int
) -> tuple[float, float, float, float] | None:
    if element is None:
        return None
    try:
        xmin, ymin, xmax, ymax = (
            float(element.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")
        )
    except ValueError:
        return None
    if not (xmin <= xmax and ymin <= ymax):  # also false for nan
        return None
    return ((xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None
