"""A tiny learnable tagging dataset drawn on the fly: images, resized cache, manifest, taxonomy.

Tag k is drawn as a square of colour k, so a small network can learn it; tag 0 is common and the
last tag rare (a long tail). One source does not know the last two tags (unknown, not negative).
Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from label_system.taxonomy import Taxonomy
from tagger.data.cache import build_cache
from tagger.data.images import hash_file
from tagger.data.manifest import write_manifest

COLOURS = [(230, 30, 30), (30, 200, 30), (40, 40, 230), (240, 220, 20), (200, 30, 220)]


@dataclass
class SyntheticData:
    """Paths and objects of a generated dataset."""

    root: Path
    manifest: pd.DataFrame
    manifest_path: Path
    taxonomy: Taxonomy
    cache_dir: Path
    cache_size: int


def tiny_taxonomy(num_tags: int) -> Taxonomy:
    """A flat taxonomy with tags t0..t{num_tags-1} in one category."""
    return Taxonomy.from_dict(
        {
            "name": "tiny",
            "version": "1",
            "categories": [{"id": "things", "names": {"en": "Things"}}],
            "tags": [
                {"id": f"t{k}", "names": {"en": f"Tag {k}"}, "category": "things"}
                for k in range(num_tags)
            ],
        }
    )


def make_synthetic_data(
    root: Path,
    n_images: int = 24,
    num_tags: int = 4,
    image_size: int = 48,
    cache_size: int = 32,
    n_folds: int = 3,
    seed: int = 0,
    cache: bool = True,
) -> SyntheticData:
    """Write `n_images` PNGs, their resized cache and a manifest under `root`."""
    rng = np.random.default_rng(seed)
    taxonomy = tiny_taxonomy(num_tags)
    tag_ids = list(taxonomy.tag_ids)
    prevalence = np.linspace(0.6, 0.12, num_tags)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        present = rng.random(num_tags) < prevalence
        pixels = rng.integers(90, 160, size=(image_size, image_size + 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        for k in np.flatnonzero(present):
            side = image_size // 3
            x, y = rng.integers(0, image_size - side, size=2)
            image.paste(COLOURS[k % len(COLOURS)], (int(x), int(y), int(x) + side, int(y) + side))
        path = image_dir / f"img{i:03d}.png"
        image.save(path)
        partial = i % 4 == 3  # a source that does not know the last two tags
        known = tag_ids[:-2] if partial else tag_ids
        tags = [t for t, p in zip(tag_ids, present, strict=True) if p and t in known]
        rows.append(
            {
                "image_id": f"img{i:03d}",
                "path": str(path),
                "content_hash": hash_file(path),
                "width": image.width,
                "height": image.height,
                "source": "partial" if partial else "full",
                "sources": ["partial" if partial else "full"],
                "tags": tags,
                "known": known,
                "provenance": [],
                "boxes": [],
                "mask_path": None,
                "fold": i % n_folds,
            }
        )
    manifest = pd.DataFrame(rows)
    manifest_path = write_manifest(manifest, root / "manifest.parquet")
    cache_dir = root / "cache"
    if cache:
        build_cache(
            manifest["path"].tolist(),
            manifest["content_hash"].tolist(),
            cache_dir,
            size=cache_size,
            workers=0,
        )
    return SyntheticData(root, manifest, manifest_path, taxonomy, cache_dir, cache_size)
