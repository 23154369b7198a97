"""Source-vocabulary mappings: which source labels teach which tags, and what their absence means.

A mapping file (YAML) describes one source vocabulary::

    vocabulary: coco          # the name readers write in SourceTable.labels["vocabulary"]
    negatives: exhaustive     # exhaustive | verified | none (see below)
    description: MS-COCO 2017 instance categories   # optional
    entries:
      - {id: 1, name: person, tags: [person]}
      - {id: 64, name: potted plant, tags: [houseplant]}
      - {name: lake, tags: [water], partial: true}      # a narrower slice of the tag
      - {name: dogs, aliases: [puppies], tags: [dog]}   # extra spellings of the same label
      - {name: misc, tags: []}                           # deliberately unmapped

Entry fields: `id` and/or `name` (at least one; both become lookup keys, as do `aliases`),
`tags` (tag ids of the taxonomy, many-to-many; `[]` means deliberately unmapped, and
`coverage_report` lists it), `partial` (default false), `note` (free text).

`negatives` says what a source tells about tags it does not mark positive:

- exhaustive: every image of the vocabulary is a known negative for `known_tags` unless it is
  positive (COCO, VOC, ADE20K). `known_tags` = every tag targeted by a non-partial entry.
- verified: only explicit negative rows (value 0) give negatives (Open Images), and only for
  the non-partial targets of that label (`negative_tags_for`).
- none: positives only (keyword folders, API predictions).

`partial: true` marks a label that covers only part of its tags (Open Images "Sun hat" -> hat,
ADE20K "lake" -> water, ADE20K "plant" when trees and flowers are separate ADE classes): the
label's presence makes the tags positive, but its absence says nothing about them, so partial
targets never enter `known_tags` nor `negative_tags_for`.

Mappings name tags directly; parents come from the taxonomy (`Taxonomy.with_ancestors`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from label_system.errors import LabelSystemError, format_pydantic_error
from label_system.taxonomy import Taxonomy, default_data_path

Negatives = Literal["exhaustive", "verified", "none"]
NEGATIVES: tuple[str, ...] = ("exhaustive", "verified", "none")
MAPPINGS_DIR = "mappings"
DEFAULT_VOCABULARIES: tuple[str, ...] = (
    "openimages",
    "coco",
    "voc",
    "ade20k_objects",
    "ade20k_scenes",
    "keywords",
)


def normalize_label(s: str) -> str:
    """The lookup key of a source label: stripped and lower-cased.

    >>> normalize_label("  Dining Table ")
    'dining table'
    """
    return s.strip().lower()


class MappingEntry(BaseModel):
    """One source label (by id and/or name) and the tags it teaches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    name: str | None = None
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = Field(description="tag ids; [] = deliberately unmapped")
    partial: bool = False
    note: str = ""

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_string(cls, v: object) -> object:
        # COCO and ADE20K ids are integers in YAML; readers emit them as strings.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _needs_a_key(self) -> MappingEntry:
        if not (self.id or "").strip() and not (self.name or "").strip():
            raise ValueError("an entry needs a non-empty `id` or `name`")
        return self

    @property
    def label(self) -> str:
        """How reports name this entry: the name when there is one, else the id."""
        return self.name if self.name else str(self.id)

    def label_keys(self) -> tuple[str, ...]:
        """Normalized lookup keys: id, name, aliases (without duplicates)."""
        raw = [k for k in (self.id, self.name, *self.aliases) if k and k.strip()]
        return tuple(dict.fromkeys(normalize_label(k) for k in raw))


class MappingFile(BaseModel):
    """The YAML layout of a mapping file."""

    model_config = ConfigDict(extra="forbid")

    vocabulary: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    negatives: Negatives
    description: str = ""
    entries: list[MappingEntry]


