"""ADE20K SceneParsing: 8-bit label maps + scene categories.

Vocabularies: "ade20k_objects" (objectInfo150 `Idx` as a string, "1".."150") and
"ade20k_scenes" (scene name, e.g. "airport_terminal").
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

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
from tagger.data.sources import EXPLICIT_UNKNOWN, POSITIVE, Problem, SourceTable

OBJECTS_VOCABULARY = "ade20k_objects"
SCENES_VOCABULARY = "ade20k_scenes"
UNLABELLED = 0
PAD = 255
DEFAULT_NUM_CLASSES = 150


@dataclass(frozen=True)
class MaskStats:
    """What one label map says: per-class pixel counts and mask-region boxes.

    classes: int64 [K] class values present; pixels: int64 [K] their pixel counts;
    boxes: float32 [K, 4] normalised xmin, ymin, xmax, ymax of each class's pixels;
    labelled: pixels with a class value; invalid: pixels above the class range but not pad.
    """

    classes: np.ndarray
    pixels: np.ndarray
    boxes: np.ndarray
    labelled: int
    invalid: int


def read_ade20k(
    root: str | Path,
    *,
    name: str = "ade20k",
    min_pixel_fraction: float = 0.001,
    workers: int = 4,
) -> SourceTable:
    """Read an ADE20K SceneParsing folder into a `SourceTable`.

    root holds `images/*.jpg`, `annotations/<stem>.png` (8-bit label maps: value = objectInfo150
    Idx, 0 unlabelled, 255 pad), `sceneCategories.txt` (`<stem> <scene>`) and optionally
    `objectInfo150.csv` (number of classes). A class's pixel fraction = its pixels / labelled
    pixels (values 1..num_classes; unlabelled and pad are left out). Fraction >=
    `min_pixel_fraction` -> positive, below -> `EXPLICIT_UNKNOWN` (seen, too small to teach a
    whole-image tag). Boxes: each present class's mask-region bounding box (normalised by the
    label map's size, which covers the same letterboxed frame as the image) with
    `pixel_fraction`. images get `mask_path`. An image without a label map is skipped (its
    objects would otherwise read as exhaustive negatives).
    """
    if not 0.0 <= min_pixel_fraction < 1.0:
        raise ValueError(f"min_pixel_fraction={min_pixel_fraction!r}; allowed: 0 <= x < 1")
    root = require_dir(root, "ADE20K")
    images_dir = require_dir(root / "images", "ADE20K images")
    masks_dir = require_dir(root / "annotations", "ADE20K annotations")
    problems: list[Problem] = []
    num_classes = _read_num_classes(root / "objectInfo150.csv")
    scenes = _read_scenes(require_file(root / "sceneCategories.txt", "ADE20K scenes"), problems)
    image_paths, mask_paths = _pair_files(images_dir, masks_dir, problems)
    keys = list(image_paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda k: _try_mask_stats(mask_paths[k], num_classes), keys))
    table = _Rows()
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, str):
            problems.append(
                Problem(str(mask_paths[key]), f"{result}; image skipped", image_key=key)
            )
            continue
        table.add_image(key, image_paths[key], mask_paths[key], result, min_pixel_fraction)
        if result.invalid:
            problems.append(
                Problem(
                    str(mask_paths[key]),
                    f"{result.invalid} pixels have values "
                    f"above {num_classes} (not pad {PAD}); ignored",
                    image_key=key,
                )
            )
        if result.labelled == 0:
            problems.append(Problem(str(mask_paths[key]), "no labelled pixels", image_key=key))
        if key in scenes:
            table.label_rows.append((key, SCENES_VOCABULARY, scenes[key], POSITIVE))
        else:
            problems.append(
                Problem(str(root / "sceneCategories.txt"), "no scene for this image", image_key=key)
            )
    return table.to_table(name, problems)


class _Rows:
    """Rows of the three tables, filled image by image."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.paths: list[str] = []
        self.mask_paths: list[str] = []
        self.label_rows: list[tuple[str, str, str, int]] = []
        self.box_keys: list[str] = []
        self.box_labels: list[str] = []
        self.box_coords: list[np.ndarray] = []
        self.box_fractions: list[np.ndarray] = []

    def add_image(
        self, key: str, path: Path, mask_path: Path, stats: MaskStats, min_fraction: float
    ) -> None:
        self.keys.append(key)
        self.paths.append(absolute(path))
        self.mask_paths.append(absolute(mask_path))
        fractions = stats.pixels / max(stats.labelled, 1)
        names = [str(c) for c in stats.classes]
        for label, fraction in zip(names, fractions, strict=True):
            value = POSITIVE if fraction >= min_fraction else EXPLICIT_UNKNOWN
            self.label_rows.append((key, OBJECTS_VOCABULARY, label, value))
        self.box_keys.extend([key] * len(names))
        self.box_labels.extend(names)
        self.box_coords.append(stats.boxes)
        self.box_fractions.append(fractions)

    def to_table(self, name: str, problems: list[Problem]) -> SourceTable:
        rows = self.label_rows
        coords = np.concatenate(self.box_coords) if self.box_coords else np.zeros((0, 4))
        fractions = np.concatenate(self.box_fractions) if self.box_fractions else np.zeros(0)
        return SourceTable(
            name=name,
            images=make_images(self.keys, self.paths, mask_path=self.mask_paths),
            labels=make_labels(
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ),
            boxes=make_boxes(
                self.box_keys,
                OBJECTS_VOCABULARY,
                self.box_labels,
                coords,
                pixel_fraction=fractions,
            ),
            problems=problems,
        )


