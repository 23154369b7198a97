"""Prior rules: file format, cycles, contradictions, the shipped defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from label_system import (
    LabelSystemError,
    PriorRules,
    Taxonomy,
    check_priors,
    load_default_priors,
    load_default_taxonomy,
    load_priors,
)
from label_system.priors import implied_closure


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_default_taxonomy()


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "priors.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: object, tax: Taxonomy) -> str:
    path = write(tmp_path, data)
    with pytest.raises(LabelSystemError) as info:
        load_priors(path, tax)
    message = str(info.value)
    assert str(path) in message, message
    return message


# ---- format ---------------------------------------------------------------------------------
def test_load_expands_lists_and_groups(tmp_path: Path, tax: Taxonomy) -> None:
    data = {
        "implies": [
            {"if": "skiing", "then": ["snow", "mountain"]},
            {"if": "forest", "then": "tree"},
        ],
        "excludes": [{"tags": ["bathroom", "bedroom", "kitchen"], "note": "rooms"}],
    }
    rules = load_priors(write(tmp_path, data), tax)
    assert rules.implies == [("skiing", "snow"), ("skiing", "mountain"), ("forest", "tree")]
    pairs = [("bathroom", "bedroom"), ("bathroom", "kitchen"), ("bedroom", "kitchen")]
    assert rules.excludes == pairs
    where = rules.origin("excludes", "kitchen", "bedroom")
    assert where == "excludes[0] (kitchen excludes bedroom)"
    assert rules.implied_by("skiing") == ("snow", "mountain")
    assert set(rules.excluded_with("bedroom")) == {"bathroom", "kitchen"}
    again = PriorRules.from_dict(rules.to_dict(), tax)
    assert again.implies == rules.implies and again.excludes == rules.excludes


def test_empty_file_is_no_rules(tmp_path: Path, tax: Taxonomy) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    rules = load_priors(path, tax)
    assert rules.implies == [] and rules.excludes == []


def test_unknown_tag_named_with_entry(tmp_path: Path, tax: Taxonomy) -> None:
    msg = load_error(tmp_path, {"implies": [{"if": "forest", "then": ["tree", "trea"]}]}, tax)
    assert "implies[0].then[1]" in msg and "unknown tag 'trea'" in msg and "'tree'" in msg
    msg = load_error(tmp_path, {"excludes": [{"tags": ["indoor", "outdoors"]}]}, tax)
    assert "excludes[0].tags[1]" in msg and "use the tag id 'outdoor'" in msg


@pytest.mark.parametrize(
    ("data", "where", "what"),
    [
        ({"implies": [{"if": "dog"}]}, "implies[0].then", "Field required"),
        ({"implies": [{"if": "dog", "then": "dog"}]}, "implies[0].then[0]", "imply itself"),
        ({"excludes": [{"tags": ["dog"]}]}, "excludes[0].tags", "at least 2"),
        ({"excludes": [{"tags": ["dog", "cat", "dog"]}]}, "excludes[0].tags", "listed twice"),
        ({"implise": []}, "implise", "Extra inputs"),
        ({"implies": [{"if": "dog", "then": "pet", "because": "x"}]}, "implies[0].because", ""),
        (["dog"], "<root>", "expected a mapping"),
    ],
)
def test_format_errors(tmp_path: Path, tax: Taxonomy, data: object, where: str, what: str) -> None:
    msg = load_error(tmp_path, data, tax)
    assert where in msg and what in msg


# ---- cycles ---------------------------------------------------------------------------------
def test_cycle_between_rules(tmp_path: Path, tax: Taxonomy) -> None:
    data = {"implies": [{"if": "beach", "then": "sea"}, {"if": "sea", "then": "beach"}]}
    msg = load_error(tmp_path, data, tax)
    assert "implication cycle beach -> sea -> beach" in msg
    assert "implies[0] (beach -> sea)" in msg and "implies[1] (sea -> beach)" in msg


def test_cycle_through_taxonomy_parents(tmp_path: Path, tax: Taxonomy) -> None:
    # tree -> plant is a taxonomy parent edge; plant -> forest -> tree closes the loop.
    data = {"implies": [{"if": "plant", "then": "forest"}, {"if": "forest", "then": "tree"}]}
    msg = load_error(tmp_path, data, tax)
    assert "implication cycle" in msg and "taxonomy parent (tree -> plant)" in msg


def test_rule_reversing_a_parent_is_a_cycle(tax: Taxonomy) -> None:
    with pytest.raises(LabelSystemError, match=r"cycle animal -> dog -> mammal -> animal"):
        check_priors(PriorRules([("animal", "dog")], []), tax)


# ---- contradictions -------------------------------------------------------------------------
def test_implies_and_excludes_the_same_tag(tmp_path: Path, tax: Taxonomy) -> None:
    data = {"implies": [{"if": "beach", "then": "sea"}], "excludes": [{"tags": ["sea", "beach"]}]}
    msg = load_error(tmp_path, data, tax)
    assert "excludes[0] (sea excludes beach)" in msg
    assert "contradiction: 'beach' implies" in msg and "implies[0] (beach -> sea)" in msg


def test_contradiction_through_chains(tmp_path: Path, tax: Taxonomy) -> None:
    # a implies b, a implies c, b excludes c.
    data = {
        "implies": [{"if": "dog", "then": ["grass", "couch"]}],
        "excludes": [{"tags": ["grass", "couch"]}],
    }
    msg = load_error(tmp_path, data, tax)
    assert "'dog' implies 'grass'" in msg and "'couch'" in msg


def test_contradiction_through_taxonomy_and_rule(tmp_path: Path, tax: Taxonomy) -> None:
    # bedroom -> indoor (taxonomy), bedroom -> beach (rule) -> outdoor (taxonomy).
    data = {
        "implies": [{"if": "bedroom", "then": "beach"}],
        "excludes": [{"tags": ["indoor", "outdoor"]}],
    }
    msg = load_error(tmp_path, data, tax)
    assert "excludes[0] (indoor excludes outdoor)" in msg
    assert "taxonomy parent (bedroom -> indoor)" in msg
    assert "implies[0] (bedroom -> beach) then taxonomy parent (beach -> outdoor)" in msg


def test_tag_excluding_its_own_ancestor(tmp_path: Path, tax: Taxonomy) -> None:
    msg = load_error(tmp_path, {"excludes": [{"tags": ["dog", "animal"]}]}, tax)
    assert "'dog' implies 'dog' (itself) and 'animal'" in msg


def test_exclusions_between_siblings_are_fine(tax: Taxonomy) -> None:
    assert check_priors(PriorRules([], [("dog", "cat"), ("indoor", "outdoor")]), tax) == []


def test_in_memory_rules_are_checked(tax: Taxonomy) -> None:
    with pytest.raises(LabelSystemError, match="unknown tag 'unicorn'"):
        check_priors(PriorRules([("unicorn", "animal")], []), tax)
    with pytest.raises(LabelSystemError, match="two different tags"):
        check_priors(PriorRules([], [("dog", "dog")]), tax)


def test_redundant_rules_are_warnings(tax: Taxonomy) -> None:
    warnings = check_priors(PriorRules([("dog", "animal"), ("forest", "tree")], []), tax)
    assert len(warnings) == 1 and warnings[0].startswith("implies (dog -> animal) is redundant")


# ---- the shipped defaults -------------------------------------------------------------------
def test_default_priors_are_clean(tax: Taxonomy) -> None:
    rules = load_default_priors(tax)
    assert ("forest", "tree") in rules.implies
    assert ("indoor", "outdoor") in rules.excludes
    assert check_priors(rules, tax) == []  # no contradictions, nothing redundant
    assert rules.tags <= set(tax.tag_ids)


def test_implied_closure(tax: Taxonomy) -> None:
    rules = load_default_priors(tax)
    assert implied_closure(["forest"], rules, tax) == {"forest", "outdoor", "tree", "plant"}
    assert implied_closure([], rules, tax) == set()
