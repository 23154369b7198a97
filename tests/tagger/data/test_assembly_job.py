"""Assembly job: config validation, path resolution, mappings per source, the CLI, real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from label_system.taxonomy import load_default_taxonomy
from tagger.cli import main
from tagger.data.assembly_job import (
    AssemblyConfigError,
    load_assembly_config,
    load_source_overrides,
    parse_assembly_config,
    read_sources,
    run_assembly,
)
from tagger.data.demo import DemoConfig, write_demo_data
from tagger.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[3]
VOC = {"name": "v", "format": "voc", "paths": {"annotations_dir": "a", "images_dir": "i"}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": "cocoo"}, r"sources\[0\]\.format.*'cocoo' is not allowed; allowed: ade20k"),
        ({"options": {"difficulty": "x"}}, r"takes no argument\(s\) \['difficulty'\]; allowed"),
        ({"paths": {"images_dir": "i"}}, r"needs argument\(s\) \['annotations_dir'\]"),
        ({"negatives": "some"}, r"sources\[0\]\.negatives.*given: 'some'"),
        ({"colour": "red"}, r"sources\[0\]\.colour: Extra inputs are not permitted"),
    ],
)
def test_bad_source_config_names_field_value_and_allowed(change, expected):
    with pytest.raises(AssemblyConfigError, match=expected):
        parse_assembly_config({"sources": [{**VOC, **change}]}, "cfg.yaml")


def test_bad_top_level_config():
    with pytest.raises(AssemblyConfigError, match=r"cfg.yaml: folds\.k: .*given: 1"):
        parse_assembly_config({"sources": [VOC], "folds": {"k": 1}}, "cfg.yaml")
    with pytest.raises(AssemblyConfigError, match="repeated: \\['v'\\]"):
        parse_assembly_config({"sources": [VOC, VOC]}, "cfg.yaml")
    with pytest.raises(AssemblyConfigError, match="sources: List should have at least 1"):
        parse_assembly_config({"sources": []}, "cfg.yaml")
    with pytest.raises(AssemblyConfigError, match="config file not found"):
        load_assembly_config("/nonexistent/cfg.yaml")


def test_paths_resolve_against_data_root_and_config_folder(tmp_path: Path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "a.yaml"
    path.write_text(yaml.safe_dump({"data_root": "../data", "output_dir": "out", "sources": [VOC]}))
    cfg = load_assembly_config(path)
    args = cfg.sources[0].reader_arguments(cfg.data_path)
    assert Path(args["annotations_dir"]).resolve() == tmp_path / "data" / "a"
    assert args["name"] == "v"
    assert cfg.output_path.resolve() == tmp_path / "cfg" / "out"
    assert cfg.cache_dir.resolve() == tmp_path / "cfg" / "out" / "cache"
    cfg = load_assembly_config(path, output_dir="/abs/out", data_root=None)
    assert cfg.output_path == Path("/abs/out")


def test_per_source_mapping_and_unknown_vocabulary(tmp_path: Path):
    demo = write_demo_data(
        tmp_path / "demo", DemoConfig(size=48, coco=4, voc=2, openimages=2, keywords=4, internal=2)
    )
    mapping = tmp_path / "kw.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {
                "vocabulary": "keywords",
                "negatives": "none",
                "entries": [{"name": "cars", "tags": ["vehicle"]}],
            }
        )
    )
    data = yaml.safe_load(demo.config.read_text())
    data["sources"][3]["mappings"] = {"keywords": str(mapping)}
    cfg = parse_assembly_config({**data, "base_dir": str(demo.root)})
    tax = load_default_taxonomy()
    tables = read_sources(cfg)
    keywords = [t for t in tables if t.name == "demo_keywords"]
    overrides = load_source_overrides(cfg, keywords, tax)
    assert overrides["demo_keywords"].mappings["keywords"].tags_for("cars") == ("vehicle",)
    tables[0].labels["vocabulary"] = "yolo"
    tables[0].boxes["vocabulary"] = "yolo"
    with pytest.raises(
        AssemblyConfigError,
        match=r"sources\[0\] \(demo_coco\): vocabulary "
        "'yolo' has no shipped mapping; give one in sources\\[0\\].mappings.yolo",
    ):
        load_source_overrides(cfg, tables[:1], tax)


def test_cli_assemble_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    demo = write_demo_data(
        tmp_path / "demo", DemoConfig(size=48, coco=8, voc=4, openimages=4, keywords=6, internal=3)
    )
    assert main(["assemble", str(demo.config), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "duplicates merged" in out and "truncated: 1" in out
    manifest = read_manifest(demo.root / "assembled" / "manifest.parquet")
    assert manifest["fold"].between(0, 4).all()
    assert not (demo.root / "assembled" / "cache").exists()
    assert main(["assemble", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_example_configs_parse():
    for name in ("shared_data.yaml", "demo.yaml"):
        cfg = load_assembly_config(REPO / "flows" / "configs" / name)
        assert cfg.sources


def test_assemble_all_shared_data(shared_data: Path, tmp_path: Path):
    cfg = load_assembly_config(
        REPO / "flows" / "configs" / "shared_data.yaml",
        data_root=str(shared_data),
        output_dir=str(tmp_path),
    )
    cfg = cfg.model_copy(
        update={"verify": "header", "cache": cfg.cache.model_copy(update={"enabled": False})}
    )
    outputs = run_assembly(cfg)
    manifest = read_manifest(outputs.manifest)
    counts = manifest["source"].value_counts().to_dict()
    assert counts == {
        "ade20k": 1410,
        "voc2012": 523,
        "coco_tiny300": 207,
        "coco_mini": 116,
        "openimages": 75,
    }
    assert manifest["image_id"].is_unique and manifest["fold"].notna().all()
    voc = manifest[manifest["source"] == "voc2012"]
    assert voc["tags"].map(len).gt(0).all()  # every VOC image shows something
    assert "below min_count=10" in outputs.summary
