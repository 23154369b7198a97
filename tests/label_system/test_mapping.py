"""Source mappings: file format errors, lookups, known tags, shipped mappings, coverage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from label_system import (
    LabelSystemError,
    SourceMapping,
    Taxonomy,
    coverage_report,
    identity_mapping,
    load_default_mapping,
    load_default_mappings,
    load_default_taxonomy,
    load_mapping,
    normalize_label,
)
from label_system.mapping import DEFAULT_VOCABULARIES, MappingEntry

COCO_80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
VOC_20 = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_default_taxonomy()


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def base() -> dict:
    return {
        "vocabulary": "demo",
        "negatives": "exhaustive",
        "entries": [
            {"id": 1, "name": "Dog", "tags": ["dog"]},
            {"id": "2", "name": "lake", "tags": ["water"], "partial": True},
            {"name": "pottedplant", "aliases": ["potted plant"], "tags": ["houseplant"]},
            {"name": "wall", "tags": []},
            {"id": "/m/x", "tags": ["dog", "pet"]},
        ],
    }


def load_error(tmp_path: Path, data: dict, tax: Taxonomy) -> str:
    path = write(tmp_path, data)
    with pytest.raises(LabelSystemError) as info:
        load_mapping(path, tax)
    message = str(info.value)
    assert str(path) in message, message
    return message


# ---- lookups --------------------------------------------------------------------------------
def test_normalize_label() -> None:
    assert normalize_label("  Dining Table\t") == "dining table"


def test_tags_for_by_id_name_alias(tmp_path: Path, tax: Taxonomy) -> None:
    m = load_mapping(write(tmp_path, base()), tax)
    assert m.tags_for("1") == ("dog",)
    assert m.tags_for("DOG ") == ("dog",)
    assert m.tags_for("Potted Plant") == ("houseplant",)
    assert m.tags_for("wall") == ()
    assert m.tags_for("cat") == ()
    assert "wall" in m and "cat" not in m
    assert m.tags_for("/M/X") == ("dog", "pet")


def test_known_tags_skip_partial_and_unmapped(tmp_path: Path, tax: Taxonomy) -> None:
    m = load_mapping(write(tmp_path, base()), tax)
    assert m.known_tags == {"dog", "pet", "houseplant"}
    assert "water" in m.targeted_tags and "water" not in m.known_tags
    assert m.unmapped_labels == ("wall",)


@pytest.mark.parametrize("policy", ["verified", "none"])
def test_known_tags_empty_unless_exhaustive(tmp_path: Path, tax: Taxonomy, policy: str) -> None:
    data = base() | {"negatives": policy}
    m = load_mapping(write(tmp_path, data), tax)
    assert m.known_tags == frozenset()
    expected = ("dog",) if policy == "verified" else ()
    assert m.negative_tags_for("dog") == expected
    assert m.negative_tags_for("lake") == ()  # partial: no owl does not mean no bird


def test_to_frame_has_every_key(tmp_path: Path, tax: Taxonomy) -> None:
    frame = load_mapping(write(tmp_path, base()), tax).to_frame()
    assert list(frame.columns) == ["label", "tag", "partial"]
    assert frame["partial"].dtype == bool
    rows = set(frame.itertuples(index=False, name=None))
    assert {("1", "dog", False), ("dog", "dog", False)} <= rows
    assert {("2", "water", True), ("lake", "water", True)} <= rows
    assert ("potted plant", "houseplant", False) in rows
    assert not (frame["label"] == "wall").any()
    assert len(frame) == 2 + 2 + 2 + 2  # dog, lake, pottedplant (+alias), /m/x (2 tags)


def test_source_mapping_in_memory() -> None:
    m = SourceMapping("v", "none", [MappingEntry(name="a", tags=("dog",))])
    assert m.tags_for("A") == ("dog",) and m.known_tags == frozenset()
    assert m.to_frame().equals(pd.DataFrame({"label": ["a"], "tag": ["dog"], "partial": [False]}))


def test_identity_mapping(tax: Taxonomy) -> None:
    m = identity_mapping(tax)
    assert m.vocabulary == "tags" and m.negatives == "none"
    assert m.tags_for("houseplant") == ("houseplant",)
    assert m.tags_for("Potted plant") == ("houseplant",)
    assert m.tags_for("Zimmerpflanze") == ("houseplant",)
    assert m.tags_for("not a tag") == ()
    assert m.known_tags == frozenset()
    exhaustive = identity_mapping(tax, negatives="exhaustive", vocabulary="competitor_api")
    assert exhaustive.known_tags == set(tax.tag_ids)
    assert exhaustive.vocabulary == "competitor_api"
    frame = m.to_frame()
    assert set(frame["tag"]) == set(tax.tag_ids)
    assert not frame["label"].duplicated().any()


# ---- validation errors ----------------------------------------------------------------------
def test_unknown_tag_lists_close_matches(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    data["entries"][0]["tags"] = ["dgo"]
    msg = load_error(tmp_path, data, tax)
    assert "entries[0] ('Dog').tags[0]" in msg
    assert "unknown tag 'dgo'" in msg and "'dog'" in msg


def test_tag_given_by_alias_names_the_id(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    data["entries"][2]["tags"] = ["potted plant"]
    msg = load_error(tmp_path, data, tax)
    assert "entries[2] ('pottedplant').tags[0]" in msg and "use the tag id 'houseplant'" in msg


def test_duplicate_source_label(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    data["entries"].append({"name": "DOG", "tags": ["cat"]})
    msg = load_error(tmp_path, data, tax)
    assert "entries[5] ('DOG')" in msg and "duplicate source label 'dog'" in msg
    assert "entries[0] ('Dog')" in msg


def test_duplicate_id(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    data["entries"].append({"id": 2, "name": "pond", "tags": ["water"]})
    msg = load_error(tmp_path, data, tax)
    assert "entries[5] ('pond')" in msg and "duplicate source label '2'" in msg


def test_entry_without_id_or_name(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    data["entries"].append({"tags": ["dog"]})
    msg = load_error(tmp_path, data, tax)
    assert "entries[5]" in msg and "needs a non-empty `id` or `name`" in msg


def test_entry_without_tags_field(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    del data["entries"][3]["tags"]
    msg = load_error(tmp_path, data, tax)
    assert "entries[3].tags" in msg and "Field required" in msg


def test_bad_negatives_value(tmp_path: Path, tax: Taxonomy) -> None:
    data = base() | {"negatives": "partial"}
    msg = load_error(tmp_path, data, tax)
    assert "negatives" in msg and "'partial'" in msg
    assert "'exhaustive', 'verified' or 'none'" in msg


def test_tag_listed_twice(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    data["entries"][4]["tags"] = ["dog", "dog"]
    msg = load_error(tmp_path, data, tax)
    assert "entries[4] ('/m/x').tags[1]" in msg and "listed twice" in msg


def test_unknown_entry_field(tmp_path: Path, tax: Taxonomy) -> None:
    data = base()
    data["entries"][1]["partail"] = True
    msg = load_error(tmp_path, data, tax)
    assert "entries[1].partail" in msg


def test_missing_file_and_unknown_default(tmp_path: Path, tax: Taxonomy) -> None:
    with pytest.raises(LabelSystemError, match="not found"):
        load_mapping(tmp_path / "nope.yaml", tax)
    with pytest.raises(LabelSystemError, match="allowed: openimages, coco"):
        load_default_mapping("imagenet", tax)


# ---- shipped mappings -----------------------------------------------------------------------
def test_default_mappings_load_and_target_existing_tags(tax: Taxonomy) -> None:
    mappings = load_default_mappings(tax)
    assert set(mappings) == set(DEFAULT_VOCABULARIES)
    for vocab, m in mappings.items():
        assert m.vocabulary == vocab
        assert m.targeted_tags <= set(tax.tag_ids), vocab
        assert len(m.targeted_tags) >= 10, vocab
    assert mappings["openimages"].negatives == "verified"
    assert mappings["keywords"].negatives == "none"
    for vocab in ("coco", "voc", "ade20k_objects", "ade20k_scenes"):
        assert mappings[vocab].negatives == "exhaustive"


def test_every_coco_category_is_mapped(tax: Taxonomy) -> None:
    coco = load_default_mapping("coco", tax)
    assert len(set(COCO_80)) == 80 and len(coco) == 80
    for name in COCO_80:
        assert len(coco.tags_for(name)) == 1, name
    assert coco.tags_for("potted plant") == ("houseplant",)
    assert coco.tags_for("64") == ("houseplant",)  # MLPerf/coco_tiny300 use the id
    assert coco.tags_for("90") == ("toothbrush",)
    assert len(coco.known_tags) == 80


def test_every_voc_class_is_mapped(tax: Taxonomy) -> None:
    voc = load_default_mapping("voc", tax)
    for name in VOC_20:
        assert len(voc.tags_for(name)) == 1, name
    assert voc.tags_for("tvmonitor") == ("tv",)
    assert voc.known_tags == {t for n in VOC_20 for t in voc.tags_for(n)}


def test_openimages_mapping(tax: Taxonomy) -> None:
    oi = load_default_mapping("openimages", tax)
    assert oi.tags_for("/m/014j1m") == ("apple",)
    assert oi.tags_for("/m/0cyhj_") == ("orange",)
    assert oi.negative_tags_for("/m/0cyhj_") == ("orange",)
    owl = oi.entry_for("Owl")
    assert owl is not None and owl.partial and owl.tags == ("bird",)
    assert oi.negative_tags_for("/m/09d5_") == ()  # no owl is not no bird
    # Every COCO category has an Open Images counterpart mapped to the same tag
    # (except those Open Images lacks as a boxable class).
    coco = load_default_mapping("coco", tax)
    oi_tags = oi.targeted_tags
    assert set(coco.targeted_tags) - oi_tags == set()


def test_ade20k_objects_mapping(tax: Taxonomy) -> None:
    ade = load_default_mapping("ade20k_objects", tax)
    assert len(ade) == 150
    assert ade.tags_for("13") == ("person",) and ade.tags_for("person") == ("person",)
    plant = ade.entry_for("18")
    assert plant is not None and plant.partial  # trees and flowers are separate ADE classes
    assert "plant" not in ade.known_tags and "tree" in ade.known_tags
    assert ade.tags_for("1") == ()  # wall: deliberately unmapped


def test_ade20k_scenes_mapping(tax: Taxonomy) -> None:
    scenes = load_default_mapping("ade20k_scenes", tax)
    assert scenes.tags_for("bedroom") == ("bedroom",)
    assert scenes.tags_for("airport_terminal") == ("indoor",)
    assert scenes.tags_for("misc") == () and "misc" in scenes
    # One scene label per image: only room types are exhaustive; outdoor places are partial.
    assert {"bedroom", "kitchen", "bathroom"} <= scenes.known_tags
    assert not scenes.known_tags & {"street", "beach", "indoor", "outdoor", "city"}


def test_ade20k_mappings_cover_the_real_vocabularies(shared_data: Path, tax: Taxonomy) -> None:
    ade = shared_data / "ade20k"
    with (ade / "objectInfo150.csv").open(newline="") as f:
        idx = [row["Idx"] for row in csv.DictReader(f)]
    scenes = {line.split()[1] for line in (ade / "sceneCategories.txt").read_text().splitlines()}
    rep = coverage_report(
        tax,
        [load_default_mapping("ade20k_objects", tax), load_default_mapping("ade20k_scenes", tax)],
        {"ade20k_objects": idx, "ade20k_scenes": scenes},
    )
    assert rep.unknown_observed == {"ade20k_objects": (), "ade20k_scenes": ()}


def test_real_vocabularies_are_all_listed(shared_data: Path, tax: Taxonomy) -> None:
    meta = shared_data / "openimages" / "metadata" / "class-descriptions-boxable.csv"
    with meta.open(newline="") as f:
        mids = [row[0] for row in csv.reader(f)]
    coco_json = shared_data / "coco_mini" / "annotations" / "instances_val2017_dev.json"
    categories = json.loads(coco_json.read_text())["categories"]
    rep = coverage_report(
        tax,
        load_default_mappings(tax),
        {"openimages": mids, "coco": [c["name"] for c in categories]},
    )
    assert rep.unknown_observed == {"openimages": (), "coco": ()}
    coco = load_default_mapping("coco", tax)
    for c in categories:  # id and name agree
        assert coco.tags_for(str(c["id"])) == coco.tags_for(c["name"])


def test_keywords_mapping(tax: Taxonomy) -> None:
    kw = load_default_mapping("keywords", tax)
    assert kw.tags_for("dogs") == ("dog",) and kw.tags_for("Puppies") == ("dog",)
    assert kw.tags_for("beach") == ("beach",)
    assert kw.tags_for("birthday cake") == ("cake", "birthday")
    assert kw.known_tags == frozenset() and kw.negative_tags_for("dogs") == ()


# ---- coverage report ------------------------------------------------------------------------
def test_coverage_report_on_small_mappings(tax: Taxonomy) -> None:
    a = SourceMapping(
        "a",
        "exhaustive",
        [
            MappingEntry(name="dog", tags=("dog",)),
            MappingEntry(name="wall", tags=()),
            MappingEntry(name="lake", tags=("water",), partial=True),
        ],
    )
    b = SourceMapping("b", "none", [MappingEntry(name="kitten", tags=("cat",))])
    rep = coverage_report(tax, {"a": a, "b": b}, {"a": ["dog", "wall", "fox"], "c": ["x"]})
    assert rep.unmapped == {"a": ("wall",), "b": ()}
    assert rep.unknown_observed == {"a": ("fox",)}
    assert rep.missing_vocabularies == ("c",)
    # dog, cat and water are taught; their ancestors only through them.
    assert {"mammal", "pet", "animal"} <= set(rep.implied_only_tags)
    assert "dog" not in rep.untaught_tags and "sky" in rep.untaught_tags
    assert "mammal" not in rep.untaught_tags
    # cat only from a positives-only source, water only from a partial entry.
    assert set(rep.positive_only_tags) == {"cat", "water"}
    assert rep.teachers["dog"] == ("a",)
    text = rep.to_text()
    assert "a (1): wall" in text and "fox" in text and "c: no mapping" in text
    frame = rep.to_frame(tax)
    assert len(frame) == len(tax)
    assert frame.set_index("tag").loc["sky", "status"] == "untaught"
    assert frame.set_index("tag").loc["dog", "status"] == "taught"


def test_default_mappings_teach_every_tag(tax: Taxonomy) -> None:
    rep = coverage_report(tax, load_default_mappings(tax))
    assert rep.untaught_tags == ()
    assert rep.unmapped["coco"] == () and rep.unmapped["voc"] == ()
    assert "person" not in rep.positive_only_tags
    assert "Tags no source can teach (0)" in rep.to_text()