class SourceMapping:
    """A validated mapping from one source vocabulary's labels to tags.

    >>> m = SourceMapping("voc", "exhaustive", [
    ...     MappingEntry(name="pottedplant", tags=("houseplant",)),
    ...     MappingEntry(name="lake", tags=("water",), partial=True)])
    >>> m.tags_for("PottedPlant"), m.tags_for("sofa"), sorted(m.known_tags)
    (('houseplant',), (), ['houseplant'])
    """

    def __init__(
        self,
        vocabulary: str,
        negatives: Negatives,
        entries: Sequence[MappingEntry],
        *,
        description: str = "",
        source: str | Path | None = None,
    ) -> None:
        if negatives not in NEGATIVES:
            raise LabelSystemError(
                source, "negatives", f"got {negatives!r}; allowed: {', '.join(NEGATIVES)}"
            )
        self.vocabulary = vocabulary
        self.negatives: Negatives = negatives
        self.description = description
        self.source = str(source) if source is not None else None
        self.entries: tuple[MappingEntry, ...] = tuple(entries)
        self._entry_of: dict[str, int] = {}
        for i, entry in enumerate(self.entries):
            for key in entry.label_keys():
                other = self._entry_of.get(key)
                if other is not None:
                    raise LabelSystemError(
                        source,
                        _where(i, entry),
                        f"duplicate source label {key!r} (already used by "
                        f"{_where(other, self.entries[other])}); each label may appear once",
                    )
                self._entry_of[key] = i

    # ---- lookups -------------------------------------------------------------------------
    def __contains__(self, source_label: object) -> bool:
        return isinstance(source_label, str) and normalize_label(source_label) in self._entry_of

    def __len__(self) -> int:
        return len(self.entries)

    def entry_for(self, source_label: str) -> MappingEntry | None:
        """The entry whose id, name or alias is `source_label` (case-insensitive)."""
        i = self._entry_of.get(normalize_label(source_label))
        return None if i is None else self.entries[i]

    def tags_for(self, source_label: str) -> tuple[str, ...]:
        """Tags a positive `source_label` teaches; () when unmapped or unknown.

        >>> m = SourceMapping("coco", "exhaustive", [MappingEntry(id="18", name="dog",
        ...     tags=("dog",))])
        >>> m.tags_for("18"), m.tags_for("Dog"), m.tags_for("wolf")
        (('dog',), ('dog',), ())
        """
        entry = self.entry_for(source_label)
        return entry.tags if entry is not None else ()

    def negative_tags_for(self, source_label: str) -> tuple[str, ...]:
        """Tags a verified negative row (value 0) of `source_label` makes known negatives.

        The label's non-partial targets; () for partial entries and for `negatives: none`.
        """
        entry = self.entry_for(source_label)
        if entry is None or entry.partial or self.negatives == "none":
            return ()
        return entry.tags

    # ---- summaries -----------------------------------------------------------------------
    @cached_property
    def known_tags(self) -> frozenset[str]:
        """Tags whose absence is a known negative for every image (exhaustive only)."""
        if self.negatives != "exhaustive":
            return frozenset()
        return frozenset(t for e in self.entries if not e.partial for t in e.tags)

    @cached_property
    def targeted_tags(self) -> frozenset[str]:
        """Every tag some entry maps to (partial or not)."""
        return frozenset(t for e in self.entries for t in e.tags)

    @cached_property
    def negatable_tags(self) -> frozenset[str]:
        """Tags this source can ever report as negative (exhaustive or verified)."""
        if self.negatives == "none":
            return frozenset()
        return frozenset(t for e in self.entries if not e.partial for t in e.tags)

    @property
    def unmapped_labels(self) -> tuple[str, ...]:
        """Labels deliberately mapped to no tag (`tags: []`)."""
        return tuple(e.label for e in self.entries if not e.tags)

    def to_frame(self) -> pd.DataFrame:
        """One row per (label key, tag): columns `label` (normalized), `tag`, `partial`.

        Every key of an entry (id, name, aliases) appears; unmapped entries give no rows.
        """
        rows = [
            (key, tag, entry.partial)
            for entry in self.entries
            for key in entry.label_keys()
            for tag in entry.tags
        ]
        frame = pd.DataFrame(rows, columns=["label", "tag", "partial"])
        return frame.astype({"label": str, "tag": str, "partial": bool})

    def __repr__(self) -> str:
        return (
            f"SourceMapping({self.vocabulary!r}, negatives={self.negatives!r}, "
            f"entries={len(self.entries)}, tags={len(self.targeted_tags)})"
        )

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, data: object, taxonomy: Taxonomy, source: str | Path | None = None
    ) -> SourceMapping:
        """Validate plain data (the parsed YAML) against the file format and `taxonomy`."""
        if not isinstance(data, dict):
            raise LabelSystemError(
                source, "<root>", "expected a mapping with vocabulary, negatives, entries"
            )
        try:
            spec = MappingFile.model_validate(data)
        except ValidationError as e:
            raise format_pydantic_error(source, e) from None
        for i, entry in enumerate(spec.entries):
            _check_tags(entry, i, taxonomy, source)
        return cls(
            spec.vocabulary,
            spec.negatives,
            spec.entries,
            description=spec.description,
            source=source,
        )


def _where(index: int, entry: MappingEntry) -> str:
    return f"entries[{index}] ({entry.label!r})"


def _check_tags(
    entry: MappingEntry, index: int, taxonomy: Taxonomy, source: str | Path | None
) -> None:
    seen: set[str] = set()
    for j, tag in enumerate(entry.tags):
        where = f"{_where(index, entry)}.tags[{j}]"
        if tag in seen:
            raise LabelSystemError(source, where, f"tag {tag!r} is listed twice")
        seen.add(tag)
        if tag not in taxonomy:
            raise LabelSystemError(source, where, unknown_tag_message(tag, taxonomy))


