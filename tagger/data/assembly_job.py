"""The assembly job: its YAML config, and the steps read sources -> assemble -> cache -> folds.

`tagger assemble CONFIG.yaml` runs `run_assembly`; the Prefect flow `flows/assemble.py` calls the
same step functions as tasks. Relative paths in a config resolve against the config's folder.

Example (see `flows/configs/*.yaml`)::

    output_dir: /tmp/assembled
    sources:
      - name: voc2012
        format: voc
        paths: {annotations_dir: data/voc2012/Annotations, images_dir: data/voc2012/JPEGImages}
        options: {difficult: ignore}
"""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from label_system.mapping import (
    DEFAULT_VOCABULARIES,
    SourceMapping,
    identity_mapping,
    load_default_mapping,
    load_mapping,
)
from label_system.taxonomy import Taxonomy, load_default_taxonomy, load_taxonomy
from tagger.data.assembly import AssemblyResult, SourceOverride, assemble, with_folds
from tagger.data.cache import CacheConfig, build_cache
from tagger.data.folds import DEFAULT_FOLDS, assign_folds, stratification_matrix
from tagger.data.manifest import write_manifest
from tagger.data.readers import READERS
from tagger.data.report import build_report, write_report
from tagger.data.sources import Problem, SourceTable

IDENTITY_VOCABULARY = "tags"  # the internal CSV's vocabulary: tag ids, names, aliases


class AssemblyConfigError(ValueError):
    """A bad assembly config: names the file, the field, the value and what is allowed."""


class SourceConfig(BaseModel):
    """One source: which reader reads it, with which paths and options."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    format: str = Field(description=f"reader name, one of {sorted(READERS)}")
    paths: dict[str, str | list[str]] = Field(
        default_factory=dict, description="reader path arguments (relative to the config)"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="other reader arguments")
    mappings: dict[str, str] = Field(
        default_factory=dict, description="vocabulary -> mapping YAML replacing the shipped one"
    )
    negatives: Literal["exhaustive", "verified", "none"] | None = None
    known_tags: list[str] | None = None
    enabled: bool = True

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in READERS:
            raise ValueError(f"format {v!r} is not allowed; allowed: {', '.join(sorted(READERS))}")
        return v

    @model_validator(mode="after")
    def _arguments_fit_reader(self) -> SourceConfig:
        params = inspect.signature(READERS[self.format]).parameters
        given = [*self.paths, *self.options]
        allowed = [p for p in params if p != "name"]
        bad = [a for a in given if a not in allowed]
        if bad:
            raise ValueError(
                f"reader {self.format!r} takes no argument(s) {bad}; allowed: {allowed}"
            )
        twice = sorted(set(self.paths) & set(self.options))
        if twice:
            raise ValueError(f"argument(s) {twice} given in both paths and options")
        required = [
            p.name
            for p in params.values()
            if p.default is inspect.Parameter.empty and p.name != "name"
        ]
        missing = [p for p in required if p not in given]
        if missing:
            raise ValueError(f"reader {self.format!r} needs argument(s) {missing} (in paths)")
        return self

    def reader_arguments(self, base: Path) -> dict[str, Any]:
        """Keyword arguments for the reader: paths resolved against `base`, then options."""

        def resolve(p: str) -> str:
            path = Path(p).expanduser()
            return str(path if path.is_absolute() else base / path)

        args: dict[str, Any] = {
            k: [resolve(p) for p in v] if isinstance(v, list) else resolve(v)
            for k, v in self.paths.items()
        }
        return {**args, **self.options, "name": self.name}


class AssemblyCacheConfig(CacheConfig):
    """The resized image cache; `dir` default: `<output_dir>/cache`."""

    enabled: bool = True
    dir: str | None = None


class FoldsConfig(BaseModel):
    """Multi-label stratified K-fold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=DEFAULT_FOLDS, ge=2)
    seed: int = 0
    by_source: bool = Field(default=True, description="also balance each source across folds")


