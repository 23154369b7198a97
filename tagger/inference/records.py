"""Prediction records (one per input image, always) and their resumable writers.

A record holds either tags or an error, never neither:

    {"image_id": "a.jpg", "path": "/photos/a.jpg", "width": 4032, "height": 3024,
     "tags": [{"id": "dog", "name": "Dog", "score": 0.93, "category": "animals",
               "parents": ["animal"], "evidence": "classifier", "boxes": []},
              {"id": "pet", "name": "Pet", "score": 0.93, "category": "animals",
               "parents": ["animal"], "evidence": "rule", "boxes": [],
               "rule": "pet: parent of dog"}],
     "error": null}
    {"image_id": "b.jpg", "path": "/photos/b.jpg", "width": null, "height": null, "tags": [],
     "error": {"code": "truncated", "message": "image file is truncated"}}

Writers make a job resumable after a hard kill: JSON Lines are appended and fsynced per chunk
(a torn last line is dropped on resume); Parquet and CSV are written as atomically renamed part
files in `<out>.parts/` and merged into `<out>` (atomically) when the job closes.
`read_records` reads any of them back, finished or not.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

Evidence = Literal["classifier", "detector", "fused", "parent", "rule"]
OutputFormat = Literal["jsonl", "parquet", "csv"]
OUTPUT_FORMATS: dict[str, OutputFormat] = {
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".csv": "csv",
}
SCORE_DIGITS = 6  # scores are written rounded to 1e-6; selection uses the unrounded values

BOX_TYPE = pa.struct(
    [
        ("xmin", pa.float64()),
        ("ymin", pa.float64()),
        ("xmax", pa.float64()),
        ("ymax", pa.float64()),
        ("score", pa.float64()),
    ]
)
INSTANCE_TYPE = pa.struct(
    [
        ("xmin", pa.float64()),
        ("ymin", pa.float64()),
        ("xmax", pa.float64()),
        ("ymax", pa.float64()),
        ("confidence", pa.float64()),
    ]
)
TAG_TYPE = pa.struct(
    [
        ("id", pa.string()),
        ("name", pa.string()),
        ("score", pa.float64()),
        ("category", pa.string()),
        ("parents", pa.list_(pa.string())),
        ("evidence", pa.string()),
        ("boxes", pa.list_(BOX_TYPE)),
        ("rule", pa.string()),
        ("instances", pa.list_(INSTANCE_TYPE)),
    ]
)
ERROR_TYPE = pa.struct([("code", pa.string()), ("message", pa.string())])
RECORD_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("tags", pa.list_(TAG_TYPE)),
        ("error", ERROR_TYPE),
    ]
)
CSV_COLUMNS = ("image_id", "path", "width", "height", "tags", "error_code", "error_message")


@dataclass(frozen=True)
class Box:
    """A detector box in normalised image coordinates (0..1 of the displayed width/height)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    score: float