def unknown_tag_message(tag: str, taxonomy: Taxonomy) -> str:
    """'unknown tag ...' with the tag id it resolves to or the closest ids."""
    resolved = taxonomy.resolve(tag)
    if resolved is not None:
        hint = f"use the tag id {resolved!r} ({tag!r} is its name or alias)"
    else:
        close = difflib.get_close_matches(tag, taxonomy.tag_ids, n=3, cutoff=0.6)
        hint = f"close matches: {close}" if close else "no close match"
    return f"unknown tag {tag!r} in taxonomy {taxonomy.name!r}; {hint}"


# ---- loading ------------------------------------------------------------------------------
def load_mapping(path: str | Path, taxonomy: Taxonomy) -> SourceMapping:
    """Read and validate one mapping YAML file against `taxonomy`.

    >>> from label_system.taxonomy import load_default_taxonomy
    >>> tax = load_default_taxonomy()
    >>> voc = load_mapping(default_data_path("mappings/voc.yaml"), tax)
    >>> voc.tags_for("pottedplant"), voc.negatives
    (('houseplant',), 'exhaustive')
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelSystemError(path, "<file>", "mapping file not found") from None
    except yaml.YAMLError as e:
        raise LabelSystemError(path, "<yaml>", f"not valid YAML: {e}") from None
    return SourceMapping.from_dict(data, taxonomy, source=path)


def load_default_mapping(vocabulary: str, taxonomy: Taxonomy) -> SourceMapping:
    """The shipped mapping `label_system/data/mappings/<vocabulary>.yaml`.

    >>> from label_system.taxonomy import load_default_taxonomy
    >>> load_default_mapping("coco", load_default_taxonomy()).tags_for("hair drier")
    ('hair_dryer',)
    """
    path = default_data_path(f"{MAPPINGS_DIR}/{vocabulary}.yaml")
    if not path.exists():
        raise LabelSystemError(
            path,
            "<file>",
            f"no shipped mapping for vocabulary {vocabulary!r}; "
            f"allowed: {', '.join(DEFAULT_VOCABULARIES)}",
        )
    mapping = load_mapping(path, taxonomy)
    if mapping.vocabulary != vocabulary:
        raise LabelSystemError(
            path, "vocabulary", f"file declares {mapping.vocabulary!r}, expected {vocabulary!r}"
        )
    return mapping


def load_default_mappings(taxonomy: Taxonomy) -> dict[str, SourceMapping]:
    """All shipped mappings, by vocabulary."""
    return {v: load_default_mapping(v, taxonomy) for v in DEFAULT_VOCABULARIES}


def identity_mapping(
    taxonomy: Taxonomy, negatives: Negatives = "none", vocabulary: str = "tags"
) -> SourceMapping:
    """Labels that are tag ids, display names (any language) or aliases -> that tag.

    For internal annotations that already use the company's tags (vocabulary "tags"), or a
    tagging API whose label names mostly match ours (`vocabulary="competitor_api"`). With
    `negatives="exhaustive"` every tag is known for every image of the source.

    >>> from label_system.taxonomy import load_default_taxonomy
    >>> m = identity_mapping(load_default_taxonomy())
    >>> m.tags_for("dog"), m.tags_for("Puppy"), m.tags_for("Hund")
    (('dog',), ('dog',), ('dog',))
    """
    # Ids win over names: a foreign-language name may equal another tag's id.
    used: set[str] = {normalize_label(t) for t in taxonomy.tag_ids}
    entries = []
    for tag in taxonomy.tags.values():
        keys = (normalize_label(k) for k in (*tag.names.values(), *tag.aliases))
        fresh = [k for k in dict.fromkeys(keys) if k not in used]
        used.update(fresh)
        entries.append(MappingEntry(id=tag.id, aliases=tuple(fresh), tags=(tag.id,)))
    return SourceMapping(
        vocabulary, negatives, entries, description=f"identity over taxonomy {taxonomy.name!r}"
    )


# ---- coverage -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CoverageReport:
    """What the mappings can and cannot teach.

    unmapped: vocabulary -> labels deliberately mapped to nothing.
    unknown_observed: vocabulary -> labels seen in data that have no entry at all.
    missing_vocabularies: vocabularies seen in data without a mapping.
    untaught_tags: tags no source maps to, directly or through a descendant.
    implied_only_tags: tags taught only through descendants (positives via the taxonomy).
    positive_only_tags: taught tags that no source can ever mark negative.
    teachers: tag -> vocabularies mapping to it directly.
    """

    unmapped: dict[str, tuple[str, ...]]
    unknown_observed: dict[str, tuple[str, ...]]
    missing_vocabularies: tuple[str, ...]
    untaught_tags: tuple[str, ...]
    implied_only_tags: tuple[str, ...]
    positive_only_tags: tuple[str, ...]
    teachers: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_text(self, max_labels: int = 30) -> str:
        """A readable multi-line summary (long lists cut at `max_labels`)."""

        def cut(items: Sequence[str]) -> str:
            shown = ", ".join(items[:max_labels])
            more = len(items) - max_labels
            return shown + (f", ... (+{more} more)" if more > 0 else "")

        lines = ["Coverage report", ""]
        lines.append("Source labels deliberately mapped to no tag:")
        for vocab, labels in self.unmapped.items():
            lines.append(f"  {vocab} ({len(labels)}): {cut(labels) if labels else '-'}")
        if self.unknown_observed or self.missing_vocabularies:
            lines.append("Source labels seen in data but absent from the mapping:")
            for vocab, labels in self.unknown_observed.items():
                lines.append(f"  {vocab} ({len(labels)}): {cut(labels) if labels else '-'}")
            for vocab in self.missing_vocabularies:
                lines.append(f"  {vocab}: no mapping for this vocabulary")
        lines.append("")
        lines.append(
            f"Tags no source can teach ({len(self.untaught_tags)}): "
            f"{cut(self.untaught_tags) or '-'}"
        )
        lines.append(
            f"Tags taught only through descendants ({len(self.implied_only_tags)}): "
            f"{cut(self.implied_only_tags) or '-'}"
        )
        lines.append(
            f"Tags no source can mark negative ({len(self.positive_only_tags)}): "
            f"{cut(self.positive_only_tags) or '-'}"
        )
        return "\n".join(lines)

    def to_frame(self, taxonomy: Taxonomy) -> pd.DataFrame:
        """One row per tag: `tag`, `category`, `teachers` (comma-separated), `status`."""
        status = {t: "taught" for t in taxonomy.tag_ids}
        status.update({t: "positive_only" for t in self.positive_only_tags})
        status.update({t: "implied_only" for t in self.implied_only_tags})
        status.update({t: "untaught" for t in self.untaught_tags})
        return pd.DataFrame(
            {
                "tag": list(taxonomy.tag_ids),
                "category": [taxonomy.category_of(t) for t in taxonomy.tag_ids],
                "teachers": [",".join(self.teachers.get(t, ())) for t in taxonomy.tag_ids],
                "status": [status[t] for t in taxonomy.tag_ids],
            }
        )


def coverage_report(
    taxonomy: Taxonomy,
    mappings: Iterable[SourceMapping] | Mapping[str, SourceMapping],
    observed_labels: Mapping[str, Iterable[str]] | None = None,
) -> CoverageReport:
    """Report labels that teach nothing and tags that no source can teach.

    observed_labels: vocabulary -> source labels seen in data (e.g. from a SourceTable); each
    one without an entry in that vocabulary's mapping is listed under `unknown_observed`.

    >>> from label_system.taxonomy import load_default_taxonomy
    >>> tax = load_default_taxonomy()
    >>> rep = coverage_report(tax, [load_default_mapping("voc", tax)], {"voc": ["cat", "lion"]})
    >>> rep.unknown_observed["voc"], "sky" in rep.untaught_tags
    (('lion',), True)
    """
    maps = list(mappings.values()) if isinstance(mappings, Mapping) else list(mappings)
    by_vocab = {m.vocabulary: m for m in maps}
    teachers: dict[str, list[str]] = {}
    negatable: set[str] = set()
    for m in maps:
        for tag in sorted(m.targeted_tags):
            teachers.setdefault(tag, []).append(m.vocabulary)
        negatable |= m.negatable_tags
    direct = set(teachers)
    implied = {a for t in direct if t in taxonomy for a in taxonomy.ancestors(t)}
    untaught = tuple(t for t in taxonomy.tag_ids if t not in direct and t not in implied)
    implied_only = tuple(t for t in taxonomy.tag_ids if t not in direct and t in implied)
    positive_only = tuple(t for t in taxonomy.tag_ids if t in direct and t not in negatable)

    unknown: dict[str, tuple[str, ...]] = {}
    missing: list[str] = []
    for vocab, labels in (observed_labels or {}).items():
        mapping = by_vocab.get(vocab)
        if mapping is None:
            missing.append(vocab)
            continue
        absent = {str(label) for label in labels if str(label) not in mapping}
        unknown[vocab] = tuple(sorted(absent))
    return CoverageReport(
        unmapped={m.vocabulary: m.unmapped_labels for m in maps},
        unknown_observed=unknown,
        missing_vocabularies=tuple(sorted(missing)),
        untaught_tags=untaught,
        implied_only_tags=implied_only,
        positive_only_tags=positive_only,
        teachers={t: tuple(v) for t, v in teachers.items()},
    )
