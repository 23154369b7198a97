"""Tiny taxonomy, mappings, images and source tables for the assembly tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from label_system.mapping import MappingEntry, Negatives, SourceMapping, identity_mapping
from label_system.taxonomy import Taxonomy
from tagger.data.sources import SourceTable, empty_boxes

TAXONOMY = {
    "name": "tiny",
    "version": "1",
    "categories": [
        {"id": "animals", "names": {"en": "Animals"}},
        {"id": "vehicles", "names": {"en": "Vehicles"}},
        {"id": "nature", "names": {"en": "Nature"}},
    ],
    "tags": [
        {"id": "animal", "names": {"en": "Animal"}, "category": "animals"},
        {"id": "dog", "names": {"en": "Dog"}, "category": "animals", "parents": ["animal"]},
        {"id": "puppy", "names": {"en": "Puppy"}, "category": "animals", "parents": ["dog"]},
        {"id": "cat", "names": {"en": "Cat"}, "category": "animals", "parents": ["animal"]},
        {"id": "vehicle", "names": {"en": "Vehicle"}, "category": "vehicles"},
        {"id": "car", "names": {"en": "Car"}, "category": "vehicles", "parents": ["vehicle"]},
        {"id": "tree", "names": {"en": "Tree"}, "category": "nature"},
        {"id": "sky", "names": {"en": "Sky"}, "category": "nature"},
    ],
}


def tiny_taxonomy() -> Taxonomy:
    return Taxonomy.from_dict(TAXONOMY)


def _mapping(vocabulary: str, negatives: Negatives, entries: Sequence[tuple]) -> SourceMapping:
    """A mapping from (label, tags, partial) triples."""
    return SourceMapping(
        vocabulary,
        negatives,
        [
            MappingEntry(name=label, tags=tuple(tags), partial=partial)
            for label, tags, partial in entries
        ],
    )


def tiny_mappings() -> dict[str, SourceMapping]:
    """openimages (verified), coco (exhaustive over dog/cat/car), keywords (none), tags."""
    oi = _mapping(
        "openimages",
        "verified",
        [
            ("/m/dog", ["dog"], False),
            ("/m/cat", ["cat"], False),
            ("/m/car", ["car"], False),
            ("/m/animal", ["animal"], False),
            ("/m/pet", ["dog", "cat"], True),
        ],
    )
    coco = _mapping(
        "coco",
        "exhaustive",
        [("dog", ["dog"], False), ("cat", ["cat"], False), ("car", ["car"], False)],
    )
    keywords = _mapping(
        "keywords", "none", [("puppies", ["puppy"], False), ("forest", ["tree", "sky"], False)]
    )
    tags = identity_mapping(tiny_taxonomy(), negatives="verified")
    return {m.vocabulary: m for m in (oi, coco, keywords, tags)}


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 16), fmt: str = "PNG") -> str:
    """A small image with distinct content per seed; returns the path as a string."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return str(path)


def source(
    name: str,
    images: dict[str, str],
    labels: Sequence[tuple[str, str, str, int]],
    boxes: Sequence[tuple[str, str, str, float, float, float, float]] = (),
) -> SourceTable:
    """A SourceTable from {key: path} and (key, vocabulary, label, value) rows."""
    image_frame = pd.DataFrame({"image_key": list(images), "path": list(images.values())})
    label_frame = pd.DataFrame(list(labels), columns=["image_key", "vocabulary", "label", "value"])
    label_frame["value"] = label_frame["value"].astype("int8")
    box_frame = empty_boxes()
    if boxes:
        box_frame = pd.DataFrame(
            list(boxes),
            columns=["image_key", "vocabulary", "label", "xmin", "ymin", "xmax", "ymax"],
        )
        box_frame["difficult"] = False
    return SourceTable(name, image_frame, label_frame, box_frame)