@dataclass(frozen=True)
class Instance:
    """One detected object of a tag: its box in pixels of the original image as displayed
    (after EXIF orientation; x right, y down) and the detector's confidence in 0..1."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    confidence: float


@dataclass(frozen=True)
class TagPrediction:
    """One tag of one image: display `name` in the requested language, `score` in 0..1.

    evidence: "classifier" (the tag's own score passed its threshold), "fused" (the score
    fuses the classifier with detector evidence, `tagger.detect.fusion`), "detector" (fused, and
    the classifier alone would not have passed: the detector found it), "parent" (implied by
    a predicted child tag; its score is the best of its own and its children's), or "rule" (a
    prior rule raised its score, `tagger.priors`). parents: ancestor tag ids, nearest first.
    boxes: detector boxes normalised to 0..1; instances: the same boxes in original-image pixels
    with their confidence (empty without a detector).
    rule: which prior rule set or changed the score, e.g. "tree: implied by forest" (None: none).
    """

    id: str
    name: str
    score: float
    category: str
    parents: tuple[str, ...] = ()
    evidence: Evidence = "classifier"
    boxes: tuple[Box, ...] = ()
    rule: str | None = None
    instances: tuple[Instance, ...] = ()


@dataclass(frozen=True)
class RecordError:
    """Why an input has no tags: `code` (see `tagger.data.images.ERROR_CODES`) and a message."""

    code: str
    message: str


@dataclass(frozen=True)
class PredictionRecord:
    """The result for one input image: tags (possibly none) or an error.

    image_id: the key a resumed job skips by (the path as given, or the manifest's image_id).
    width/height: displayed size in pixels (after EXIF orientation), None when unknown.
    """

    image_id: str
    path: str
    width: int | None = None
    height: int | None = None
    tags: tuple[TagPrediction, ...] = ()
    error: RecordError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (see the module docstring for the layout)."""
        return {
            "image_id": self.image_id,
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "tags": [_tag_to_dict(t) for t in self.tags],
            "error": None
            if self.error is None
            else {"code": self.error.code, "message": self.error.message},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictionRecord:
        """Inverse of `to_dict`; KeyError/TypeError on a malformed mapping."""
        error = data.get("error")
        return cls(
            image_id=str(data["image_id"]),
            path=str(data["path"]),
            width=_opt_int(data.get("width")),
            height=_opt_int(data.get("height")),
            tags=tuple(_tag_from_dict(t) for t in data.get("tags") or ()),
            error=None if not error else RecordError(str(error["code"]), str(error["message"])),
        )


def _tag_to_dict(tag: TagPrediction) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": tag.id,
        "name": tag.name,
        "score": round(float(tag.score), SCORE_DIGITS),
        "category": tag.category,
        "parents": list(tag.parents),
        "evidence": tag.evidence,
        "boxes": [
            {"xmin": b.xmin, "ymin": b.ymin, "xmax": b.xmax, "ymax": b.ymax, "score": b.score}
            for b in tag.boxes
        ],
        "instances": [
            {
                "xmin": i.xmin,
                "ymin": i.ymin,
                "xmax": i.xmax,
                "ymax": i.ymax,
                "confidence": i.confidence,
            }
            for i in tag.instances
        ],
    }
    if tag.rule is not None:  # only when a rule acted: older readers see the same layout
        out["rule"] = tag.rule
    return out


def _tag_from_dict(data: dict[str, Any]) -> TagPrediction:
    return TagPrediction(
        id=str(data["id"]),
        name=str(data["name"]),
        score=float(data["score"]),
        category=str(data["category"]),
        parents=tuple(str(p) for p in data.get("parents") or ()),
        evidence=data.get("evidence", "classifier"),
        boxes=tuple(
            Box(*(float(b[k]) for k in ("xmin", "ymin", "xmax", "ymax", "score")))
            for b in data.get("boxes") or ()
        ),
        rule=None if data.get("rule") is None else str(data["rule"]),
        instances=tuple(
            Instance(*(float(i[k]) for k in ("xmin", "ymin", "xmax", "ymax", "confidence")))
            for i in data.get("instances") or ()
        ),
    )


def _opt_int(value: Any) -> int | None:
    if value is None or value != value:  # None or NaN (pandas reads missing ints as NaN)
        return None
    return int(value)


# ---- writers ----------------------------------------------------------------------------------


class RecordWriter(Protocol):
    """Writes records so that what `write` returned from survives a hard kill (up to a chunk)."""

    path: Path

    def write(self, records: Sequence[PredictionRecord]) -> None: ...

    def close(self) -> None: ...


def output_format(path: str | os.PathLike[str]) -> OutputFormat:
    """The output format named by a file's suffix; ValueError lists the allowed suffixes."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(
            f"output {str(path)!r}: unknown suffix {suffix!r}; allowed: {sorted(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[suffix]


def parts_dir(path: str | os.PathLike[str]) -> Path:
    """Where a Parquet/CSV output keeps its part files until the job closes."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def open_writer(
    path: str | os.PathLike[str],
    *,
    mode: Literal["new", "resume", "overwrite"] = "new",
    chunk_size: int = 1000,
) -> RecordWriter:
    """A writer for `path` (format from its suffix).

    mode "new" refuses an existing output (FileExistsError names it); "resume" keeps what is
    there (read it first with `read_records` to know what to skip); "overwrite" deletes it.
    chunk_size: records per Parquet/CSV part file (JSONL is synced on every `write`).
    """
    path = Path(path)
    fmt = output_format(path)
    existing = [p for p in (path, parts_dir(path)) if p.exists()]
    if existing and mode == "new":
        raise FileExistsError(
            f"output {str(path)!r} already exists ({', '.join(map(str, existing))}); "
            "resume it or overwrite it"
        )
    if mode == "overwrite":
        remove_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        return JsonlWriter(path)
    return PartsWriter(path, fmt, chunk_size=chunk_size)


