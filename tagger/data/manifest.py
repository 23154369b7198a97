"""The manifest: the one table every stage reads (Parquet on disk).

One row per unique image. Tags are stored by id; the taxonomy owns the column order of the
multi-hot matrices built from it (`targets_from_manifest`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from label_system.taxonomy import Taxonomy

BOX_TYPE = pa.struct(
    [
        ("tag", pa.string()),  # null when the source label maps to no tag
        ("source_label", pa.string()),
        ("xmin", pa.float32()),
        ("ymin", pa.float32()),
        ("xmax", pa.float32()),
        ("ymax", pa.float32()),
        ("difficult", pa.bool_()),
    ]
)
PROVENANCE_TYPE = pa.struct(
    [
        ("tag", pa.string()),
        ("source", pa.string()),
        ("source_label", pa.string()),
        ("kind", pa.string()),  # one of PROVENANCE_KINDS
    ]
)
PROVENANCE_KINDS = ("human", "mapped", "implied", "pseudo", "reviewed", "feedback")

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # content-hash prefix, or "<source>:<key>" when not hashed
        ("path", pa.string()),
        ("content_hash", pa.string()),  # sha256 hex of the file bytes ("" when not hashed)
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source", pa.string()),  # first source that listed the image
        ("sources", pa.list_(pa.string())),  # all sources (exact duplicates merged)
        ("tags", pa.list_(pa.string())),  # known positive tag ids
        ("known", pa.list_(pa.string())),  # tag ids whose value is known (positives + negatives)
        ("provenance", pa.list_(PROVENANCE_TYPE)),
        ("boxes", pa.list_(BOX_TYPE)),
        ("mask_path", pa.string()),
        ("fold", pa.int16()),
    ]
)
MANIFEST_COLUMNS = MANIFEST_SCHEMA.names


WRITE_BATCH_ROWS = 65_536  # rows written at a time (bounds memory for big manifests)


def write_manifest(table: pa.Table | pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest to Parquet (atomically) with the types of `MANIFEST_SCHEMA`.

    String values may come dictionary-encoded (as `tagger.data.assembly` builds them): they are
    written as they are (Parquet dictionary-encodes strings anyway) and read back as plain
    strings, so millions of tag strings are never materialised. Other columns are cast.
    """
    path = Path(path)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(
            table[MANIFEST_COLUMNS], schema=MANIFEST_SCHEMA, preserve_index=False
        )
    table = table.select(MANIFEST_COLUMNS)
    columns = [
        column if _without_dictionaries(column.type) == field.type else column.cast(field.type)
        for column, field in zip(table.columns, MANIFEST_SCHEMA, strict=True)
    ]
    table = pa.Table.from_arrays(columns, names=MANIFEST_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # store_schema=False: no Arrow schema in the file, so readers get plain strings back.
    with pq.ParquetWriter(tmp, table.schema, compression="zstd", store_schema=False) as writer:
        for batch in table.to_batches(max_chunksize=WRITE_BATCH_ROWS):
            writer.write_table(pa.Table.from_batches([batch], schema=table.schema))
    tmp.replace(path)
    return path


def _without_dictionaries(type_: pa.DataType) -> pa.DataType:
    """`type_` with dictionary<..., string> replaced by string, inside lists and structs too."""
    if pa.types.is_dictionary(type_):
        return _without_dictionaries(type_.value_type)
    if pa.types.is_list(type_):
        return pa.list_(_without_dictionaries(type_.value_type))
    if pa.types.is_struct(type_):
        return pa.struct([f.with_type(_without_dictionaries(f.type)) for f in type_])
    return type_


def read_manifest(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a manifest written by `write_manifest`; names the file and missing columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    table = pq.read_table(path, columns=columns)
    missing = [c for c in (columns or MANIFEST_COLUMNS) if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a manifest, missing columns {missing}")
    return table.to_pandas()


def targets_from_manifest(
    manifest: pd.DataFrame, taxonomy: Taxonomy
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot targets and the known mask, both `[N, num_tags]`.

    targets: float32, 1 where the tag is a known positive.
    known: bool, True where the tag's value is known (positive or verified/implied negative).
    Tag ids not in `taxonomy` raise a ValueError naming them.
    """
    n, t = len(manifest), len(taxonomy)
    targets = np.zeros((n, t), dtype=np.float32)
    known = np.zeros((n, t), dtype=bool)
    for column, out in (("tags", targets), ("known", known)):
        lengths = manifest[column].map(len).to_numpy()
        rows = np.repeat(np.arange(n), lengths)
        parts = [np.asarray(v, dtype=object) for v in manifest[column]]
        flat = np.concatenate(parts) if n else np.zeros(0, dtype=object)
        if len(flat) == 0:
            continue
        codes = pd.Categorical(flat, categories=list(taxonomy.tag_ids)).codes
        if (codes < 0).any():
            bad = sorted(set(np.asarray(flat)[codes < 0].tolist()))[:10]
            raise ValueError(
                f"manifest column {column!r} has tags not in taxonomy {taxonomy.name!r}: {bad}"
            )
        out[rows, codes] = 1
    known |= targets.astype(bool)
    return targets, known
