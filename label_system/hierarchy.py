"""The Open Images class hierarchy (`bbox_labels_600_hierarchy.json`): what implies what.

The file is a tree of nodes `{"LabelName": MID, "Subcategory": [...], "Part": [...]}` under a
root MID ("/m/0bl9f", Entity, which the description file does not name). Two kinds of edges:

- Subcategory: the child is a kind of the parent, so a positive child implies the parent
  ("Owl" -> "Bird" -> "Animal"). `ancestors` follows only these.
- Part: the child is a part of the whole ("Human face" of "Human body", "Bicycle wheel" of
  "Bicycle"). A part does not imply its whole (a wheel on its own is no bicycle), so `parts_of`
  and `wholes_of` keep these apart and `ancestors` ignores them.

A class may appear in several places (Knife under "Kitchen utensil" and "Weapon"); its edges
are merged and `HierarchyReport.multi_placed` lists each such class with all its placements.
MIDs missing from the description file are named by their MID and reported.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from label_system.errors import LabelSystemError

Relation = Literal["Subcategory", "Part"]
RELATIONS: tuple[Relation, ...] = ("Subcategory", "Part")
NODE_KEYS = ("LabelName", *RELATIONS)


@dataclass(frozen=True)
class Placement:
    """One place a class occupies: under `parent` by `relation` (parent None for the root)."""

    parent: str | None
    relation: Relation | None
    path: str  # JSON path of the node, e.g. "Subcategory[38].Subcategory[2]"


@dataclass(frozen=True)
class HierarchyReport:
    """What reading the hierarchy found.

    multi_placed: MID -> the distinct placements (parent, relation) of a class that sits under
        more than one parent.
    repeated: MID -> number of occurrences, for every class that appears more than once (this
        includes copies of a whole subtree under the same parent).
    missing_descriptions: MIDs in the hierarchy that the description file does not name.
    unused_descriptions: MIDs of the description file that the hierarchy never mentions.
    conflicting_edges: (child, parent) pairs that are a Subcategory in one place and a Part in
        another; kept as Subcategory (the implying edge), listed here for review.
    """

    multi_placed: dict[str, tuple[Placement, ...]]
    repeated: dict[str, int]
    missing_descriptions: tuple[str, ...]
    unused_descriptions: tuple[str, ...]
    conflicting_edges: tuple[tuple[str, str], ...]

    def to_text(self, names: Mapping[str, str] | None = None, max_items: int = 40) -> str:
        """A readable summary; `names` turns MIDs into class names."""
        names = names or {}

        def nm(mid: str | None) -> str:
            if mid is None:
                return "<root>"
            return f"{names[mid]} ({mid})" if mid in names else mid

        lines = [f"Classes under more than one parent: {len(self.multi_placed)}"]
        for mid, places in list(self.multi_placed.items())[:max_items]:
            where = "; ".join(f"{p.relation} of {nm(p.parent)}" for p in places)
            lines.append(f"  {nm(mid)}: {where}")
        if len(self.multi_placed) > max_items:
            lines.append(f"  ... (+{len(self.multi_placed) - max_items} more)")
        lines.append(
            f"Classes occurring more than once (copied subtrees included): {len(self.repeated)}"
        )
        lines.append(f"MIDs missing from the description file: {len(self.missing_descriptions)}")
        lines.extend(f"  {mid}" for mid in self.missing_descriptions[:max_items])
        lines.append(f"Described MIDs not in the hierarchy: {len(self.unused_descriptions)}")
        lines.extend(f"  {nm(mid)}" for mid in self.unused_descriptions[:max_items])
        lines.append(f"Edges both Subcategory and Part: {len(self.conflicting_edges)}")
        lines.extend(f"  {nm(c)} -> {nm(p)}" for c, p in self.conflicting_edges[:max_items])
        return "\n".join(lines)


class OpenImagesHierarchy:
    """The merged class graph: Subcategory edges (implying) and Part edges (not implying).

    >>> h = parse_openimages_hierarchy({"LabelName": "/m/root", "Subcategory": [
    ...     {"LabelName": "/m/bike", "Part": [{"LabelName": "/m/wheel"}]},
    ...     {"LabelName": "/m/vehicle", "Subcategory": [{"LabelName": "/m/bike"}]}]},
    ...     {"/m/bike": "Bicycle", "/m/wheel": "Bicycle wheel", "/m/vehicle": "Vehicle"})
    >>> h.ancestors("/m/bike"), h.ancestors("/m/wheel"), h.parts_of("/m/bike")
    (('/m/vehicle',), (), ('/m/wheel',))
    >>> sorted(h.report.multi_placed), h.report.missing_descriptions
    (['/m/bike'], ('/m/root',))
    """

    def __init__(
        self,
        root: str,
        names: Mapping[str, str],
        placements: Mapping[str, tuple[Placement, ...]],
    ) -> None:
        self.root = root
        self.names: dict[str, str] = dict(names)
        self.placements: dict[str, tuple[Placement, ...]] = dict(placements)
        self._parents, self._wholes, conflicts = _merge_edges(self.placements)
        self._parts: dict[str, tuple[str, ...]] = {}
        for child, wholes in self._wholes.items():
            for whole in wholes:
                self._parts[whole] = (*self._parts.get(whole, ()), child)
        named = bool(self.names)  # without a description file nothing counts as missing
        self.report = HierarchyReport(
            multi_placed={m: ps for m in self.placements if len(ps := self.distinct(m)) > 1},
            repeated={m: len(ps) for m, ps in self.placements.items() if len(ps) > 1},
            missing_descriptions=tuple(m for m in self.placements if named and m not in self.names),
            unused_descriptions=tuple(sorted(m for m in self.names if m not in self.placements)),
            conflicting_edges=conflicts,
        )

    def __contains__(self, mid: object) -> bool:
        return mid in self.placements

    def __len__(self) -> int:
        """Number of distinct classes, the root included."""
        return len(self.placements)

    @property
    def mids(self) -> tuple[str, ...]:
        return tuple(self.placements)

    def distinct(self, mid: str) -> tuple[Placement, ...]:
        """Placements of `mid` with distinct (parent, relation), first occurrence kept."""
        seen: dict[tuple[str | None, str | None], Placement] = {}
        for p in self.placements[self._known(mid)]:
            seen.setdefault((p.parent, p.relation), p)
        return tuple(seen.values())

    def name(self, mid: str) -> str:
        """Display name of `mid`; the MID itself when the description file lacks it."""
        return self.names.get(mid, mid)

    def parents(self, mid: str) -> tuple[str, ...]:
        """Direct Subcategory parents (the root excluded)."""
        return tuple(p for p in self._parents.get(self._known(mid), ()) if p != self.root)

    def ancestors(self, mid: str) -> tuple[str, ...]:
        """All classes `mid` implies through Subcategory edges, nearest first, root excluded."""
        seen: list[str] = []
        frontier = list(self.parents(mid))
        while frontier:
            nxt: list[str] = []
            for p in frontier:
                if p not in seen and p != mid:
                    seen.append(p)
                    nxt.extend(self.parents(p))
            frontier = nxt
        return tuple(seen)

    def parts_of(self, mid: str) -> tuple[str, ...]:
        """Classes listed as a Part of the whole `mid` (they do not imply it)."""
        return self._parts.get(self._known(mid), ())

    def wholes_of(self, mid: str) -> tuple[str, ...]:
        """Wholes that `mid` is listed as a Part of."""
        return self._wholes.get(self._known(mid), ())

    def to_frame(self) -> pd.DataFrame:
        """Merged edges: columns `child`, `parent`, `relation`, `child_name`, `parent_name`."""
        rows = [(c, p, "Subcategory") for c, ps in self._parents.items() for p in ps]
        rows += [(c, p, "Part") for c, ps in self._wholes.items() for p in ps]
        frame = pd.DataFrame(rows, columns=["child", "parent", "relation"])
        frame["child_name"] = frame["child"].map(self.name)
        frame["parent_name"] = frame["parent"].map(self.name)
        return frame

    def _known(self, mid: str) -> str:
        if mid not in self.placements:
            raise KeyError(f"MID {mid!r} is not in the Open Images hierarchy")
        return mid


def _merge_edges(
    placements: Mapping[str, tuple[Placement, ...]],
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], tuple[tuple[str, str], ...]]:
    """(child -> Subcategory parents, part -> wholes, edges that are both) over all placements.

    An edge written both ways is kept as Subcategory: it implies, so dropping it would lose
    positives, while keeping a Part edge twice would say nothing more.
    """
    sub: dict[str, list[str]] = {}
    part: dict[str, list[str]] = {}
    for mid, places in placements.items():
        for p in places:
            if p.parent is None:
                continue
            edges = sub if p.relation == "Subcategory" else part
            if p.parent not in edges.setdefault(mid, []):
                edges[mid].append(p.parent)
    conflicts = tuple((c, p) for c, ps in part.items() for p in ps if p in sub.get(c, []))
    for child, parent in conflicts:
        part[child].remove(parent)
    return (
        {k: tuple(v) for k, v in sub.items()},
        {k: tuple(v) for k, v in part.items() if v},
        conflicts,
    )


def parse_openimages_hierarchy(
    data: object,
    names: Mapping[str, str] | None = None,
    source: str | Path | None = None,
) -> OpenImagesHierarchy:
    """Build the hierarchy from the parsed JSON; `names` maps MID -> class name."""
    placements: dict[str, list[Placement]] = {}

    def join(path: str, part: str) -> str:
        return f"{path}.{part}" if path else part

    def visit(node: object, parent: str | None, relation: Relation | None, path: str) -> None:
        where = path or "<root>"
        if not isinstance(node, dict):
            raise LabelSystemError(source, where, f"expected an object, got {type(node).__name__}")
        extra = sorted(set(node) - set(NODE_KEYS))
        if extra:
            raise LabelSystemError(
                source, where, f"unknown keys {extra}; allowed: {', '.join(NODE_KEYS)}"
            )
        mid = node.get("LabelName")
        if not isinstance(mid, str) or not mid:
            raise LabelSystemError(
                source, join(path, "LabelName"), "missing or not a string (a MID)"
            )
        placements.setdefault(mid, []).append(Placement(parent, relation, where))
        for rel in RELATIONS:
            children = node.get(rel, [])
            if not isinstance(children, list):
                raise LabelSystemError(source, join(path, rel), "expected a list")
            for i, child in enumerate(children):
                visit(child, mid, rel, join(path, f"{rel}[{i}]"))

    visit(data, None, None, "")
    root = next(iter(placements))
    desc = dict(names or {})
    return OpenImagesHierarchy(root, desc, {m: tuple(ps) for m, ps in placements.items()})


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """MID -> class name from `class-descriptions-boxable.csv` (`MID,Name`, no header)."""
    path = Path(path)
    out: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for row_no, row in enumerate(csv.reader(f), start=1):
                if not row:
                    continue
                if len(row) != 2 or not row[0].startswith("/"):
                    raise LabelSystemError(
                        path,
                        f"row {row_no}",
                        f"expected 'MID,Name' (e.g. /m/0cyhj_,Orange), got {row}",
                    )
                out[row[0]] = row[1]
    except FileNotFoundError:
        raise LabelSystemError(path, "<file>", "description file not found") from None
    return out


def read_openimages_hierarchy(
    json_path: str | Path, descriptions_csv_path: str | Path | None = None
) -> OpenImagesHierarchy:
    """Read `bbox_labels_600_hierarchy.json` (+ optional `class-descriptions-boxable.csv`).

    >>> h = read_openimages_hierarchy(  # doctest: +SKIP
    ...     "openimages/metadata/bbox_labels_600_hierarchy.json",
    ...     "openimages/metadata/class-descriptions-boxable.csv")
    >>> [h.name(m) for m in h.ancestors("/m/09d5_")]  # doctest: +SKIP
    ['Bird', 'Animal']
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelSystemError(json_path, "<file>", "hierarchy file not found") from None
    except json.JSONDecodeError as e:
        raise LabelSystemError(json_path, f"line {e.lineno}", f"not valid JSON: {e.msg}") from None
    names = read_class_descriptions(descriptions_csv_path) if descriptions_csv_path else None
    return parse_openimages_hierarchy(data, names, source=json_path)
