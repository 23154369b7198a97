"""The album taxonomy: tags with stable ids, categories, a parent DAG, aliases and flags.

The taxonomy owns the column order of every `[N, num_tags]` matrix in the project.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import cached_property
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from label_system.errors import LabelSystemError, format_pydantic_error

TAG_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
DEFAULT_TAXONOMY = "album_taxonomy.yaml"


class Category(BaseModel):
    """A parent category (people, animals, ...); every tag has exactly one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    names: dict[str, str] = Field(description="display names by language code; 'en' required")

    @field_validator("names")
    @classmethod
    def _needs_english(cls, v: dict[str, str]) -> dict[str, str]:
        if "en" not in v:
            raise ValueError("names must include 'en'")
        return v


class Guideline(BaseModel):
    """How an annotator judges a tag: what counts, what does not, and its look-alikes.

    Shown wherever a person decides a tag (review contact sheet, Label Studio tasks).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    counts: str = Field(description="what counts as the tag (visible, in the photo)")
    excludes: str = Field(default="", description="what does not count, even if related")
    look_alikes: tuple[str, ...] = Field(
        default=(), description="things often confused with the tag"
    )

    def to_text(self) -> str:
        """One paragraph: 'Counts: ... Does not count: ... Look-alikes: ...'."""
        parts = [f"Counts: {self.counts}"]
        if self.excludes:
            parts.append(f"Does not count: {self.excludes}")
        if self.look_alikes:
            parts.append(f"Look-alikes: {', '.join(self.look_alikes)}")
        return " ".join(p if p.endswith(".") else p + "." for p in parts)


class Tag(BaseModel):
    """One tag of the label system."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="stable id: lowercase letters, digits, underscores")
    names: dict[str, str] = Field(description="display names by language code; 'en' required")
    category: str
    parents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    small_object: bool = False
    description: str = ""
    guideline: Guideline | None = None  # the annotation standard for this tag

    @field_validator("id")
    @classmethod
    def _id_format(cls, v: str) -> str:
        if not TAG_ID_PATTERN.match(v):
            raise ValueError(f"tag id {v!r} must match {TAG_ID_PATTERN.pattern}")
        return v

    @field_validator("names")
    @classmethod
    def _needs_english(cls, v: dict[str, str]) -> dict[str, str]:
        if "en" not in v:
            raise ValueError("names must include 'en'")
        return v

    def name(self, language: str = "en") -> str:
        """Display name in `language`, falling back to English."""
        return self.names.get(language, self.names["en"])

    def guideline_text(self) -> str:
        """The annotation guideline as one paragraph; the description (or '') without one."""
        return self.guideline.to_text() if self.guideline else self.description


