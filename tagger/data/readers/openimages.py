"""Open Images: the image-level label CSV and the box CSV (vocabulary "openimages", MIDs).

Built for tens of millions of rows: pyarrow's multithreaded CSV reader with explicit column
types, strings dictionary-encoded (pandas `category`), checks done on the dictionaries, and no
Python loop over rows. The label CSV is streamed block by block into integer codes, so peak
memory is the codes plus one block, not the parsed file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pandas.api.types import union_categoricals

from tagger.data.readers._common import absolute, require_file
from tagger.data.sources import POSITIVE, SourceTable

VOCABULARY = "openimages"
LABEL_CSV_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
BOX_CSV_COLUMNS = (
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
    "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
)  # fmt: skip
# Box flags kept as int8 columns of the boxes table (1 yes, 0 no, -1 unknown in Open Images).
BOX_FLAGS = {
    "IsOccluded": "occluded",
    "IsTruncated": "truncated",
    "IsGroupOf": "group_of",
    "IsDepiction": "depiction",
    "IsInside": "inside",
}
MAX_REPORTED = 5  # bad rows listed in an error message
BLOCK_SIZE = 1 << 24  # bytes of CSV parsed per block
_DICT = pa.dictionary(pa.int32(), pa.string())
_COORD_TOLERANCE = 1e-6


def read_openimages(
    labels_csv: str | Path,
    images_dir: str | Path,
    *,
    boxes_csv: str | Path | None = None,
    name: str = "openimages",
    image_ext: str = ".jpg",
) -> SourceTable:
    """Read Open Images image-level labels (and boxes) into a `SourceTable`.

    labels: `ImageID,Source,LabelName,Confidence`; Confidence 1 = positive, 0 = verified
    negative, a MID absent for an image = unknown. boxes (optional): the box CSV with
    normalised `XMin,XMax,YMin,YMax`; a box also makes its (image, MID) positive. Images are
    every ImageID of either file, at `images_dir/<ImageID><image_ext>` (not checked here).
    String columns of labels and boxes are pandas `category`. Raises ValueError naming the
    file, line, field and allowed values for a bad header or bad rows.
    """
    labels = read_openimages_labels(labels_csv)
    boxes = pd.DataFrame()
    if boxes_csv is not None:
        boxes = read_openimages_boxes(boxes_csv)
        labels = _add_box_positives(labels, boxes)
    keys = labels["image_key"].cat.categories
    if len(boxes):
        keys = keys.union(boxes["image_key"].cat.categories, sort=False)
    prefix = absolute(images_dir) + os.sep
    paths = pc.binary_join_element_wise(
        prefix, pa.array(keys.to_numpy(dtype=object), pa.string()), image_ext, ""
    )
    images = pd.DataFrame(
        {"image_key": keys.to_numpy(dtype=object), "path": paths.to_numpy(zero_copy_only=False)}
    )
    if boxes_csv is None:
        return SourceTable(name=name, images=images, labels=labels)
    return SourceTable(name=name, images=images, labels=labels, boxes=boxes)


def read_openimages_labels(csv_path: str | Path, *, vocabulary: str = VOCABULARY) -> pd.DataFrame:
    """Read an Open Images image-level label CSV into the long labels table.

    Returns columns `image_key`, `vocabulary`, `label` (category) and `value` (int8: 1 or 0),
    one row per CSV row, in file order. Confidence must be 0 or 1 (`0.0`/`1.0` accepted).
    Streamed in blocks, each turned into integer codes at once: memory holds the codes
    (int32 image + int16 label + int8 value per row) and the distinct strings, never the file.
    """
    path = require_file(csv_path, "Open Images label CSV")
    frame = _read_coded_csv(path, ("ImageID", "LabelName", "Confidence"), schema=LABEL_CSV_COLUMNS)
    _check_not_empty(frame, path, ("ImageID", "LabelName"))
    value = _binary_values(frame["Confidence"], path, "Confidence")
    return pd.DataFrame(
        {
            "image_key": frame["ImageID"],
            "vocabulary": _constant_category(vocabulary, len(frame)),
            "label": frame["LabelName"],
            "value": value,
        },
        copy=False,
    )


def read_openimages_boxes(csv_path: str | Path, *, vocabulary: str = VOCABULARY) -> pd.DataFrame:
    """Read an Open Images box CSV into the boxes table.

    Returns `image_key`, `vocabulary`, `label` (category), `xmin ymin xmax ymax` (float32,
    normalised 0..1), `difficult` (False), and the int8 flags of `BOX_FLAGS` that the file has.
    """
    path = require_file(csv_path, "Open Images box CSV")
    types: dict[str, pa.DataType] = {"ImageID": _DICT, "LabelName": _DICT}
    types |= {c: pa.float32() for c in ("XMin", "XMax", "YMin", "YMax")}
    types |= {c: pa.int8() for c in BOX_FLAGS}
    frame = _read_csv(
        path,
        types,
        required=("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"),
        schema=BOX_CSV_COLUMNS,
    )
    _check_not_empty(frame, path, ("ImageID", "LabelName"))
    xmin, xmax = frame["XMin"].to_numpy(), frame["XMax"].to_numpy()
    ymin, ymax = frame["YMin"].to_numpy(), frame["YMax"].to_numpy()
    lo, hi = -_COORD_TOLERANCE, 1 + _COORD_TOLERANCE
    coords = np.stack([xmin, xmax, ymin, ymax])
    bad = ~np.all((coords >= lo) & (coords <= hi), axis=0) | (xmin > xmax) | (ymin > ymax)
    if bad.any():
        _raise_bad_rows(
            path, bad, frame, "XMin,XMax,YMin,YMax", "0 <= XMin <= XMax <= 1, same for Y"
        )
    boxes = pd.DataFrame(
        {
            "image_key": frame["ImageID"],
            "vocabulary": _constant_category(vocabulary, len(frame)),
            "label": frame["LabelName"],
            "xmin": np.clip(xmin, 0, 1),
            "ymin": np.clip(ymin, 0, 1),
            "xmax": np.clip(xmax, 0, 1),
            "ymax": np.clip(ymax, 0, 1),
            "difficult": np.zeros(len(frame), dtype=bool),
        }
    )
    for column, flag in BOX_FLAGS.items():
        if column in frame.columns:
            boxes[flag] = frame[column].to_numpy(dtype=np.int8, na_value=-1)
    return boxes


def _read_csv(
    path: Path,
    column_types: dict[str, pa.DataType],
    *,
    required: Sequence[str],
    schema: Sequence[str],
) -> pd.DataFrame:
    """Read the typed columns of a CSV with pyarrow (multithreaded) into pandas."""
    columns = _check_header(path, required, schema, column_types)
    invalid: list[pacsv.InvalidRow] = []
    try:
        table = pacsv.read_csv(path, *_csv_options(columns, column_types, invalid))
    except pa.ArrowInvalid as error:
        raise ValueError(f"{path}: {error}") from None
    _raise_invalid(path, invalid)
    return table.to_pandas()


def _read_coded_csv(path: Path, columns: Sequence[str], *, schema: Sequence[str]) -> pd.DataFrame:
    """Read string columns of a CSV block by block into pandas categoricals (file order).

    Each block's dictionary-encoded columns are mapped to codes of one dictionary per column
    (first-seen order) and the block is dropped, so the parsed file is never whole in memory
    (pyarrow's allocator can also keep a whole table's freed pages when its reader threads
    allocated them).
    """
    column_types = {c: _DICT for c in columns}
    _check_header(path, columns, schema, column_types)
    invalid: list[pacsv.InvalidRow] = []
    memos: list[dict[str, int]] = [{} for _ in columns]
    parts: list[list[np.ndarray]] = [[] for _ in columns]
    try:
        with pacsv.open_csv(path, *_csv_options(list(columns), column_types, invalid)) as reader:
            for batch in reader:
                for i, column in enumerate(columns):
                    array = batch.column(column)
                    codes = _memo_codes(memos[i], array.dictionary)
                    codes = codes.astype(_code_type(len(memos[i])), copy=False)
                    parts[i].append(codes[array.indices.to_numpy()])
                del batch, array
    except pa.ArrowInvalid as error:
        raise ValueError(f"{path}: {error}") from None
    pa.default_memory_pool().release_unused()  # the freed blocks' pages (measured: ~50-90 MiB)
    _raise_invalid(path, invalid)
    frame = {}
    for i, column in enumerate(columns):
        codes = np.concatenate([np.zeros(0, np.int8), *parts[i]])
        parts[i].clear()
        categories = pd.Index(np.array(list(memos[i]), dtype=object), dtype=object)
        memos[i].clear()
        frame[column] = pd.Categorical.from_codes(codes, categories=categories, validate=False)
    return pd.DataFrame(frame, copy=False)


def _memo_codes(memo: dict[str, int], dictionary: pa.Array) -> np.ndarray:
    """Codes in `memo` (new strings appended, numbered in order) of a block's dictionary."""
    return np.array([memo.setdefault(t, len(memo)) for t in dictionary.to_pylist()], np.int32)


