"""Source readers: one function per annotation format, each returning a `SourceTable`.

`READERS` maps the format name used in assembly configs to its reader.
"""

from __future__ import annotations

from collections.abc import Callable

from tagger.data.readers.ade20k import read_ade20k
from tagger.data.readers.api import read_api_predictions
from tagger.data.readers.coco import COCO_CATEGORIES, read_coco, read_coco_mlperf
from tagger.data.readers.internal_csv import read_internal_csv
from tagger.data.readers.keywords import read_keyword_folders
from tagger.data.readers.openimages import (
    read_openimages,
    read_openimages_boxes,
    read_openimages_labels,
)
from tagger.data.readers.voc import read_voc
from tagger.data.readers.yolo import load_class_names, read_yolo
from tagger.data.sources import SourceTable

READERS: dict[str, Callable[..., SourceTable]] = {
    "openimages": read_openimages,
    "coco": read_coco,
    "coco_mlperf": read_coco_mlperf,
    "voc": read_voc,
    "ade20k": read_ade20k,
    "yolo": read_yolo,
    "keyword_folders": read_keyword_folders,
    "internal_csv": read_internal_csv,
    "api_predictions": read_api_predictions,
}


def get_reader(format_name: str) -> Callable[..., SourceTable]:
    """The reader for a format name; ValueError listing the known formats otherwise."""
    if format_name not in READERS:
        raise ValueError(f"unknown source format {format_name!r}; known: {sorted(READERS)}")
    return READERS[format_name]


__all__ = [
    "COCO_CATEGORIES",
    "READERS",
    "get_reader",
    "load_class_names",
    "read_ade20k",
    "read_api_predictions",
    "read_coco",
    "read_coco_mlperf",
    "read_internal_csv",
    "read_keyword_folders",
    "read_openimages",
    "read_openimages_boxes",
    "read_openimages_labels",
    "read_voc",
    "read_yolo",
]
