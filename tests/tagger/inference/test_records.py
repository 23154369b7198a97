"""Prediction records and their resumable writers (JSONL, Parquet, CSV)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tagger.inference.records import (
    Box,
    PredictionRecord,
    RecordError,
    TagPrediction,
    open_writer,
    output_format,
    parts_dir,
    read_done_ids,
    read_records,
)


def make_record(i: int, *, error: bool = False) -> PredictionRecord:
    if error:
        return PredictionRecord(f"img{i}", f"/x/img{i}.jpg", error=RecordError("truncated", "cut"))
    tags = (
        TagPrediction("dog", "Hund", 0.9, "animals", ("animal",), "classifier",
                      (Box(0.1, 0.2, 0.5, 0.6, 0.8),)),
        TagPrediction("animal", "Tier", 0.9, "animals", (), "parent"),
    )  # fmt: skip
    return PredictionRecord(f"img{i}", f"/x/img{i}.jpg", 640 + i, 480, tags)


RECORDS = [make_record(0), make_record(1, error=True), make_record(2), make_record(3)]


def test_record_round_trip_and_layout() -> None:
    record = make_record(7)
    data = record.to_dict()
    assert data["tags"][0] == {
        "id": "dog",
        "name": "Hund",
        "score": 0.9,
        "category": "animals",
        "parents": ["animal"],
        "evidence": "classifier",
        "boxes": [{"xmin": 0.1, "ymin": 0.2, "xmax": 0.5, "ymax": 0.6, "score": 0.8}],
        "instances": [],
    }
    assert data["error"] is None and data["width"] == 647
    assert PredictionRecord.from_dict(json.loads(json.dumps(data))) == record
    failed = make_record(1, error=True).to_dict()
    assert failed["tags"] == [] and failed["error"] == {"code": "truncated", "message": "cut"}
    assert PredictionRecord.from_dict(failed).ok is False


def test_scores_are_written_rounded() -> None:
    tag = TagPrediction("dog", "Dog", 0.123456789, "animals")
    data = PredictionRecord("a", "a", tags=(tag,)).to_dict()
    assert data["tags"][0]["score"] == 0.123457


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_each_format_round_trips(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    writer = open_writer(out, chunk_size=3)
    writer.write(RECORDS[:2])
    writer.write(RECORDS[2:])
    writer.close()
    assert list(read_records(out)) == RECORDS
    assert not parts_dir(out).exists()


def test_parquet_has_nested_schema(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = open_writer(out)
    writer.write(RECORDS)
    writer.close()
    table = pq.read_table(out)
    assert table.column_names == ["image_id", "path", "width", "height", "tags", "error"]
    first = table.to_pylist()[0]
    assert first["tags"][0]["id"] == "dog" and first["tags"][0]["boxes"][0]["score"] == 0.8
    assert table.to_pylist()[1]["error"] == {"code": "truncated", "message": "cut"}


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_parts_are_readable_before_close_and_resume_appends(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    writer = open_writer(out, chunk_size=2)
    writer.write(RECORDS[:3])  # one part of 2 written; 1 record still buffered
    assert not out.exists()
    assert [r.image_id for r in read_records(out)] == ["img0", "img1"]
    del writer  # a hard kill: the buffered record is lost, the part survives
    (parts_dir(out) / f"part-000099.{suffix[1:]}.tmp").write_text("torn")  # half-written part
    resumed = open_writer(out, mode="resume", chunk_size=2)
    assert read_done_ids(out) == {"img0", "img1"}
    resumed.write(RECORDS[2:])
    resumed.close()
    assert list(read_records(out)) == RECORDS
    # resuming a finished output keeps its records and appends
    again = open_writer(out, mode="resume")
    again.write([make_record(9)])
    again.close()
    assert [r.image_id for r in read_records(out)] == ["img0", "img1", "img2", "img3", "img9"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_kill_between_merge_and_cleanup_duplicates_nothing(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    writer = open_writer(out, chunk_size=2)
    writer.write(RECORDS)
    part = next(parts_dir(out).iterdir()).read_bytes()
    writer.close()
    # the merged output was renamed into place, but the kill came before the parts were removed
    parts_dir(out).mkdir()
    (parts_dir(out) / f"part-000001{suffix}").write_bytes(part)
    resumed = open_writer(out, mode="resume")
    resumed.close()
    assert list(read_records(out)) == RECORDS


def test_jsonl_torn_tail_is_skipped_and_cut_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = open_writer(out)
    writer.write(RECORDS[:2])
    writer.close()
    with open(out, "ab") as f:
        f.write(json.dumps(RECORDS[2].to_dict()).encode()[:40])  # a kill mid-line
    assert [r.image_id for r in read_records(out)] == ["img0", "img1"]
    resumed = open_writer(out, mode="resume")
    resumed.write(RECORDS[2:])
    resumed.close()
    assert list(read_records(out)) == RECORDS
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_jsonl_garbled_last_line_with_newline_is_cut(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(RECORDS[0].to_dict()) + "\n" + "\x00\x00\x00\n")
    writer = open_writer(out, mode="resume")
    writer.write(RECORDS[1:2])
    writer.close()
    assert [r.image_id for r in read_records(out)] == ["img0", "img1"]


def test_jsonl_bad_line_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    good = json.dumps(RECORDS[0].to_dict())
    out.write_text(f"{good}\nnot json\n{good}\n")
    with pytest.raises(ValueError, match=r"out\.jsonl: line 2"):
        list(read_records(out))


def test_open_writer_modes(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = open_writer(out)
    writer.write(RECORDS[:1])
    writer.close()
    with pytest.raises(FileExistsError, match=r"out\.jsonl"):
        open_writer(out)
    writer = open_writer(out, mode="overwrite")
    writer.close()
    assert list(read_records(out)) == []


def test_unknown_suffix_lists_the_allowed() -> None:
    with pytest.raises(ValueError, match=r"\.txt.*\.csv.*\.jsonl.*\.parquet"):
        output_format("out.txt")
