"""Crawled keyword folders: `root/<keyword>/<image>`; the folder name is the source label."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tagger.data.readers._common import (
    IMAGE_EXTENSIONS,
    absolute,
    is_image_file,
    make_images,
    make_labels,
    require_dir,
)
from tagger.data.sources import POSITIVE, Problem, SourceTable

VOCABULARY = "keywords"


def read_keyword_folders(
    root: str | Path,
    *,
    name: str = "keywords",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> SourceTable:
    """Read crawled keyword folders into a `SourceTable`.

    Each sub-folder of `root` is a keyword (vocabulary "keywords", the folder name as is); its
    image files (by extension, case-insensitive) are images with that keyword positive.
    image_key: `<keyword>/<file name>`. The same photo in two folders is two images here;
    assembly merges them by content hash. Files in `root` itself, deeper folders and
    non-image files are reported as problems and skipped.
    """
    root_dir = require_dir(root, "keyword")
    extensions = tuple(e.lower() for e in extensions)
    keys: list[str] = []
    paths: list[str] = []
    keywords: list[str] = []
    problems: list[Problem] = []
    for entry in sorted(root_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            problems.append(Problem(str(entry), "file outside a keyword folder; skipped"))
            continue
        skipped: Counter[str] = Counter()
        for item in sorted(entry.iterdir()):
            if item.name.startswith("."):
                continue
            if item.is_dir():
                problems.append(
                    Problem(
                        str(item),
                        "nested folder (only one level of keyword folders is read); skipped",
                    )
                )
            elif is_image_file(item, extensions):
                keys.append(f"{entry.name}/{item.name}")
                paths.append(absolute(item))
                keywords.append(entry.name)
            else:
                skipped[item.suffix.lower() or "(no extension)"] += 1
        if skipped:
            problems.append(
                Problem(
                    str(entry),
                    f"skipped {sum(skipped.values())} files that are "
                    f"not images by extension {dict(skipped)}; allowed: "
                    f"{list(extensions)}",
                )
            )
    return SourceTable(
        name=name,
        images=make_images(keys, paths),
        labels=make_labels(keys, VOCABULARY, keywords, [POSITIVE] * len(keys)),
        problems=problems,
    )