def remove_output(path: str | os.PathLike[str]) -> None:
    """Delete an output and its part files, if any."""
    path = Path(path)
    path.unlink(missing_ok=True)
    shutil.rmtree(parts_dir(path), ignore_errors=True)


class JsonlWriter:
    """Appends one JSON object per line; each `write` is flushed and fsynced.

    On open, a torn last line (a kill mid-write) is cut off so the file ends on a record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _truncate_torn_tail(path)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed in close())

    def write(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        self._file.write(
            "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
        )
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _truncate_torn_tail(path: Path) -> None:
    """Cut a JSONL file back to its last complete, parseable line (reads only the tail)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            start = _line_start(f, keep)
            line = _read_at(f, start, keep - start)
            if line.endswith(b"\n") and _parses(line):
                break
            keep = start  # torn (no newline) or garbled (e.g. zeros after a crash): drop it
        if keep != size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


def _line_start(f: BinaryIO, end: int, block: int = 1 << 16) -> int:
    """Offset where the line ending at `end` (exclusive) starts."""
    pos = end - 1  # skip the line's own trailing newline, if any
    while pos > 0:
        lo = max(0, pos - block)
        chunk = _read_at(f, lo, pos - lo)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return lo + cut + 1
        pos = lo
    return 0


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


class PartsWriter:
    """Parquet or CSV output as part files (each written to a temp name, then renamed).

    `close` merges any finished output and all parts into `path` through a temp file and an
    atomic rename, then removes the parts. The merge keeps the first record of each image_id,
    so a kill between the rename and the removal of the parts cannot duplicate records.
    Memory: one chunk of records, one part at a time and the set of image_ids while merging.
    """

    def __init__(self, path: Path, fmt: OutputFormat, *, chunk_size: int = 1000) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.path = path
        self.fmt = fmt
        self.chunk_size = chunk_size
        self.parts = parts_dir(path)
        self.parts.mkdir(parents=True, exist_ok=True)
        self._buffer: list[PredictionRecord] = []
        self._next = 1 + max((_part_number(p) for p in _part_files(self.parts)), default=0)

    def write(self, records: Sequence[PredictionRecord]) -> None:
        self._buffer.extend(records)
        while len(self._buffer) >= self.chunk_size:
            self._flush(self._buffer[: self.chunk_size])
            del self._buffer[: self.chunk_size]

    def close(self) -> None:
        if self._buffer:
            self._flush(self._buffer)
            self._buffer = []
        sources = ([self.path] if self.path.exists() else []) + _part_files(self.parts)
        tmp = self.path.with_name(self.path.name + ".tmp")
        if self.fmt == "parquet":
            _merge_parquet(sources, tmp)
        else:
            _merge_csv(sources, tmp)
        _fsync_file(tmp)
        tmp.replace(self.path)
        _fsync_dir(self.path.parent)
        shutil.rmtree(self.parts, ignore_errors=True)

    def _flush(self, records: Sequence[PredictionRecord]) -> None:
        name = f"part-{self._next:06d}.{self.fmt}"
        self._next += 1
        tmp = self.parts / (name + ".tmp")
        if self.fmt == "parquet":
            pq.write_table(records_to_table(records), tmp)
        else:
            tmp.write_text(records_to_csv(records), encoding="utf-8")
        _fsync_file(tmp)
        tmp.replace(self.parts / name)
        _fsync_dir(self.parts)


def _part_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-") and _is_part(p))