def compute_mask_stats(mask: np.ndarray, num_classes: int = DEFAULT_NUM_CLASSES) -> MaskStats:
    """Per-class pixel counts and bounding boxes of a label map.

    mask: uint8 [H, W], values 0 (unlabelled), 1..num_classes, 255 (pad). Two passes in C: a
    bincount for the counts and `scipy.ndimage.find_objects` for each value's extent.
    """
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"label map must be uint8 [H, W], got {mask.dtype} {list(mask.shape)}")
    height, width = mask.shape
    counts = np.bincount(mask.ravel(), minlength=256)
    classes = np.flatnonzero(counts[1 : num_classes + 1]) + 1
    extents = ndimage.find_objects(mask, max_label=num_classes)
    boxes = np.array(
        [
            (cols.start / width, rows.start / height, cols.stop / width, rows.stop / height)
            for rows, cols in (extents[c - 1] for c in classes)
        ],
        dtype=np.float32,
    )
    return MaskStats(
        classes=classes,
        pixels=counts[classes],
        boxes=boxes.reshape(len(classes), 4),
        labelled=int(counts[1 : num_classes + 1].sum()),
        invalid=int(counts[num_classes + 1 : PAD].sum()),
    )


def _try_mask_stats(path: Path, num_classes: int) -> MaskStats | str:
    """`compute_mask_stats` of a PNG file, or the reason it cannot be read."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                return f"label map mode is {image.mode}, expected 8-bit single channel (L or P)"
            mask = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        return f"cannot read label map ({error})"
    return compute_mask_stats(mask, num_classes)


def _pair_files(
    images_dir: Path, masks_dir: Path, problems: list[Problem]
) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and label maps with the same stem; the unpaired ones become problems."""
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if is_image_file(p, IMAGE_EXTENSIONS)}
    masks = {p.stem: p for p in sorted(masks_dir.glob("*.png"))}
    problems.extend(
        Problem(str(masks[k]), "label map without an image; ignored", image_key=k)
        for k in sorted(masks.keys() - images.keys())
    )
    problems.extend(
        Problem(str(path), "image without a label map in annotations/; skipped", image_key=k)
        for k, path in images.items()
        if k not in masks
    )
    paired = [k for k in images if k in masks]
    return {k: images[k] for k in paired}, {k: masks[k] for k in paired}


def _read_num_classes(path: Path) -> int:
    """Number of object classes: the largest Idx in objectInfo150.csv (150 when absent)."""
    if not path.is_file():
        return DEFAULT_NUM_CLASSES
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "Idx" not in reader.fieldnames:
            raise ValueError(f"{path}: header must have an 'Idx' column; found {reader.fieldnames}")
        ids = []
        for line, row in enumerate(reader, 2):
            try:
                ids.append(int(row["Idx"]))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}: line {line}: Idx={row['Idx']!r} is not an integer"
                ) from None
    if not ids or max(ids) >= PAD:
        raise ValueError(f"{path}: Idx must be 1..254 with at least one row; found {len(ids)} rows")
    return max(ids)


def _read_scenes(path: Path, problems: list[Problem]) -> dict[str, str]:
    """sceneCategories.txt: `<image stem> <scene>` per line -> {stem: scene}."""
    scenes: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                problems.append(
                    Problem(
                        str(path),
                        f"expected '<image id> <scene>', got {line.strip()!r}; line ignored",
                        row=line_number,
                    )
                )
                continue
            scenes[fields[0]] = fields[1]
    return scenes