def _code_type(n: int) -> type[np.signedinteger[Any]]:
    """The smallest signed integer type for codes 0..n-1."""
    for dtype in (np.int8, np.int16):
        if n <= np.iinfo(dtype).max:
            return dtype
    return np.int32


def _check_header(
    path: Path,
    required: Sequence[str],
    schema: Sequence[str],
    column_types: dict[str, pa.DataType],
) -> list[str]:
    """The typed columns the header has; raises naming the missing required ones."""
    header = _read_header(path)
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(
            f"{path}: line 1 (header) lacks columns {missing}; found {header}; "
            f"expected the Open Images columns {list(schema)}"
        )
    return [c for c in column_types if c in header]


def _csv_options(
    columns: list[str], column_types: dict[str, pa.DataType], invalid: list[pacsv.InvalidRow]
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    """Read, parse and convert options; rows with a wrong field count are appended to
    `invalid` (and skipped) for `_raise_invalid`."""

    def keep_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "skip"

    return (
        pacsv.ReadOptions(use_threads=True, block_size=BLOCK_SIZE),
        pacsv.ParseOptions(invalid_row_handler=keep_invalid),
        pacsv.ConvertOptions(
            column_types={c: column_types[c] for c in columns},
            include_columns=columns,
            strings_can_be_null=False,
        ),
    )


def _raise_invalid(path: Path, invalid: list[pacsv.InvalidRow]) -> None:
    """Raise naming the lines of rows whose field count differs from the header's."""
    if not invalid:
        return
    header = _read_header(path)
    lines = _find_lines(path, [row.text for row in invalid[:MAX_REPORTED]])
    shown = "; ".join(
        f"line {line}: {row.actual_columns} fields in {row.text!r}"
        for line, row in zip(lines, invalid[:MAX_REPORTED], strict=True)
    )
    raise ValueError(
        f"{path}: {len(invalid)} rows do not have the header's {len(header)} fields "
        f"{header}; {shown}"
    )


def _read_header(path: Path) -> list[str]:
    """The column names on the first line (compressed files are detected by extension)."""
    with pa.input_stream(str(path), compression="detect") as stream:
        first = io.TextIOWrapper(stream, encoding="utf-8-sig").readline()
    if not first.strip():
        raise ValueError(f"{path}: line 1 is empty; expected a CSV header")
    return [c.strip() for c in next(csv.reader([first]))]


def _find_lines(path: Path, texts: list[str]) -> list[int | None]:
    """1-based line numbers of the given row texts (only runs when rows are bad)."""
    found: dict[str, int] = {}
    wanted = set(texts)
    with pa.input_stream(str(path), compression="detect") as stream:
        for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8-sig"), 1):
            text = line.rstrip("\r\n")
            if text in wanted and text not in found:
                found[text] = number
                if len(found) == len(wanted):
                    break
    return [found.get(t) for t in texts]


def _check_not_empty(frame: pd.DataFrame, path: Path, columns: Sequence[str]) -> None:
    """Raise naming the lines where a required string field is empty."""
    for column in columns:
        categories = frame[column].cat.categories
        if "" in categories:
            bad = frame[column].cat.codes.to_numpy() == categories.get_loc("")
            _raise_bad_rows(path, bad, frame, column, "a non-empty value")


def _binary_values(column: pd.Series, path: Path, field: str) -> np.ndarray:
    """int8 0/1 from a categorical column of strings; raises naming bad rows otherwise."""
    categories = column.cat.categories
    lookup = np.full(len(categories) + 1, -1, dtype=np.int8)  # last slot: code -1 (null)
    for i, text in enumerate(categories):
        try:
            number = float(text)
        except ValueError:
            continue
        if number in (0.0, 1.0):
            lookup[i] = int(number)
    values = lookup[column.cat.codes.to_numpy()]
    bad = values < 0
    if bad.any():
        _raise_bad_rows(path, bad, column.to_frame(field), field, "0 or 1")
    return values


def _raise_bad_rows(
    path: Path, bad: np.ndarray, frame: pd.DataFrame, field: str, allowed: str
) -> None:
    rows = np.flatnonzero(bad)
    fields = [f for f in field.split(",") if f in frame.columns]
    shown = "; ".join(
        f"line {row + 2}: " + ", ".join(f"{f}={frame[f].iloc[row]!r}" for f in fields)
        for row in rows[:MAX_REPORTED]
    )
    raise ValueError(
        f"{path}: {len(rows)} rows have a bad {field} (allowed: {allowed}); {shown}"
        " (line numbers assume no quoted line breaks)"
    )


def _constant_category(value: str, n: int) -> pd.Categorical[str]:
    return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=pd.Index([value]))


def _add_box_positives(labels: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """Append a positive row for each (image, MID) that has a box."""
    pairs = boxes[["image_key", "vocabulary", "label"]].drop_duplicates()
    if pairs.empty:
        return labels
    columns = {
        c: union_categoricals([labels[c], pairs[c]], ignore_order=True)
        for c in ("image_key", "vocabulary", "label")
    }
    value = np.concatenate(
        [labels["value"].to_numpy(), np.full(len(pairs), POSITIVE, dtype=np.int8)]
    )
    return pd.DataFrame({**columns, "value": value})
