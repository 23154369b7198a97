"""Helpers the readers share: absolute paths, table builders with fixed dtypes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tagger.data.sources import BOX_COLUMNS, LABEL_COLUMNS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".heic")


def absolute(path: str | Path) -> str:
    """The absolute path as a string, without resolving symlinks (the user's path stays)."""
    return os.path.abspath(os.fspath(path))


def require_file(path: str | Path, what: str) -> Path:
    """`path` as a Path; raises FileNotFoundError naming `what` when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {absolute(path)}")
    return path


def require_dir(path: str | Path, what: str) -> Path:
    """`path` as a Path; raises FileNotFoundError naming `what` when it is not a folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {absolute(path)}")
    return path


def is_image_file(path: Path, extensions: Sequence[str]) -> bool:
    """True for a visible file whose suffix is in `extensions` (case-insensitive)."""
    suffix = path.suffix.lower()
    if path.name.startswith(".") or not any(suffix == e.lower() for e in extensions):
        return False
    return path.is_file()


def make_images(
    keys: Sequence[str],
    paths: Sequence[str],
    *,
    width: Sequence[int | None] | None = None,
    height: Sequence[int | None] | None = None,
    mask_path: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """The images table: `image_key`, `path` (+ `width`/`height` as Int32, `mask_path`)."""
    data: dict[str, object] = {
        "image_key": pd.Series(list(keys), dtype=object),
        "path": pd.Series(list(paths), dtype=object),
    }
    if width is not None and height is not None:
        data["width"] = pd.array(list(width), dtype="Int32")
        data["height"] = pd.array(list(height), dtype="Int32")
    if mask_path is not None:
        data["mask_path"] = pd.Series(list(mask_path), dtype=object)
    return pd.DataFrame(data)


def make_labels(
    keys: Sequence[str],
    vocabulary: str | Sequence[str],
    labels: Sequence[str],
    values: Sequence[int],
    **extra: Sequence[float] | np.ndarray,
) -> pd.DataFrame:
    """The labels table (long): `image_key`, `vocabulary`, `label`, `value` (int8) + extras."""
    n = len(keys)
    vocab = [vocabulary] * n if isinstance(vocabulary, str) else list(vocabulary)
    data: dict[str, object] = {
        "image_key": pd.Series(list(keys), dtype=object),
        "vocabulary": pd.Series(vocab, dtype=object),
        "label": pd.Series(list(labels), dtype=object),
        "value": np.asarray(values, dtype=np.int8).reshape(n),
    }
    for column, values_ in extra.items():
        data[column] = np.asarray(values_, dtype=np.float32).reshape(n)
    frame = pd.DataFrame(data)
    return frame[[*LABEL_COLUMNS, *extra]]


def make_boxes(
    keys: Sequence[str],
    vocabulary: str,
    labels: Sequence[str],
    xyxy: Sequence[Sequence[float]] | np.ndarray,
    difficult: Sequence[bool] | None = None,
    **extra: Sequence[float] | np.ndarray,
) -> pd.DataFrame:
    """The boxes table: normalised `xmin ymin xmax ymax` (float32, clipped to 0..1) + extras."""
    n = len(keys)
    coords = np.clip(np.asarray(xyxy, dtype=np.float32).reshape(n, 4), 0.0, 1.0)
    data: dict[str, object] = {
        "image_key": pd.Series(list(keys), dtype=object),
        "vocabulary": pd.Series([vocabulary] * n, dtype=object),
        "label": pd.Series(list(labels), dtype=object),
    }
    for i, column in enumerate(("xmin", "ymin", "xmax", "ymax")):
        data[column] = coords[:, i]
    flags = np.zeros(n, dtype=bool) if difficult is None else np.asarray(difficult, dtype=bool)
    data["difficult"] = flags.reshape(n)
    for column, values_ in extra.items():
        data[column] = np.asarray(values_, dtype=np.float32).reshape(n)
    return pd.DataFrame(data)[[*BOX_COLUMNS, *extra]]