class AssemblyConfig(BaseModel):
    """Everything `tagger assemble` needs."""

    model_config = ConfigDict(extra="forbid")

    taxonomy: str | None = Field(default=None, description="taxonomy YAML; None = shipped")
    data_root: str | None = Field(default=None, description="source paths resolve here")
    output_dir: str = "assembled"
    sources: list[SourceConfig] = Field(min_length=1)
    hashing: bool = Field(default=True, description="hash + probe files (dedup, problems)")
    verify: Literal["header", "decode"] = "decode"
    workers: int = Field(default=2, ge=1, description="threads hashing and probing images")
    human_vocabularies: list[str] = Field(default_factory=lambda: [IDENTITY_VOCABULARY])
    cache: AssemblyCacheConfig = Field(default_factory=AssemblyCacheConfig)
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    min_count: int = Field(default=10, ge=1, description="report tags with fewer positives")
    base_dir: str = Field(default=".", description="set by load_assembly_config")

    @model_validator(mode="after")
    def _unique_names(self) -> AssemblyConfig:
        names = [s.name for s in self.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"source names must be unique; repeated: {twice}")
        return self

    def resolve(self, path: str) -> Path:
        """A config path made absolute against `base_dir`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def data_path(self) -> Path:
        """Where source paths resolve: `data_root` if set, else the config's folder."""
        return self.resolve(self.data_root) if self.data_root else Path(self.base_dir)

    @property
    def output_path(self) -> Path:
        return self.resolve(self.output_dir)

    @property
    def cache_dir(self) -> Path:
        return self.resolve(self.cache.dir) if self.cache.dir else self.output_path / "cache"


def parse_assembly_config(data: object, file: str | Path = "<memory>") -> AssemblyConfig:
    """Validate plain data; AssemblyConfigError names the file, field, value and what is allowed."""
    if not isinstance(data, dict):
        raise AssemblyConfigError(f"{file}: expected a mapping with `sources`, got {data!r}")
    try:
        return AssemblyConfig.model_validate(data)
    except ValidationError as error:
        lines = []
        for e in error.errors():
            loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"])
            given = e.get("input")
            shown = "" if isinstance(given, dict) else f" (given: {given!r})"
            lines.append(f"{file}: {loc.replace('.[', '[') or '<root>'}: {e['msg']}{shown}")
        raise AssemblyConfigError("\n".join(lines)) from None


def load_assembly_config(path: str | Path, **overrides: Any) -> AssemblyConfig:
    """Read a YAML config; `overrides` (not None) replace top-level fields (e.g. output_dir)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssemblyConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise AssemblyConfigError(f"{path}: not valid YAML: {error}") from None
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        data.setdefault("base_dir", str(path.resolve().parent))
    return parse_assembly_config(data, path)


# ---- steps ----------------------------------------------------------------------------------


def load_config_taxonomy(config: AssemblyConfig) -> Taxonomy:
    """The config's taxonomy (the shipped one when none is named)."""
    if config.taxonomy is None:
        return load_default_taxonomy()
    return load_taxonomy(config.resolve(config.taxonomy))


def read_source(source: SourceConfig, base_dir: str | Path) -> SourceTable:
    """Run the source's reader with its resolved paths and options."""
    return READERS[source.format](**source.reader_arguments(Path(base_dir)))


def source_vocabularies(table: SourceTable) -> list[str]:
    """Vocabularies the labels and boxes of a source table use (sorted)."""
    found = set(table.labels["vocabulary"].astype(str).unique())
    found |= set(table.boxes["vocabulary"].astype(str).unique())
    return sorted(found)


def load_source_overrides(
    config: AssemblyConfig, tables: Sequence[SourceTable], taxonomy: Taxonomy
) -> dict[str, SourceOverride]:
    """Per source: the mapping of every vocabulary it uses, and its negatives overrides.

    Order: the source's `mappings` entry, then "tags" = identity over the taxonomy, then the
    shipped mapping of that vocabulary; otherwise an error naming the source and vocabulary.
    """
    shipped: dict[str, SourceMapping] = {}
    out: dict[str, SourceOverride] = {}
    by_name = {s.name: (i, s) for i, s in enumerate(config.sources)}
    for table in tables:
        i, cfg = by_name[table.name]
        mappings: dict[str, SourceMapping] = {}
        for vocabulary in source_vocabularies(table):
            if vocabulary in cfg.mappings:
                mappings[vocabulary] = load_mapping(
                    config.resolve(cfg.mappings[vocabulary]), taxonomy
                )
            elif vocabulary == IDENTITY_VOCABULARY:
                mappings[vocabulary] = identity_mapping(taxonomy)
            elif vocabulary in DEFAULT_VOCABULARIES:
                if vocabulary not in shipped:
                    shipped[vocabulary] = load_default_mapping(vocabulary, taxonomy)
                mappings[vocabulary] = shipped[vocabulary]
            else:
                raise AssemblyConfigError(
                    f"sources[{i}] ({cfg.name}): vocabulary {vocabulary!r} has no shipped "
                    f"mapping; give one in sources[{i}].mappings.{vocabulary} (shipped: "
                    f"{', '.join([*DEFAULT_VOCABULARIES, IDENTITY_VOCABULARY])})"
                )
        known = frozenset(cfg.known_tags) if cfg.known_tags is not None else None
        out[cfg.name] = SourceOverride(mappings, cfg.negatives, known)
    return out


