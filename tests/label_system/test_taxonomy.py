"""Taxonomy file: the shipped album taxonomy and every validation error."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from label_system import LabelSystemError, Taxonomy, load_default_taxonomy, load_taxonomy

# The vocabularies the taxonomy must be able to receive (see tests/label_system/test_mapping.py
# for the mappings themselves).
EXPECTED_CATEGORIES = {
    "people",
    "animals",
    "vehicles",
    "food_drink",
    "objects",
    "nature",
    "scenes_outdoor",
    "scenes_indoor",
    "activities",
}


def minimal() -> dict:
    return {
        "name": "t",
        "version": "1",
        "categories": [
            {"id": "animals", "names": {"en": "Animals"}},
            {"id": "scenes", "names": {"en": "Scenes"}},
        ],
        "tags": [
            {"id": "animal", "names": {"en": "Animal"}, "category": "animals"},
            {"id": "pet", "names": {"en": "Pet"}, "category": "animals", "parents": ["animal"]},
            {
                "id": "dog",
                "names": {"en": "Dog", "de": "Hund"},
                "category": "animals",
                "parents": ["animal", "pet"],
                "aliases": ["puppy"],
            },
            {"id": "beach", "names": {"en": "Beach"}, "category": "scenes"},
        ],
    }


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "tax.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: dict) -> str:
    path = write(tmp_path, data)
    with pytest.raises(LabelSystemError) as info:
        load_taxonomy(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


# ---- the shipped taxonomy -------------------------------------------------------------------
def test_default_taxonomy_loads_with_expected_shape() -> None:
    tax = load_default_taxonomy()
    assert 100 <= len(tax) <= 150
    assert set(tax.categories) == EXPECTED_CATEGORIES
    for category in EXPECTED_CATEGORIES:
        assert len(tax.tags_in_category(category)) >= 5, category
    assert all("de" in tax.tags[t].names for t in tax.tag_ids)


def test_default_taxonomy_is_a_dag_not_a_tree() -> None:
    tax = load_default_taxonomy()
    multi = [t for t in tax.tag_ids if len(tax.parents(t)) > 1]
    assert {"dog", "cat", "hamburger", "handbag", "skyscraper"} <= set(multi)
    assert tax.ancestors("hamburger") == ("sandwich", "fast_food", "food")
    assert tax.ancestors("beach") == ("outdoor",)
    assert set(tax.descendants("pet")) == {"dog", "cat"}


def test_default_taxonomy_flags_small_objects() -> None:
    small = set(load_default_taxonomy().small_object_tags)
    expected = {"sunglasses", "cell_phone", "cup", "remote_control", "fork", "knife", "spoon"}
    expected |= {"wine_glass", "tie", "clock", "bottle", "computer_mouse", "book", "toothbrush"}
    assert expected <= small
    assert not small & {"person", "car", "bed", "beach"}


def test_resolve_names_aliases_and_languages() -> None:
    tax = load_default_taxonomy()
    assert tax.resolve("Potted Plant") == "houseplant"
    assert tax.resolve("Hund") == "dog"
    assert tax.resolve(" tv monitor ") == "tv"
    assert tax.resolve("unicorn") is None
    assert tax.display_name("dog", "de") == "Hund"
    assert tax.display_name("dog", "fr") == "Dog"


def test_to_dict_round_trips() -> None:
    tax = load_default_taxonomy()
    again = Taxonomy.from_dict(json.loads(json.dumps(tax.to_dict())))
    assert again.tag_ids == tax.tag_ids
    assert again.ancestors("dog") == tax.ancestors("dog")
    assert again.small_object_tags == tax.small_object_tags


def test_ids_win_over_foreign_names() -> None:
    data = minimal()
    data["tags"][0]["names"]["de"] = "beach"  # an earlier tag's foreign name == a later id
    tax = Taxonomy.from_dict(data)
    assert tax.resolve("beach") == "beach"
    assert tax.resolve("animal") == "animal"


# ---- validation errors ----------------------------------------------------------------------
def test_unknown_category(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][2]["category"] = "animls"
    msg = load_error(tmp_path, data)
    assert "tags[2] (dog).category" in msg
    assert "'animls'" in msg and "['animals', 'scenes']" in msg


def test_unknown_parent(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][2]["parents"] = ["animl"]
    msg = load_error(tmp_path, data)
    assert "tags[2] (dog).parents" in msg
    assert "'animl'" in msg and "close matches: ['animal']" in msg


def test_own_parent(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][0]["parents"] = ["animal"]
    msg = load_error(tmp_path, data)
    assert "tags[0] (animal).parents" in msg and "own parent" in msg


def test_parent_cycle(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][0]["parents"] = ["dog"]  # animal -> dog -> animal
    msg = load_error(tmp_path, data)
    assert "parent cycle" in msg
    assert "tags[0] (animal).parents" in msg
    assert "animal -> dog -> animal" in msg


def test_duplicate_id(tmp_path: Path) -> None:
    data = minimal()
    data["tags"].append(copy.deepcopy(data["tags"][0]))
    msg = load_error(tmp_path, data)
    assert "tags[4].id" in msg and "duplicate tag id 'animal'" in msg


def test_duplicate_category(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append({"id": "animals", "names": {"en": "Again"}})
    msg = load_error(tmp_path, data)
    assert "categories[2].id" in msg and "duplicate" in msg


def test_duplicate_alias(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][3]["aliases"] = ["Puppy"]
    msg = load_error(tmp_path, data)
    assert "tags[3] (beach).aliases" in msg
    assert "'puppy'" in msg and "tags[2] (dog)" in msg


def test_alias_equal_to_other_tags_name(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][3]["aliases"] = ["dog"]
    msg = load_error(tmp_path, data)
    assert "tags[3] (beach).aliases" in msg and "'dog'" in msg


@pytest.mark.parametrize("bad_id", ["Dog", "hot-dog", "_dog", "dog tag", ""])
def test_bad_id_format(tmp_path: Path, bad_id: str) -> None:
    data = minimal()
    data["tags"][2]["id"] = bad_id
    msg = load_error(tmp_path, data)
    assert "tags[2].id" in msg and "must match" in msg


def test_missing_english_name(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][2]["names"] = {"de": "Hund"}
    msg = load_error(tmp_path, data)
    assert "tags[2].names" in msg and "'en'" in msg


def test_unknown_field(tmp_path: Path) -> None:
    data = minimal()
    data["tags"][1]["smallobject"] = True
    msg = load_error(tmp_path, data)
    assert "tags[1].smallobject" in msg and "given: True" in msg


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(LabelSystemError, match="<root>"):
        load_taxonomy(path)
    path.write_text("tags: [a, b\n")
    with pytest.raises(LabelSystemError, match="not valid YAML"):
        load_taxonomy(path)
    with pytest.raises(LabelSystemError, match="not found"):
        load_taxonomy(tmp_path / "missing.yaml")


def test_guidelines_are_optional_validated_and_shipped() -> None:
    from label_system.taxonomy import load_default_taxonomy

    tax = load_default_taxonomy()
    dog = tax.tags["dog"]
    assert dog.guideline is not None and "wolf" in dog.guideline.look_alikes
    assert dog.guideline_text().startswith("Counts: a real dog")
    assert tax.tags["pet"].guideline is None
    assert tax.tags["pet"].guideline_text() == tax.tags["pet"].description
    assert sum(t.guideline is not None for t in tax.tags.values()) >= 15
    snapshot = Taxonomy.from_dict(tax.to_dict())  # survives the bundle snapshot
    assert snapshot.tags["dog"].guideline == dog.guideline
    data = tax.to_dict()
    data["tags"][0] = dict(data["tags"][0]) | {"guideline": {"excludes": "x"}}  # type: ignore[index]
    with pytest.raises(LabelSystemError, match="counts"):
        Taxonomy.from_dict(data)
