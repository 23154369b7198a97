"""The demo data set: deterministic, real formats, classes the shipped mappings know."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from label_system.mapping import load_default_mapping
from label_system.taxonomy import load_default_taxonomy
from tagger.cli import main
from tagger.data.demo import (
    BACKGROUNDS,
    DEMO_CLASSES,
    DemoConfig,
    demo_known_tags,
    demo_sources,
    draw_scene,
    render_scene,
    write_demo_data,
)
from tagger.data.manifest import read_manifest
from tagger.data.readers import read_coco, read_internal_csv, read_keyword_folders, read_voc

REPO = Path(__file__).resolve().parents[3]
TINY = DemoConfig(
    seed=3, size=48, coco=6, voc=4, openimages=4, keywords=6, internal=3, duplicates=1, truncated=1
)


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_every_demo_name_is_known_to_the_shipped_taxonomy_and_mappings():
    tax = load_default_taxonomy()
    maps = {v: load_default_mapping(v, tax) for v in ("coco", "voc", "openimages", "keywords")}
    for cls in DEMO_CLASSES:
        assert cls.tag in tax
        for vocab, label in (
            ("coco", cls.coco),
            ("voc", cls.voc),
            ("openimages", cls.openimages),
            ("keywords", cls.keyword),
        ):
            if label is not None:
                assert maps[vocab].tags_for(label) == (cls.tag,), (vocab, label)
    for bg in BACKGROUNDS:
        assert all(t in tax for t in bg.tags)
        assert bg.keyword is None or set(maps["keywords"].tags_for(bg.keyword)) <= set(bg.tags)


def test_scenes_are_deterministic_long_tailed_and_sized():
    a = [draw_scene(np.random.default_rng(5), 160, 120) for _ in range(1)]
    b = [draw_scene(np.random.default_rng(5), 160, 120) for _ in range(1)]
    assert a == b
    rng = np.random.default_rng(0)
    scenes = [draw_scene(rng, 160, 120) for _ in range(400)]
    counts = {c.tag: sum(c.tag in s.tags for s in scenes) for c in DEMO_CLASSES}
    assert counts["car"] > 4 * counts["sports_ball"] > 0  # a long tail, but present
    widths = [o.box[2] - o.box[0] for s in scenes for o in s.objects]
    assert min(widths) < 16 and max(widths) > 60  # small and large objects
    for s in scenes[:20]:
        assert all(
            0 <= o.box[0] < o.box[2] <= 160 and 0 <= o.box[1] < o.box[3] <= 120 for o in s.objects
        )
    image = render_scene(scenes[0])
    assert image.size == (160, 120) and image.mode == "RGB"


def test_write_demo_data_is_deterministic_and_readable(tmp_path: Path):
    one = write_demo_data(tmp_path / "one", TINY)
    two = write_demo_data(tmp_path / "two", TINY)
    assert digest(one.root) == digest(two.root)
    root = one.root
    coco = read_coco(root / "coco/instances.json", root / "coco/images")
    voc = read_voc(root / "voc/Annotations", root / "voc/JPEGImages")
    keywords = read_keyword_folders(root / "keywords")
    internal = read_internal_csv(root / "internal/tags.csv")
    assert len(coco.images) == 6 and len(voc.images) == 4
    assert len(keywords.images) == 6 + 1 + 1  # + one COCO copy + one broken file
    assert len(internal.images) == 3 + 1  # + one COCO image listed again
    assert one.problems == ["keywords/cars/broken_00.jpg"]
    assert one.config.exists()


def test_cli_demo_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["demo-data", str(tmp_path / "d"), "--seed", "1", "--size", "48"]) == 0
    assert "tagger assemble" in capsys.readouterr().out
    assert (tmp_path / "d" / "assemble.yaml").exists()


def test_shipped_demo_config_matches_the_generated_one():
    shipped = yaml.safe_load((REPO / "flows" / "configs" / "demo.yaml").read_text())
    assert shipped["sources"] == demo_sources()


def test_demo_manifest_has_known_negatives_for_parent_and_scene_tags(tmp_path: Path):
    cfg = DemoConfig(seed=0, size=48, coco=4, voc=2, openimages=8, keywords=2, internal=12)
    demo = write_demo_data(tmp_path / "d", cfg)
    assert main(["assemble", str(demo.config), "--no-cache"]) == 0
    manifest = read_manifest(demo.root / "assembled" / "manifest.parquet")
    known_tags = set(demo_known_tags())
    assert {"animal", "vehicle", "plant", "outdoor", "sky", "indoor"} <= known_tags
    negatives: dict[str, set[str]] = {}  # tag -> sources that gave a known negative
    for row in manifest.itertuples():
        for tag in set(row.known) - set(row.tags):
            negatives.setdefault(tag, set()).update(row.sources)
        if "demo_internal" in row.sources:  # exhaustive: every demo tag is known
            assert known_tags <= set(row.known), row.path
            assert ("animal" in row.tags) == bool({"dog", "cat", "bird"} & set(row.tags))
    for parent in ("animal", "mammal", "vehicle", "plant", "fruit", "outdoor", "indoor", "sky"):
        assert "demo_internal" in negatives.get(parent, set()), parent
    assert {"animal", "vehicle"} <= {t for t, s in negatives.items() if "demo_openimages" in s}
    assert "dog" in negatives and "horse" in negatives  # no animal => no dog, no horse
