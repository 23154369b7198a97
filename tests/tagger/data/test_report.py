"""Dataset report: per-source and per-tag counts, long tail, files written."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tagger.data.assembly import assemble
from tagger.data.report import build_report, write_report
from tagger.data.sources import Problem
from tests.tagger.assembly_fixtures import source, tiny_mappings, tiny_taxonomy


def small_result():
    tax = tiny_taxonomy()
    oi = source(
        "oi",
        {"a": "/x/a", "b": "/x/b"},
        [
            ("a", "openimages", "/m/dog", 1),
            ("a", "openimages", "/m/car", 0),
            ("b", "openimages", "/m/dog", 1),
        ],
    )
    coco = source("coco", {"c": "/x/c", "d": "/x/d"}, [("c", "coco", "cat", 1)])
    return tax, assemble([oi, coco], tax, tiny_mappings(), hashing=False)


def test_counts_hand_worked():
    tax, result = small_result()
    problems = [
        Problem("/x/e.jpg", "truncated: image file is truncated"),
        Problem("/x/f.jpg", "missing: no such file"),
        Problem("/x/g.jpg", "missing: x"),
    ]
    report = build_report(result.manifest, tax, min_count=2, stats=result.stats, problems=problems)
    tags = report.per_tag.set_index("tag")
    # dog: a, b positive; c, d negative (coco exhaustive, cat present / nothing present)
    assert tags.loc["dog", ["positives", "negatives", "unknown"]].tolist() == [2, 2, 0]
    # car: a verified negative; c, d coco negatives; b unknown
    assert tags.loc["car", ["positives", "negatives", "unknown"]].tolist() == [0, 3, 1]
    assert tags.loc["animal", ["positives", "negatives", "unknown"]].tolist() == [3, 0, 1]
    assert report.per_tag["tag"].iloc[0] == "animal"  # most positives first
    assert "dog" not in report.below_min and "cat" in report.below_min
    per = report.per_source.set_index("source")
    assert per.loc["oi", "images"] == 2 and per.loc["coco", "images"] == 2
    assert per.loc["oi", "tags"] == 2 and per.loc["oi", "positives"] == 4  # dog+animal twice
    assert per.loc["coco", "tags"] == 2 and per.loc["coco", "positives"] == 2
    assert report.problems_by_reason == {"missing": 2, "truncated": 1}
    text = report.to_text()
    assert "4 images" in text and "animal (3)" in text and "below min_count=2" in text


def test_write_report_files(tmp_path: Path):
    tax, result = small_result()
    report = build_report(result.manifest.to_pandas(), tax, min_count=1)
    paths = write_report(report, tmp_path / "rep")
    data = json.loads(paths["json"].read_text())
    assert data["images"] == 4 and data["tags"] == len(tax)
    assert paths["markdown"].read_text().startswith("# Dataset report")
    with Image.open(paths["plot"]) as im:
        assert im.format == "PNG" and im.width > 300


def test_empty_manifest():
    tax = tiny_taxonomy()
    empty = assemble([], tax, tiny_mappings(), hashing=False).manifest
    report = build_report(empty, tax)
    assert report.images == 0 and (report.per_tag["positives"] == 0).all()
    assert len(report.below_min) == len(tax)
    assert "0 images" in report.to_text()
