"""The assemble flow: each task through `task.fn`, then the flow end to end (Prefect harness)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import assemble as flow_module
from tagger.data.demo import DemoConfig, DemoData, write_demo_data
from tagger.data.manifest import read_manifest

SMALL = DemoConfig(
    seed=1,
    size=64,
    coco=10,
    voc=6,
    openimages=6,
    keywords=12,
    internal=5,
    duplicates=2,
    truncated=1,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return write_demo_data(tmp_path_factory.mktemp("demo"), SMALL)


@pytest.mark.filterwarnings("ignore:Artifact creation outside:FutureWarning")
def test_tasks_one_by_one(demo: DemoData, tmp_path: Path):
    cfg = flow_module.load_config.fn(str(demo.config), output_dir=str(tmp_path / "out"))
    assert cfg.output_path == tmp_path / "out"
    taxonomy = flow_module.load_taxonomy.fn(cfg)
    tables = [flow_module.read_one_source.fn(s, str(cfg.data_path)) for s in cfg.sources]
    assert [t.name for t in tables] == [s.name for s in cfg.sources]
    overrides = flow_module.load_mappings.fn(cfg, tables, taxonomy)
    assert set(overrides["demo_keywords"].mappings) == {"keywords"}
    result = flow_module.merge_sources.fn(cfg, tables, taxonomy, overrides)
    listed = sum(len(t.images) for t in tables)
    assert result.manifest.num_rows == listed - 1 - 3  # 1 truncated, 2 + 1 duplicates merged
    assert result.stats["duplicates_merged"] == 3
    manifest, cache_problems = flow_module.build_image_cache.fn(cfg, result.manifest)
    assert cache_problems == [] and manifest.num_rows == result.manifest.num_rows
    assert (cfg.cache_dir / "s128").is_dir()
    folded = flow_module.assign_folds.fn(cfg, manifest, taxonomy)
    assert folded.column("fold").null_count == 0
    outputs = flow_module.write_all.fn(cfg, folded, result, cache_problems, taxonomy)
    assert outputs.manifest.exists() and outputs.report["plot"].exists()
    assert "truncated" in outputs.problems.read_text()


def test_flow_end_to_end(demo: DemoData, tmp_path: Path):
    out = flow_module.assemble(str(demo.config), output_dir=str(tmp_path / "flow_out"))
    manifest = read_manifest(out["manifest"])
    assert len(manifest) == out["images"] > 0
    assert manifest["fold"].notna().all() and manifest["image_id"].is_unique
    assert Path(out["report"]).read_text().startswith("# Dataset report")
