"""Tests for tagger/readers/openimages.py."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagger.data.readers import openimages
from tagger.data.readers.openimages import (
    read_openimages,
    read_openimages_boxes,
    read_openimages_labels,
)

LABELS = """ImageID,Source,LabelName,Confidence
img1,verification,/m/dog,1
img1,verification,/m/cat,0
img2,crowdsource-verification,/m/dog,1
img3,verification,/m/car,0
"""
BOX_HEADER = (
    "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,"
    "IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_labels_values_and_categorical_columns(tmp_path: Path) -> None:
    frame = read_openimages_labels(write(tmp_path / "l.csv", LABELS))
    assert list(frame.columns) == ["image_key", "vocabulary", "label", "value"]
    assert frame["value"].dtype == np.int8
    assert list(frame["value"]) == [1, 0, 1, 0]
    assert list(frame["image_key"].astype(str)) == ["img1", "img1", "img2", "img3"]
    assert isinstance(frame["label"].dtype, pd.CategoricalDtype)
    assert set(frame["vocabulary"].astype(str)) == {"openimages"}


def test_source_table_images_are_unique_absolute_paths(tmp_path: Path) -> None:
    table = read_openimages(write(tmp_path / "l.csv", LABELS), "imgs", image_ext=".jpeg")
    assert sorted(table.images["image_key"]) == ["img1", "img2", "img3"]
    expected = os.path.join(os.path.abspath("imgs"), "img2.jpeg")
    assert table.images.set_index("image_key").loc["img2", "path"] == expected
    assert table.boxes.empty and table.problems == []


def test_float_confidence_and_gzip_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "l.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(LABELS.replace(",1\n", ",1.0\n").replace(",0\n", ",0.0\n"))
    assert list(read_openimages_labels(path)["value"]) == [1, 0, 1, 0]


@pytest.mark.parametrize("bad", ["0.5", "yes", ""])
def test_bad_confidence_names_file_line_field_and_allowed(tmp_path: Path, bad: str) -> None:
    path = write(
        tmp_path / "l.csv",
        LABELS.replace(
            "img2,crowdsource-verification,/m/dog,1", f"img2,crowdsource-verification,/m/dog,{bad}"
        ),
    )
    with pytest.raises(ValueError) as error:
        read_openimages_labels(path)
    message = str(error.value)
    assert str(path) in message and "line 4" in message
    assert "Confidence" in message and "0 or 1" in message and repr(bad) in message


def test_header_only_file_gives_empty_tables(tmp_path: Path) -> None:
    table = read_openimages(write(tmp_path / "l.csv", LABELS.splitlines()[0] + "\n"), tmp_path)
    assert len(table.labels) == 0 and len(table.images) == 0
    assert table.labels["value"].dtype == np.int8


def test_labels_from_many_blocks_keep_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openimages, "BLOCK_SIZE", 1 << 16)
    rng = np.random.default_rng(0)
    n = 60_000  # ~16 blocks, image keys repeating across blocks
    keys = rng.integers(0, 5_000, n)
    frame = pd.DataFrame(
        {
            "ImageID": pd.Series(keys).map("{:x}".format),
            "Source": "v",
            "LabelName": pd.Series(rng.integers(0, 700, n)).map("/m/{:d}".format),
            "Confidence": rng.integers(0, 2, n),
        }
    )
    frame.to_csv(tmp_path / "l.csv", index=False)
    read = read_openimages_labels(tmp_path / "l.csv")
    assert (read["image_key"].astype(str).to_numpy() == frame["ImageID"].to_numpy()).all()
    assert (read["label"].astype(str).to_numpy() == frame["LabelName"].to_numpy()).all()
    assert (read["value"].to_numpy() == frame["Confidence"].to_numpy()).all()
    assert read["image_key"].cat.categories.is_unique


def test_missing_column_is_a_header_error(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", "ImageID,Source,Confidence\na,s,1\n")
    with pytest.raises(ValueError, match=r"\(header\) lacks columns \['LabelName'\]"):
        read_openimages_labels(path)


def test_row_with_wrong_field_count_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", LABELS + "img4,verification,/m/dog\n")
    with pytest.raises(ValueError, match=r"line 6: 3 fields"):
        read_openimages_labels(path)


def test_empty_image_id_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", LABELS + ",verification,/m/dog,1\n")
    with pytest.raises(ValueError, match=r"bad ImageID .*line 6"):
        read_openimages_labels(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read_openimages_labels(tmp_path / "nope.csv")


def test_boxes_are_normalised_with_flags_and_imply_positives(tmp_path: Path) -> None:
    boxes = write(
        tmp_path / "b.csv",
        BOX_HEADER
        + "img1,xclick,/m/dog,1,0.1,0.5,0.2,0.6,0,1,0,0,-1\n"
        + "img9,xclick,/m/bird,1,0.0,1.0,0.0,1.0,1,0,1,0,0\n",
    )
    table = read_openimages(write(tmp_path / "l.csv", LABELS), tmp_path, boxes_csv=boxes)
    assert sorted(table.images["image_key"]) == ["img1", "img2", "img3", "img9"]
    first = table.boxes.iloc[0]
    assert (first["xmin"], first["ymin"], first["xmax"], first["ymax"]) == pytest.approx(
        (0.1, 0.2, 0.5, 0.6)
    )
    assert (first["truncated"], first["inside"], table.boxes.iloc[1]["group_of"]) == (1, -1, 1)
    labels = table.labels.astype({"image_key": str, "label": str})
    bird = labels[(labels["image_key"] == "img9") & (labels["label"] == "/m/bird")]
    assert list(bird["value"]) == [1]
    assert len(labels) == 4 + 2  # one box-implied positive per (image, MID)


def test_box_outside_the_image_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", BOX_HEADER + "img1,x,/m/dog,1,0.6,0.5,0.2,0.6,0,0,0,0,0\n")
    with pytest.raises(ValueError, match=r"line 2: XMin=.*0\.6"):
        read_openimages_boxes(path)


@pytest.mark.slow
def test_two_million_rows_read_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 2_000_000
    frame = pd.DataFrame(
        {
            "ImageID": pd.Series(rng.integers(0, 200_000, n)).map("{:016x}".format),
            "Source": "verification",
            "LabelName": pd.Series(rng.integers(0, 1000, n)).map("/m/0{:05d}".format),
            "Confidence": rng.integers(0, 2, n),
        }
    )
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    start = time.perf_counter()
    table = read_openimages(path, tmp_path)
    assert len(table.labels) == n
    assert time.perf_counter() - start < 4.0  # >= 0.5 M rows/s even on a busy 2-core machine


def test_real_openimages_sample(shared_data: Path) -> None:
    root = shared_data / "openimages"
    table = read_openimages(root / "sample-annotations-human-imagelabels.csv", root / "images")
    assert len(table.images) == 75 and table.images["image_key"].is_unique
    assert set(table.labels["label"].astype(str)) == {"/m/014j1m", "/m/0cyhj_"}  # apple, orange
    assert (table.labels["value"] == 1).all()
    assert all(Path(p).is_file() for p in table.images["path"])
