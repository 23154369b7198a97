"""Prefect flow `assemble`: sources -> manifest (dedup, known mask, cache, folds) + report.

    python -m flows.assemble flows/configs/shared_data.yaml --output-dir /tmp/assembled

The same steps as `tagger assemble` (`tagger.data.assembly_job.run_assembly`), one task each, so a
run shows which source or stage failed and how long each took. No retries: every step reads
local files, nothing fails transiently.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.entry_point import existing_file
from label_system.taxonomy import Taxonomy
from tagger.data.assembly import AssemblyResult, SourceOverride
from tagger.data.assembly_job import (
    AssemblyConfig,
    AssemblyOutputs,
    SourceConfig,
    assemble_sources,
    cache_images,
    fold_manifest,
    load_assembly_config,
    load_config_taxonomy,
    load_source_overrides,
    read_source,
    write_outputs,
)
from tagger.data.sources import Problem, SourceTable


@task(name="load-config", cache_policy=NO_CACHE)
def load_config(
    config_path: str, output_dir: str | None = None, data_root: str | None = None
) -> AssemblyConfig:
    return load_assembly_config(config_path, output_dir=output_dir, data_root=data_root)


@task(name="load-taxonomy", cache_policy=NO_CACHE)
def load_taxonomy(config: AssemblyConfig) -> Taxonomy:
    return load_config_taxonomy(config)


@task(name="read-source", cache_policy=NO_CACHE, task_run_name="read-{source.name}")
def read_one_source(source: SourceConfig, data_root: str) -> SourceTable:
    return read_source(source, data_root)


@task(name="load-mappings", cache_policy=NO_CACHE)
def load_mappings(
    config: AssemblyConfig, tables: list[SourceTable], taxonomy: Taxonomy
) -> dict[str, SourceOverride]:
    return load_source_overrides(config, tables, taxonomy)


@task(name="assemble", cache_policy=NO_CACHE)
def merge_sources(
    config: AssemblyConfig,
    tables: list[SourceTable],
    taxonomy: Taxonomy,
    overrides: dict[str, SourceOverride],
) -> AssemblyResult:
    return assemble_sources(config, tables, taxonomy, overrides)


@task(name="build-cache", cache_policy=NO_CACHE)
def build_image_cache(config: AssemblyConfig, manifest: pa.Table) -> tuple[pa.Table, list[Problem]]:
    return cache_images(config, manifest)


@task(name="assign-folds", cache_policy=NO_CACHE)
def assign_folds(config: AssemblyConfig, manifest: pa.Table, taxonomy: Taxonomy) -> pa.Table:
    return fold_manifest(config, manifest, taxonomy)


@task(name="write-outputs", cache_policy=NO_CACHE)
def write_all(
    config: AssemblyConfig,
    manifest: pa.Table,
    result: AssemblyResult,
    cache_problems: list[Problem],
    taxonomy: Taxonomy,
) -> AssemblyOutputs:
    outputs = write_outputs(config, manifest, result, cache_problems, taxonomy)
    create_markdown_artifact(
        markdown=outputs.report["markdown"].read_text(encoding="utf-8"),
        key="dataset-report",
        description=f"assembled manifest: {outputs.manifest}",
    )
    return outputs


@flow(name="assemble")
def assemble(
    config: str, output_dir: str | None = None, data_root: str | None = None
) -> dict[str, Any]:
    """Assemble the sources of an assembly config YAML; returns where the outputs are."""
    cfg = load_config(config, output_dir, data_root)
    taxonomy = load_taxonomy(cfg)
    tables = [read_one_source(s, str(cfg.data_path)) for s in cfg.sources if s.enabled]
    overrides = load_mappings(cfg, tables, taxonomy)
    result = merge_sources(cfg, tables, taxonomy, overrides)
    manifest, cache_problems = build_image_cache(cfg, result.manifest)
    manifest = assign_folds(cfg, manifest, taxonomy)
    outputs = write_all(cfg, manifest, result, cache_problems, taxonomy)
    return {
        "manifest": str(outputs.manifest),
        "report": str(outputs.report["markdown"]),
        "problems": str(outputs.problems),
        "images": outputs.images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=existing_file)
    parser.add_argument("--output-dir")
    parser.add_argument("--data-root")
    args = parser.parse_args()
    absolute = [str(Path(p).resolve()) if p else None for p in (args.output_dir, args.data_root)]
    print(assemble(args.config, *absolute))


if __name__ == "__main__":
    from flows.entry_point import run_entry_point

    run_entry_point("python -m flows.assemble", main)
