"""A small labelled world for the clean tests: taxonomy with guidelines, images, manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from label_system.taxonomy import Taxonomy
from tagger.data.images import hash_file
from tagger.data.manifest import write_manifest
from tagger.train.predictions import Predictions, write_predictions

TAGS = ("animal", "dog", "cat", "beach")


def clean_taxonomy() -> Taxonomy:
    """animal > dog, cat; beach. dog and beach carry annotation guidelines."""
    return Taxonomy.from_dict(
        {
            "name": "clean-test",
            "version": "1",
            "categories": [{"id": "things", "names": {"en": "Things"}}],
            "tags": [
                {"id": "animal", "names": {"en": "Animal"}, "category": "things"},
                {
                    "id": "dog",
                    "names": {"en": "Dog"},
                    "category": "things",
                    "parents": ["animal"],
                    "guideline": {
                        "counts": "a real dog",
                        "excludes": "wolves and toy dogs",
                        "look_alikes": ["wolf", "fox"],
                    },
                },
                {"id": "cat", "names": {"en": "Cat"}, "category": "things", "parents": ["animal"]},
                {
                    "id": "beach",
                    "names": {"en": "Beach"},
                    "category": "things",
                    "guideline": {"counts": "a sandy shore", "excludes": "deserts"},
                },
            ],
        }
    )


@dataclass
class World:
    root: Path
    manifest: pd.DataFrame
    manifest_path: Path
    taxonomy: Taxonomy


def make_world(root: Path, rows: list[tuple[list[str], list[str]]], source: str = "src") -> World:
    """One image per row of (positive tags, known tags); images are tiny distinct JPEGs."""
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (tags, known) in enumerate(rows):
        path = root / f"img{i:03d}.jpg"
        colour = ((37 * i) % 256, (91 * i) % 256, (53 * i + 17) % 256)
        Image.new("RGB", (20 + i % 7, 16), colour).save(path, quality=95)
        digest = hash_file(path)
        records.append(
            {
                "image_id": digest[:16],
                "path": str(path),
                "content_hash": digest,
                "width": 20 + i % 7,
                "height": 16,
                "source": source,
                "sources": [source],
                "tags": sorted(tags, key=TAGS.index),
                "known": sorted(set(known) | set(tags), key=TAGS.index),
                "provenance": [
                    {"tag": t, "source": source, "source_label": t, "kind": "human"} for t in tags
                ],
                "boxes": [],
                "mask_path": None,
                "fold": i % 3,
            }
        )
    manifest = pd.DataFrame(records)
    path = write_manifest(manifest, root / "manifest.parquet")
    from tagger.data.manifest import read_manifest

    return World(root, read_manifest(path), path, clean_taxonomy())


def write_oof(world: World, probs: np.ndarray, path: Path | None = None) -> Path:
    """An out-of-fold predictions file for the world's images."""
    pred = Predictions(
        image_ids=world.manifest["image_id"].to_numpy(dtype=object),
        folds=world.manifest["fold"].to_numpy(),
        probs=probs.astype(np.float32),
        tag_ids=world.taxonomy.tag_ids,
    )
    return write_predictions(pred, path or world.root / "oof.parquet")
