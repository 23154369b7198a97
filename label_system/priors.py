"""Prior relationships between tags (implies, excludes): file format, loading and checking.

File format (YAML)::

    implies:                                  # "if the first tag is present, so is the second"
      - {if: forest, then: tree}
      - {if: skiing, then: [snow], note: why}   # `then` may list several tags
    excludes:                                 # "these tags do not occur together" (pairwise)
      - {tags: [indoor, outdoor]}
      - {tags: [bathroom, bedroom, kitchen]}   # a group: every pair excludes each other

Taxonomy parent edges are implications too (dog -> mammal); rules need not repeat them, and
an exclusion reaches descendants through them (indoor excludes outdoor, beach -> outdoor, so
beach and indoor exclude each other). `check_priors` rejects rule sets that cannot hold:

- a cycle of implications (taxonomy parent edges included): a -> b -> a;
- a contradiction: some tag would imply two tags that exclude each other, directly or through
  chains (a -> b while a excludes b; a -> b, a -> c, b excludes c; a tag excluding its own
  ancestor).

Applying the rules to scores is `tagger.priors.apply`; mining new ones, `tagger.priors.mining`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from label_system.errors import LabelSystemError, format_pydantic_error
from label_system.mapping import unknown_tag_message
from label_system.taxonomy import Taxonomy, default_data_path

DEFAULT_PRIORS = "priors.yaml"


class ImpliesRule(BaseModel):
    """`if` tag present -> every `then` tag present."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    if_: str = Field(alias="if")
    then: tuple[str, ...]
    note: str = ""

    @field_validator("then", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v


class ExcludesRule(BaseModel):
    """The listed tags exclude each other pairwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags: tuple[str, ...] = Field(min_length=2)
    note: str = ""


class PriorsFile(BaseModel):
    """The YAML layout of a priors file."""

    model_config = ConfigDict(extra="forbid")

    implies: list[ImpliesRule] = []
    excludes: list[ExcludesRule] = []


@dataclass(frozen=True)
class PriorRules:
    """Validated prior rules as tag-id pairs.

    implies: (a, b) = a implies b. excludes: (a, b) = a and b never both (symmetric).
    origins: ("implies" | "excludes", a, b) -> where the pair was written ("implies[3]").

    >>> r = PriorRules(implies=[("forest", "tree")], excludes=[("indoor", "outdoor")])
    >>> r.implied_by("forest"), r.excluded_with("outdoor")
    (('tree',), ('indoor',))
    """

    implies: list[tuple[str, str]]
    excludes: list[tuple[str, str]]
    origins: dict[tuple[str, str, str], str] = field(default_factory=dict)
    source: str | None = None

    def origin(self, kind: str, a: str, b: str) -> str:
        """Where the rule (kind, a, b) was written, e.g. 'implies[3] (forest -> tree)'."""
        where = self.origins.get((kind, a, b))
        if where is None and kind == "excludes":
            where = self.origins.get((kind, b, a))
        arrow = "->" if kind == "implies" else "excludes"
        return f"{where or kind} ({a} {arrow} {b})"

    def implied_by(self, tag: str) -> tuple[str, ...]:
        """Tags a rule says `tag` implies directly (taxonomy parents not included)."""
        return tuple(b for a, b in self.implies if a == tag)

    def excluded_with(self, tag: str) -> tuple[str, ...]:
        """Tags a rule says cannot occur with `tag` (descendants not expanded)."""
        return tuple(b if a == tag else a for a, b in self.excludes if tag in (a, b))

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(t for pair in (*self.implies, *self.excludes) for t in pair)

    def to_dict(self) -> dict[str, object]:
        """Plain data in the file format (one pair per rule), e.g. for a model bundle."""
        return {
            "implies": [{"if": a, "then": [b]} for a, b in self.implies],
            "excludes": [{"tags": [a, b]} for a, b in self.excludes],
        }

    @classmethod
    def from_dict(
        cls, data: object, taxonomy: Taxonomy, source: str | Path | None = None
    ) -> PriorRules:
        """Validate plain data (parsed YAML) against the format and `taxonomy`, then check it."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise LabelSystemError(source, "<root>", "expected a mapping with implies, excludes")
        try:
            spec = PriorsFile.model_validate(data)
        except ValidationError as e:
            raise format_pydantic_error(source, e) from None
        implies: list[tuple[str, str]] = []
        excludes: list[tuple[str, str]] = []
        origins: dict[tuple[str, str, str], str] = {}
        for i, imp in enumerate(spec.implies):
            _check_tag(imp.if_, f"implies[{i}].if", taxonomy, source)
            for j, then in enumerate(imp.then):
                _check_tag(then, f"implies[{i}].then[{j}]", taxonomy, source)
                if then == imp.if_:
                    raise LabelSystemError(
                        source, f"implies[{i}].then[{j}]", f"{then!r} cannot imply itself"
                    )
                if ("implies", imp.if_, then) not in origins:
                    implies.append((imp.if_, then))
                    origins[("implies", imp.if_, then)] = f"implies[{i}]"
        for i, exc in enumerate(spec.excludes):
            for j, tag in enumerate(exc.tags):
                _check_tag(tag, f"excludes[{i}].tags[{j}]", taxonomy, source)
            if len(set(exc.tags)) != len(exc.tags):
                raise LabelSystemError(
                    source, f"excludes[{i}].tags", f"a tag is listed twice in {list(exc.tags)}"
                )
            for a, b in combinations(exc.tags, 2):
                if ("excludes", a, b) not in origins and ("excludes", b, a) not in origins:
                    excludes.append((a, b))
                    origins[("excludes", a, b)] = f"excludes[{i}]"
        rules = cls(implies, excludes, origins, str(source) if source is not None else None)
        check_priors(rules, taxonomy)
        return rules


def _check_tag(tag: str, where: str, taxonomy: Taxonomy, source: str | Path | None) -> None:
    if tag not in taxonomy:
        raise LabelSystemError(source, where, unknown_tag_message(tag, taxonomy))


# ---- checking -----------------------------------------------------------------------------
Edge = tuple[str, str, str]  # (from, to, origin)


def _implication_edges(rules: PriorRules, taxonomy: Taxonomy) -> dict[str, list[Edge]]:
    """Outgoing implication edges per tag: taxonomy parents first, then rules."""
    out: dict[str, list[Edge]] = {t: [] for t in taxonomy.tag_ids}
    for t in taxonomy.tag_ids:
        out[t].extend((t, p, f"taxonomy parent ({t} -> {p})") for p in taxonomy.parents(t))
    for a, b in rules.implies:
        out.setdefault(a, []).append((a, b, rules.origin("implies", a, b)))
    return out


def _chains_from(start: str, edges: dict[str, list[Edge]]) -> dict[str, list[Edge]]:
    """Breadth-first: every tag reachable from `start` -> the shortest edge chain to it."""
    chains: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for tag in frontier:
            for edge in edges.get(tag, []):
                if edge[1] not in chains:
                    chains[edge[1]] = [*chains[tag], edge]
                    nxt.append(edge[1])
        frontier = nxt
    return chains


def _describe(chain: list[Edge]) -> str:
    return " then ".join(origin for _, _, origin in chain) if chain else "itself"


def check_priors(rules: PriorRules, taxonomy: Taxonomy) -> list[str]:
    """Raise LabelSystemError on unknown tags, cycles or contradictions; return warnings.

    Warnings name implications that are already implied (by the taxonomy or other rules).

    >>> from label_system.taxonomy import load_default_taxonomy
    >>> tax = load_default_taxonomy()
    >>> check_priors(PriorRules([("dog", "animal")], []), tax)[0].split(":")[0]
    'implies (dog -> animal) is redundant'
    """
    for kind, pairs in (("implies", rules.implies), ("excludes", rules.excludes)):
        for a, b in pairs:
            for tag in (a, b):
                if tag not in taxonomy:
                    raise LabelSystemError(
                        rules.source, rules.origin(kind, a, b), unknown_tag_message(tag, taxonomy)
                    )
            if a == b:
                raise LabelSystemError(
                    rules.source, rules.origin(kind, a, b), "a rule needs two different tags"
                )
    edges = _implication_edges(rules, taxonomy)
    _check_cycles(rules, edges)
    _check_contradictions(rules, taxonomy, edges)
    return _redundant(rules, edges)


def _check_cycles(rules: PriorRules, edges: dict[str, list[Edge]]) -> None:
    for a, b in rules.implies:
        back = _chains_from(b, edges)
        if a in back:
            cycle = [(a, b, rules.origin("implies", a, b)), *back[a]]
            path = " -> ".join([a, *(e[1] for e in cycle)])
            raise LabelSystemError(
                rules.source,
                rules.origin("implies", a, b),
                f"implication cycle {path}: {_describe(cycle)}; implications must not loop "
                "(two tags that imply each other are one tag: use an alias)",
            )


def _check_contradictions(
    rules: PriorRules, taxonomy: Taxonomy, edges: dict[str, list[Edge]]
) -> None:
    excluded = [(a, b, rules.origin("excludes", a, b)) for a, b in rules.excludes]
    for tag in taxonomy.tag_ids:
        chains = _chains_from(tag, edges)
        for a, b, origin in excluded:
            if a in chains and b in chains:
                raise LabelSystemError(
                    rules.source,
                    origin,
                    f"contradiction: {tag!r} implies {a!r} ({_describe(chains[a])}) and "
                    f"{b!r} ({_describe(chains[b])}), but {a!r} and {b!r} exclude each other",
                )


def _redundant(rules: PriorRules, edges: dict[str, list[Edge]]) -> list[str]:
    warnings = []
    for a, b in rules.implies:
        origin = rules.origin("implies", a, b)
        others = {k: [e for e in v if e[2] != origin] for k, v in edges.items()}
        chains = _chains_from(a, others)
        if b in chains:
            warnings.append(f"{origin} is redundant: already implied via {_describe(chains[b])}")
    return warnings


# ---- loading ------------------------------------------------------------------------------
def load_priors(path: str | Path, taxonomy: Taxonomy) -> PriorRules:
    """Read, validate and check a priors YAML file against `taxonomy`.

    >>> from label_system.taxonomy import load_default_taxonomy
    >>> rules = load_priors(default_data_path(DEFAULT_PRIORS), load_default_taxonomy())
    >>> ("forest", "tree") in rules.implies
    True
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelSystemError(path, "<file>", "priors file not found") from None
    except yaml.YAMLError as e:
        raise LabelSystemError(path, "<yaml>", f"not valid YAML: {e}") from None
    return PriorRules.from_dict(data, taxonomy, source=path)


def load_default_priors(taxonomy: Taxonomy) -> PriorRules:
    """The shipped `label_system/data/priors.yaml`."""
    return load_priors(default_data_path(DEFAULT_PRIORS), taxonomy)


def implied_closure(tags: Iterable[str], rules: PriorRules, taxonomy: Taxonomy) -> set[str]:
    """`tags` plus everything they imply through taxonomy parents and rules."""
    edges = _implication_edges(rules, taxonomy)
    out: set[str] = set()
    for tag in tags:
        out.update(_chains_from(tag, edges))
    return out
