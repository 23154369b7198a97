"""Open Images hierarchy: Subcategory vs Part, repeated classes, missing descriptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from label_system import LabelSystemError, read_class_descriptions, read_openimages_hierarchy
from label_system.hierarchy import parse_openimages_hierarchy

ROOT = "/m/root"
NAMES = {
    "/m/animal": "Animal",
    "/m/bird": "Bird",
    "/m/owl": "Owl",
    "/m/vehicle": "Vehicle",
    "/m/sports": "Sports equipment",
    "/m/bike": "Bicycle",
    "/m/wheel": "Bicycle wheel",
    "/m/person": "Person",
    "/m/body": "Human body",
    "/m/face": "Human face",
    "/m/unused": "Never in the tree",
}
TREE = {
    "LabelName": ROOT,
    "Subcategory": [
        {
            "LabelName": "/m/animal",
            "Subcategory": [{"LabelName": "/m/bird", "Subcategory": [{"LabelName": "/m/owl"}]}],
        },
        {
            "LabelName": "/m/vehicle",
            "Subcategory": [
                {"LabelName": "/m/bike", "Part": [{"LabelName": "/m/wheel"}]},
            ],
        },
        # Bicycle again, with its parts again: a class in two places.
        {
            "LabelName": "/m/sports",
            "Subcategory": [{"LabelName": "/m/bike", "Part": [{"LabelName": "/m/wheel"}]}],
        },
        {
            "LabelName": "/m/person",
            "Part": [{"LabelName": "/m/body", "Part": [{"LabelName": "/m/face"}]}],
        },
        {"LabelName": "/m/nameless"},
    ],
}


def write(tmp_path: Path, tree: object, names: dict[str, str] | None = NAMES) -> tuple[Path, Path]:
    json_path = tmp_path / "hierarchy.json"
    json_path.write_text(json.dumps(tree))
    csv_path = tmp_path / "descriptions.csv"
    csv_path.write_text("".join(f"{m},{n}\n" for m, n in (names or {}).items()))
    return json_path, csv_path


def test_subcategory_implies_part_does_not(tmp_path: Path) -> None:
    h = read_openimages_hierarchy(*write(tmp_path, TREE))
    assert h.ancestors("/m/owl") == ("/m/bird", "/m/animal")
    assert set(h.ancestors("/m/bike")) == {"/m/vehicle", "/m/sports"}
    assert h.ancestors("/m/wheel") == ()  # a wheel is no bicycle
    assert h.ancestors("/m/face") == ()
    assert h.parts_of("/m/bike") == ("/m/wheel",)
    assert h.wholes_of("/m/wheel") == ("/m/bike",)
    assert h.parts_of("/m/person") == ("/m/body",)
    assert h.parts_of("/m/body") == ("/m/face",)
    assert h.ancestors("/m/animal") == ()  # the root is not a class


def test_names_and_report(tmp_path: Path) -> None:
    h = read_openimages_hierarchy(*write(tmp_path, TREE))
    assert h.name("/m/owl") == "Owl"
    assert h.name("/m/nameless") == "/m/nameless"
    rep = h.report
    assert set(rep.multi_placed) == {"/m/bike"}  # wheel: same whole twice, not two parents
    assert {p.parent for p in rep.multi_placed["/m/bike"]} == {"/m/vehicle", "/m/sports"}
    assert rep.repeated == {"/m/bike": 2, "/m/wheel": 2}
    assert rep.missing_descriptions == (ROOT, "/m/nameless")
    assert rep.unused_descriptions == ("/m/unused",)
    text = rep.to_text(h.names)
    assert "Bicycle (/m/bike): Subcategory of Vehicle (/m/vehicle)" in text
    assert "/m/nameless" in text and "Never in the tree" in text


def test_to_frame(tmp_path: Path) -> None:
    frame = read_openimages_hierarchy(*write(tmp_path, TREE)).to_frame()
    rows = set(frame[["child", "parent", "relation"]].itertuples(index=False, name=None))
    assert ("/m/owl", "/m/bird", "Subcategory") in rows
    assert ("/m/wheel", "/m/bike", "Part") in rows
    assert len(frame) == len(rows)  # repeated placements are merged


def test_without_descriptions_nothing_is_missing(tmp_path: Path) -> None:
    json_path, _ = write(tmp_path, TREE)
    h = read_openimages_hierarchy(json_path)
    assert h.report.missing_descriptions == ()
    assert h.name("/m/owl") == "/m/owl"


def test_edge_both_subcategory_and_part_is_reported() -> None:
    tree = {
        "LabelName": ROOT,
        "Subcategory": [
            {"LabelName": "/m/a", "Subcategory": [{"LabelName": "/m/b"}]},
            {"LabelName": "/m/a2", "Part": [{"LabelName": "/m/x"}]},
            {"LabelName": "/m/a", "Part": [{"LabelName": "/m/b"}]},
        ],
    }
    h = parse_openimages_hierarchy(tree)
    assert h.report.conflicting_edges == (("/m/b", "/m/a"),)
    assert h.ancestors("/m/b") == ("/m/a",) and h.wholes_of("/m/b") == ()


def test_cyclic_placements_do_not_loop() -> None:
    tree = {
        "LabelName": ROOT,
        "Subcategory": [
            {"LabelName": "/m/a", "Subcategory": [{"LabelName": "/m/b"}]},
            {"LabelName": "/m/b", "Subcategory": [{"LabelName": "/m/a"}]},
        ],
    }
    h = parse_openimages_hierarchy(tree)
    assert h.ancestors("/m/a") == ("/m/b",)
    with pytest.raises(KeyError, match="/m/zzz"):
        h.ancestors("/m/zzz")


@pytest.mark.parametrize(
    ("tree", "where", "what"),
    [
        ({"name": "Entity", "children": []}, "<root>", "unknown keys ['children', 'name']"),
        ({"Subcategory": []}, "LabelName", "missing"),
        ({"LabelName": ROOT, "Subcategory": {"LabelName": "/m/a"}}, "Subcategory", "a list"),
        (
            {"LabelName": ROOT, "Subcategory": [{"LabelName": "/m/a", "Part": [{"Label": 1}]}]},
            "Subcategory[0].Part[0]",
            "unknown keys ['Label']",
        ),
        ({"LabelName": ROOT, "Part": ["/m/a"]}, "Part[0]", "expected an object"),
    ],
)
def test_bad_hierarchy_names_file_and_node(
    tmp_path: Path, tree: object, where: str, what: str
) -> None:
    json_path, _ = write(tmp_path, tree)
    with pytest.raises(LabelSystemError) as info:
        read_openimages_hierarchy(json_path)
    msg = str(info.value)
    assert str(json_path) in msg and where in msg and what in msg


def test_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"LabelName": ')
    with pytest.raises(LabelSystemError, match="not valid JSON"):
        read_openimages_hierarchy(path)
    with pytest.raises(LabelSystemError, match="not found"):
        read_openimages_hierarchy(tmp_path / "missing.json")
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("/m/a,Apple\nOrange\n")
    with pytest.raises(LabelSystemError, match="row 2"):
        read_class_descriptions(csv_path)


def test_real_open_images_hierarchy(shared_data: Path) -> None:
    meta = shared_data / "openimages" / "metadata"
    h = read_openimages_hierarchy(
        meta / "bbox_labels_600_hierarchy.json", meta / "class-descriptions-boxable.csv"
    )
    mid = {name: m for m, name in h.names.items()}
    assert len(h) == 602  # 601 boxable classes + the root
    assert h.report.missing_descriptions == ("/m/0bl9f",)  # the root, "Entity"
    assert h.report.unused_descriptions == ()

    def names(mids: tuple[str, ...]) -> set[str]:
        return {h.name(m) for m in mids}

    assert names(h.ancestors(mid["Owl"])) == {"Bird", "Animal"}
    assert names(h.ancestors(mid["Van"])) == {"Car", "Land vehicle", "Vehicle"}
    assert names(h.ancestors(mid["Knife"])) >= {"Kitchen utensil", "Weapon"}
    assert h.ancestors(mid["Human face"]) == ()
    assert names(h.wholes_of(mid["Human face"])) == {"Human body"}
    assert names(h.wholes_of(mid["Bicycle wheel"])) == {"Bicycle"}
    assert mid["Bicycle wheel"] in h.parts_of(mid["Bicycle"])
    assert mid["Bicycle"] not in h.ancestors(mid["Bicycle wheel"])
    assert {"Knife", "Bicycle", "Flying disc", "Teddy bear"} <= names(tuple(h.report.multi_placed))
    assert h.report.repeated[mid["Bicycle"]] == 3
    assert "Classes under more than one parent" in h.report.to_text(h.names)