def _is_part(path: Path) -> bool:
    return path.suffix in (".parquet", ".csv")


def _part_number(path: Path) -> int:
    return int(path.name.split("-")[1].split(".")[0])


def _merge_parquet(sources: Sequence[Path], out: Path) -> None:
    """Concatenate parts, keeping the first record of each image_id (a merge is idempotent)."""
    seen: set[str] = set()
    with pq.ParquetWriter(out, RECORD_SCHEMA, compression="zstd") as writer:
        for source in sources:
            table = pq.read_table(source, schema=RECORD_SCHEMA)
            ids = table.column("image_id").to_pylist()
            keep = []
            for image_id in ids:
                keep.append(image_id not in seen)
                seen.add(image_id)
            writer.write_table(table.filter(pa.array(keep, type=pa.bool_())))


def _merge_csv(sources: Sequence[Path], out: Path) -> None:
    """Concatenate parts, keeping the first record of each image_id (a merge is idempotent)."""
    seen: set[str] = set()
    with open(out, "w", encoding="utf-8", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(CSV_COLUMNS)
        for source in sources:
            with open(source, encoding="utf-8", newline="") as src:
                rows = csv.reader(src)
                next(rows, None)  # header
                for row in rows:
                    if row and row[0] not in seen:
                        seen.add(row[0])
                        writer.writerow(row)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- tables -----------------------------------------------------------------------------------


def records_to_table(records: Iterable[PredictionRecord]) -> pa.Table:
    """Records as an Arrow table with `RECORD_SCHEMA` (nested tags, error struct)."""
    rows = [r.to_dict() for r in records]
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def records_to_csv(records: Iterable[PredictionRecord]) -> str:
    """Records as CSV text with header `CSV_COLUMNS`; `tags` holds the tag list as JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for r in records:
        d = r.to_dict()
        writer.writerow(
            [
                r.image_id,
                r.path,
                "" if r.width is None else r.width,
                "" if r.height is None else r.height,
                json.dumps(d["tags"], ensure_ascii=False),
                "" if r.error is None else r.error.code,
                "" if r.error is None else r.error.message,
            ]
        )
    return buffer.getvalue()


# ---- readers ----------------------------------------------------------------------------------


def read_records(path: str | os.PathLike[str]) -> Iterator[PredictionRecord]:
    """Stream the records of an output, finished or interrupted (parts and torn tail included).

    A torn last JSONL line is skipped; any other unparseable line raises ValueError naming the
    file and line.
    """
    path = Path(path)
    fmt = output_format(path)
    if fmt == "jsonl":
        yield from _read_jsonl(path)
        return
    sources = ([path] if path.exists() else []) + _part_files(parts_dir(path))
    for source in sources:
        if fmt == "parquet":
            for batch in pq.ParquetFile(source).iter_batches():
                for row in batch.to_pylist():
                    yield PredictionRecord.from_dict(row)
        else:
            yield from _read_csv(source)


def _read_jsonl(path: Path) -> Iterator[PredictionRecord]:
    if not path.exists():
        return
    with open(path, "rb") as f:
        bad: tuple[int, ValueError] | None = None  # an unparseable line: fatal unless the last
        for number, line in enumerate(f, start=1):
            if bad is not None:
                raise ValueError(f"{path}: line {bad[0]}: not a JSON record: {bad[1]}")
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as err:
                bad = (number, err)
                continue
            yield PredictionRecord.from_dict(data)


def _read_csv(path: Path) -> Iterator[PredictionRecord]:
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            yield PredictionRecord.from_dict(
                {
                    "image_id": row["image_id"],
                    "path": row["path"],
                    "width": int(row["width"]) if row["width"] else None,
                    "height": int(row["height"]) if row["height"] else None,
                    "tags": json.loads(row["tags"]) if row["tags"] else [],
                    "error": {"code": row["error_code"], "message": row["error_message"]}
                    if row["error_code"]
                    else None,
                }
            )


def read_done_ids(path: str | os.PathLike[str]) -> set[str]:
    """image_ids already written to an output (for resuming a job); empty when none."""
    return {r.image_id for r in read_records(path)}
