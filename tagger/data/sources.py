"""What every source reader returns: one `SourceTable` in long format.

Readers keep the source's own vocabulary (source labels); mapping to tags happens in assembly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

IMAGE_COLUMNS = ["image_key", "path"]  # optional: mask_path, width, height
LABEL_COLUMNS = ["image_key", "vocabulary", "label", "value"]
BOX_COLUMNS = ["image_key", "vocabulary", "label", "xmin", "ymin", "xmax", "ymax", "difficult"]

POSITIVE = 1
VERIFIED_NEGATIVE = 0
# The source saw the label but does not commit either way (a VOC class present only as
# `difficult`, an ADE20K class under the pixel-fraction threshold, a COCO class present only as
# crowd when crowds are excluded). Overrides the exhaustive negative of the source's vocabulary.
EXPLICIT_UNKNOWN = -1


@dataclass(frozen=True)
class Problem:
    """A reported, non-fatal problem with one input (an image, a row, an annotation)."""

    file: str
    reason: str
    row: int | None = None
    image_key: str | None = None

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        key = f" [{self.image_key}]" if self.image_key else ""
        return f"{where}{key}: {self.reason}"


@dataclass
class SourceTable:
    """The images of one source and their source labels.

    images: one row per image. `image_key` (str, unique in the source), `path` (str, absolute);
        optional `mask_path` (str), `width`, `height` (int).
    labels: long format. `image_key`, `vocabulary` (str: which mapping applies, e.g. "coco",
        "ade20k_scenes"), `label` (str source label: an id or a name, as the vocabulary's mapping
        keys it), `value` (int8: 1 positive, 0 verified negative, -1 `EXPLICIT_UNKNOWN`;
        absent rows are unknown unless the vocabulary's mapping is exhaustive). A reader may
        add columns, e.g. `score` (float32, API predictions); string columns may be pandas
        `category`; the same (image_key, vocabulary, label) may repeat (Open Images lists one
        row per annotation source), so assembly resolves duplicates.
    boxes: `image_key`, `vocabulary`, `label`, `xmin ymin xmax ymax` (float32, normalised to
        0..1 of the image), `difficult` (bool); readers may add columns (e.g. `pixel_fraction`).
    problems: inputs that were skipped or repaired, with the reason.
    """

    name: str
    images: pd.DataFrame
    labels: pd.DataFrame
    boxes: pd.DataFrame = field(default_factory=lambda: empty_boxes())
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        for frame, cols, what in (
            (self.images, IMAGE_COLUMNS, "images"),
            (self.labels, LABEL_COLUMNS, "labels"),
            (self.boxes, BOX_COLUMNS, "boxes"),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise ValueError(f"source {self.name!r}: {what} table lacks columns {missing}")


def empty_labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_key": pd.Series([], dtype=str),
            "vocabulary": pd.Series([], dtype=str),
            "label": pd.Series([], dtype=str),
            "value": pd.Series([], dtype="int8"),
        }
    )


def empty_boxes() -> pd.DataFrame:
    data: dict[str, pd.Series] = {
        "image_key": pd.Series([], dtype=str),
        "vocabulary": pd.Series([], dtype=str),
        "label": pd.Series([], dtype=str),
    }
    for c in ("xmin", "ymin", "xmax", "ymax"):
        data[c] = pd.Series([], dtype="float32")
    data["difficult"] = pd.Series([], dtype=bool)
    return pd.DataFrame(data)