class TaxonomyFile(BaseModel):
    """The YAML layout of a taxonomy file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    categories: list[Category]
    tags: list[Tag]


class Taxonomy:
    """A validated taxonomy. Column `i` of every tag matrix is `taxonomy.tag_ids[i]`.

    >>> tax = Taxonomy.from_dict({"name": "t", "version": "1",
    ...     "categories": [{"id": "animals", "names": {"en": "Animals"}}],
    ...     "tags": [{"id": "animal", "names": {"en": "Animal"}, "category": "animals"},
    ...              {"id": "dog", "names": {"en": "Dog"}, "category": "animals",
    ...               "parents": ["animal"], "aliases": ["puppy"]}]})
    >>> tax.tag_ids, tax.index("dog"), tax.ancestors("dog"), tax.resolve("Puppy")
    (('animal', 'dog'), 1, ('animal',), 'dog')
    """

    def __init__(self, spec: TaxonomyFile, source: str | Path | None = None) -> None:
        self.name = spec.name
        self.version = spec.version
        self.source = str(source) if source is not None else None
        self.categories: dict[str, Category] = {}
        self.tags: dict[str, Tag] = {}
        for i, cat in enumerate(spec.categories):
            if cat.id in self.categories:
                raise LabelSystemError(source, f"categories[{i}].id", f"duplicate id {cat.id!r}")
            self.categories[cat.id] = cat
        for i, tag in enumerate(spec.tags):
            if tag.id in self.tags:
                raise LabelSystemError(source, f"tags[{i}].id", f"duplicate tag id {tag.id!r}")
            if tag.category not in self.categories:
                raise LabelSystemError(
                    source,
                    f"tags[{i}] ({tag.id}).category",
                    f"unknown category {tag.category!r}; allowed: {sorted(self.categories)}",
                )
            self.tags[tag.id] = tag
        for i, tag in enumerate(spec.tags):
            for parent in tag.parents:
                if parent not in self.tags:
                    close = difflib.get_close_matches(parent, list(self.tags), n=3, cutoff=0.6)
                    raise LabelSystemError(
                        source,
                        f"tags[{i}] ({tag.id}).parents",
                        f"unknown parent tag {parent!r}; parents must be tag ids of this file"
                        + (f"; close matches: {close}" if close else ""),
                    )
                if parent == tag.id:
                    raise LabelSystemError(
                        source, f"tags[{i}] ({tag.id}).parents", "a tag cannot be its own parent"
                    )
        self._check_acyclic()
        self._check_names_unique()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: object, source: str | Path | None = None) -> Taxonomy:
        if not isinstance(data, dict):
            raise LabelSystemError(
                source, "<root>", "expected a mapping with name, version, categories, tags"
            )
        try:
            spec = TaxonomyFile.model_validate(data)
        except ValidationError as e:
            raise format_pydantic_error(source, e) from None
        return cls(spec, source)

    def to_dict(self) -> dict[str, object]:
        """The taxonomy as plain data (for a snapshot inside a model bundle)."""
        return {
            "name": self.name,
            "version": self.version,
            "categories": [c.model_dump() for c in self.categories.values()],
            "tags": [
                t.model_dump(mode="json", exclude_defaults=True) | {"category": t.category}
                for t in self.tags.values()
            ],
        }

    # ---- structure ----------------------------------------------------------------------
    def _where(self, tag_id: str) -> str:
        """'tags[i] (id)': the entry of `tag_id` in the file."""
        return f"tags[{list(self.tags).index(tag_id)}] ({tag_id})"

    def _check_acyclic(self) -> None:
        state: dict[str, int] = {}

        def visit(tag_id: str, path: list[str]) -> None:
            if state.get(tag_id) == 2:
                return
            if state.get(tag_id) == 1:
                cycle = " -> ".join([*path[path.index(tag_id) :], tag_id])
                raise LabelSystemError(
                    self.source, f"{self._where(tag_id)}.parents", f"parent cycle: {cycle}"
                )
            state[tag_id] = 1
            for parent in self.tags[tag_id].parents:
                visit(parent, [*path, tag_id])
            state[tag_id] = 2

        for tag_id in self.tags:
            visit(tag_id, [])

    def _check_names_unique(self) -> None:
        seen: dict[str, str] = {}
        for tag in self.tags.values():
            keys = (tag.id, tag.names["en"], *tag.aliases)
            for key in dict.fromkeys(k.strip().lower() for k in keys):
                other = seen.get(key)
                if other is not None and other != tag.id:
                    raise LabelSystemError(
                        self.source,
                        f"{self._where(tag.id)}.aliases",
                        f"name or alias {key!r} is already used by {self._where(other)}; "
                        "ids, English names and aliases must be unique across tags",
                    )
                seen[key] = tag.id

    @cached_property
    def tag_ids(self) -> tuple[str, ...]:
        """Column order of every tag matrix."""
        return tuple(self.tags)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tag_ids)}

    @cached_property
    def _lookup(self) -> dict[str, str]:
        out: dict[str, str] = {t: t for t in self.tags}  # ids win over names and aliases
        for tag in self.tags.values():
            for key in (
                tag.id,
                *(n.lower() for n in tag.names.values()),
                *(a.lower() for a in tag.aliases),
            ):
                out.setdefault(key.strip().lower(), tag.id)
        return out

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, tag_id: object) -> bool:
        return tag_id in self.tags

    def index(self, tag_id: str) -> int:
        """Column of `tag_id`; KeyError names the unknown tag."""
        try:
            return self._index[tag_id]
        except KeyError:
            raise KeyError(f"unknown tag {tag_id!r} in taxonomy {self.name!r}") from None

    def indices(self, tag_ids: Iterable[str]) -> list[int]:
        return [self.index(t) for t in tag_ids]

    def resolve(self, name: str) -> str | None:
        """Tag id for an id, display name (any language) or alias, case-insensitive."""
        return self._lookup.get(name.strip().lower())

    def parents(self, tag_id: str) -> tuple[str, ...]:
        return self.tags[tag_id].parents

    def ancestors(self, tag_id: str) -> tuple[str, ...]:
        """All parent tags, transitively, nearest first, without duplicates."""
        return self._ancestors[tag_id]

    @cached_property
    def _ancestors(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for tag_id in self.tags:
            seen: list[str] = []
            frontier = list(self.tags[tag_id].parents)
            while frontier:
                nxt: list[str] = []
                for p in frontier:
                    if p not in seen:
                        seen.append(p)
                        nxt.extend(self.tags[p].parents)
                frontier = nxt
            out[tag_id] = tuple(seen)
        return out

    def descendants(self, tag_id: str) -> tuple[str, ...]:
        """All tags that have `tag_id` among their ancestors."""
        return tuple(t for t in self.tags if tag_id in self._ancestors[t])

    def with_ancestors(self, tag_ids: Iterable[str]) -> list[str]:
        """`tag_ids` plus all their ancestors, in taxonomy column order."""
        wanted: set[str] = set()
        for t in tag_ids:
            wanted.add(t)
            wanted.update(self._ancestors[t])
        return [t for t in self.tag_ids if t in wanted]

    def category_of(self, tag_id: str) -> str:
        return self.tags[tag_id].category

    def tags_in_category(self, category: str) -> tuple[str, ...]:
        return tuple(t.id for t in self.tags.values() if t.category == category)

    def display_name(self, tag_id: str, language: str = "en") -> str:
        return self.tags[tag_id].name(language)

    @cached_property
    def small_object_tags(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.tags.values() if t.small_object)


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read and validate a taxonomy YAML file.

    >>> tax = load_taxonomy(default_data_path(DEFAULT_TAXONOMY))
    >>> len(tax) > 50
    True
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelSystemError(path, "<file>", "taxonomy file not found") from None
    except yaml.YAMLError as e:
        raise LabelSystemError(path, "<yaml>", f"not valid YAML: {e}") from None
    return Taxonomy.from_dict(data, source=path)


def default_data_path(name: str) -> Path:
    """Path of a file shipped in `label_system/data` (taxonomy, mappings, priors)."""
    return Path(str(resources.files("label_system") / "data" / name))


def load_default_taxonomy() -> Taxonomy:
    """The shipped album taxonomy."""
    return load_taxonomy(default_data_path(DEFAULT_TAXONOMY))
