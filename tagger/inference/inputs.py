"""Input images of a prediction job: a folder, a manifest, images, read lazily in a stable order."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from tagger.inference.options import IMAGE_EXTENSIONS, MANIFEST_SUFFIXES, InputItem, Inputs


def iter_inputs(inputs: Inputs) -> Iterator[InputItem]:
    """The input images in a stable order, lazily (a folder or manifest is never listed whole).

    A str/Path names a folder (recursive, sorted, `IMAGE_EXTENSIONS` only), a manifest
    (`.parquet`: column `path`, optional `image_id`; relative paths are taken relative to the
    manifest's folder) or one image. Any other iterable holds image paths or `InputItem`s;
    a path's image_id is the path as given.
    """
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        if path.is_dir():
            yield from _iter_folder(path)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from _iter_manifest(path)
        else:
            yield InputItem(os.fspath(inputs), os.fspath(inputs))
        return
    for entry in inputs:
        if isinstance(entry, InputItem):
            yield entry
        elif isinstance(entry, str | os.PathLike):
            yield InputItem(os.fspath(entry), os.fspath(entry))
        else:
            raise TypeError(
                f"inputs: entry {entry!r} is a {type(entry).__name__}; expected a path or InputItem"
            )


def count_inputs(inputs: Inputs) -> int | None:
    """How many images `iter_inputs` yields, when that is cheap to know (for a progress bar)."""
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        if path.is_dir():
            return sum(1 for _ in _iter_folder(path))
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        return 1
    return len(inputs) if isinstance(inputs, Sequence) else None


def _iter_folder(folder: Path) -> Iterator[InputItem]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                path = os.path.join(root, name)
                yield InputItem(path, path)


def _iter_manifest(path: Path) -> Iterator[InputItem]:
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if "path" not in names:
        raise ValueError(f"{path}: manifest has no column 'path' (columns: {names})")
    columns = ["path"] + (["image_id"] if "image_id" in names else [])
    base = path.parent
    row = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=65536):
        data = batch.to_pydict()
        ids = data.get("image_id") or data["path"]
        for image_id, image_path in zip(ids, data["path"], strict=True):
            row += 1
            if not image_path:
                raise ValueError(f"{path}: row {row}: column 'path' is empty")
            full = image_path if os.path.isabs(image_path) else os.fspath(base / image_path)
            yield InputItem(str(image_id if image_id else image_path), full)