def assemble_sources(
    config: AssemblyConfig,
    tables: Sequence[SourceTable],
    taxonomy: Taxonomy,
    overrides: Mapping[str, SourceOverride],
) -> AssemblyResult:
    """`assemble` with the config's settings."""
    return assemble(
        tables,
        taxonomy,
        {},
        hashing=config.hashing,
        verify=config.verify,
        workers=config.workers,
        human_vocabularies=config.human_vocabularies,
        overrides=overrides,
    )


def cache_images(config: AssemblyConfig, manifest: pa.Table) -> tuple[pa.Table, list[Problem]]:
    """Build the resized cache; images that fail to decode are reported and dropped."""
    if not config.cache.enabled or not config.hashing or manifest.num_rows == 0:
        return manifest, []
    settings = config.cache.model_dump(exclude={"enabled", "dir"})
    result = build_cache(
        manifest.column("path").to_pylist(),
        manifest.column("content_hash").to_pylist(),
        config.cache_dir,
        **settings,
    )
    if not result.problems:
        return manifest, []
    failed = pa.array(sorted({p.file for p in result.problems}), pa.string())
    return manifest.filter(pc.invert(pc.is_in(manifest.column("path"), failed))), result.problems


def fold_manifest(config: AssemblyConfig, manifest: pa.Table, taxonomy: Taxonomy) -> pa.Table:
    """The manifest with multi-label stratified folds (each unique image in one fold)."""
    if manifest.num_rows < config.folds.k:
        folds = np.arange(manifest.num_rows, dtype=np.int16) % config.folds.k
        return with_folds(manifest, folds)
    matrix = stratification_matrix(manifest, taxonomy, by_source=config.folds.by_source)
    return with_folds(manifest, assign_folds(matrix, config.folds.k, config.folds.seed))


def write_problems(problems: Sequence[Problem], path: str | Path) -> Path:
    """Problems as CSV: file, row, image_key, reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "row", "image_key", "reason"])
        for p in problems:
            writer.writerow([p.file, "" if p.row is None else p.row, p.image_key or "", p.reason])
    return path


def write_stats(stats: Mapping[str, Any], path: str | Path) -> Path:
    """Assembly counts as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, sort_keys=False, default=int), encoding="utf-8")
    return path


@dataclass
class AssemblyOutputs:
    """Where `run_assembly` wrote things, and the counts."""

    manifest: Path
    problems: Path
    stats: Path
    report: dict[str, Path]
    images: int
    summary: str


def read_sources(config: AssemblyConfig) -> list[SourceTable]:
    """Read every enabled source of the config."""
    return [read_source(s, config.data_path) for s in config.sources if s.enabled]


def write_outputs(
    config: AssemblyConfig,
    manifest: pa.Table,
    result: AssemblyResult,
    cache_problems: Sequence[Problem],
    taxonomy: Taxonomy,
) -> AssemblyOutputs:
    """Write manifest.parquet, problems.csv, assembly_stats.json and report/ to output_dir.

    `manifest` is the final one (cached, folded); `result` the assembly it came from.
    """
    out = config.output_path
    problems = [*result.problems, *cache_problems]
    stats = {**result.stats, "images": manifest.num_rows, "cache_problems": len(cache_problems)}
    report = build_report(
        manifest, taxonomy, min_count=config.min_count, stats=stats, problems=problems
    )
    return AssemblyOutputs(
        manifest=write_manifest(manifest, out / "manifest.parquet"),
        problems=write_problems(problems, out / "problems.csv"),
        stats=write_stats(stats, out / "assembly_stats.json"),
        report=write_report(report, out / "report"),
        images=manifest.num_rows,
        summary=report.to_text(),
    )


def run_assembly(config: AssemblyConfig) -> AssemblyOutputs:
    """The whole job without Prefect: read -> assemble -> cache -> folds -> write."""
    taxonomy = load_config_taxonomy(config)
    tables = read_sources(config)
    overrides = load_source_overrides(config, tables, taxonomy)
    result = assemble_sources(config, tables, taxonomy, overrides)
    manifest, cache_problems = cache_images(config, result.manifest)
    manifest = fold_manifest(config, manifest, taxonomy)
    return write_outputs(config, manifest, result, cache_problems, taxonomy)
