"""Assembly: mapping to tags, known negatives, unknowns, dedup, problems, boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tagger.data.assembly import SourceOverride, assemble, identify_images, with_folds
from tagger.data.images import ImageError
from tagger.data.manifest import MANIFEST_SCHEMA, targets_from_manifest
from tests.tagger.assembly_fixtures import (
    source,
    tiny_mappings,
    tiny_taxonomy,
    write_image,
)


def rows(result) -> dict[str, dict]:
    """Manifest rows by image_id, list columns as Python lists."""
    return {r["image_id"]: r for r in result.manifest.to_pylist()}


def by_key(result, key: str) -> dict:
    return next(r for r in result.manifest.to_pylist() if r["image_id"].endswith(":" + key))


def test_verified_positives_ancestors_and_negatives_with_descendants():
    tax = tiny_taxonomy()
    src = source(
        "oi",
        {"a": "/x/a.jpg", "b": "/x/b.jpg"},
        [
            ("a", "openimages", "/m/dog", 1),
            ("a", "openimages", "/m/car", 0),
            ("b", "openimages", "/m/animal", 0),
        ],
    )
    result = assemble([src], tax, tiny_mappings(), hashing=False)
    assert result.manifest.cast(MANIFEST_SCHEMA).schema == MANIFEST_SCHEMA
    a, b = by_key(result, "a"), by_key(result, "b")
    assert a["tags"] == ["animal", "dog"]  # ancestor implied, taxonomy column order
    assert a["known"] == ["animal", "dog", "car"]  # car is a verified negative; cat unknown
    assert b["tags"] == []
    assert b["known"] == ["animal", "dog", "puppy", "cat"]  # no animal => no dog, puppy, cat
    kinds = {(p["tag"], p["kind"], p["source_label"]) for p in a["provenance"]}
    assert kinds == {("dog", "mapped", "/m/dog"), ("animal", "implied", None)}
    assert a["image_id"] == "oi:a" and a["sources"] == ["oi"] and a["content_hash"] == ""


def test_exhaustive_negatives_skip_present_tags_and_images_without_labels():
    tax = tiny_taxonomy()
    src = source("coco", {"a": "/x/a.jpg", "empty": "/x/e.jpg"}, [("a", "coco", "dog", 1)])
    result = assemble([src], tax, tiny_mappings(), hashing=False)
    a, empty = by_key(result, "a"), by_key(result, "empty")
    assert a["tags"] == ["animal", "dog"]
    # dog is present, so puppy stays unknown; cat and car are absent known tags; vehicle and
    # animal are not COCO known tags (COCO does not cover every vehicle).
    assert a["known"] == ["animal", "dog", "cat", "car"]
    assert empty["tags"] == [] and empty["known"] == ["dog", "puppy", "cat", "car"]


def test_explicit_unknown_removes_tag_ancestors_and_descendants_from_negatives():
    tax = tiny_taxonomy()
    override = {"coco": SourceOverride(known_tags=frozenset({"animal", "dog", "car"}))}
    src = source("coco", {"a": "/x/a.jpg"}, [("a", "coco", "dog", -1)])
    result = assemble([src], tax, tiny_mappings(), hashing=False, overrides=override)
    a = by_key(result, "a")
    assert a["tags"] == []
    # dog unknown -> dog, puppy (descendant) and animal (ancestor) are not negatives; cat
    # still is ("no animal but maybe a dog"), and car.
    assert a["known"] == ["cat", "car"]


def test_partial_entries_give_positives_not_negatives():
    tax = tiny_taxonomy()
    src = source(
        "oi",
        {"a": "/x/a.jpg", "b": "/x/b.jpg"},
        [
            ("a", "openimages", "/m/pet", 1),
            ("b", "openimages", "/m/pet", 0),
        ],
    )
    result = assemble([src], tax, tiny_mappings(), hashing=False)
    assert by_key(result, "a")["tags"] == ["animal", "dog", "cat"]
    assert by_key(result, "b")["known"] == []


def test_policy_none_and_override_to_none():
    tax = tiny_taxonomy()
    kw = source("kw", {"a": "/x/a.jpg"}, [("a", "keywords", "puppies", 1)])
    coco = source("coco", {"b": "/x/b.jpg"}, [("b", "coco", "dog", 1)])
    result = assemble(
        [kw, coco],
        tax,
        tiny_mappings(),
        hashing=False,
        overrides={"coco": SourceOverride(negatives="none")},
    )
    assert by_key(result, "a")["known"] == ["animal", "dog", "puppy"]
    assert by_key(result, "b")["known"] == ["animal", "dog"]


def test_human_provenance_and_label_normalisation():
    tax = tiny_taxonomy()
    src = source("internal", {"a": "/x/a.jpg"}, [("a", "tags", "  Car ", 1)])
    a = by_key(assemble([src], tax, tiny_mappings(), hashing=False), "a")
    assert a["tags"] == ["vehicle", "car"]
    assert {(p["tag"], p["kind"]) for p in a["provenance"]} == {
        ("car", "human"),
        ("vehicle", "implied"),
    }


def test_conflicts_positive_wins_and_is_counted():
    tax = tiny_taxonomy()
    oi = source(
        "oi",
        {"a": "/x/a.jpg"},
        [("a", "openimages", "/m/dog", 1), ("a", "openimages", "/m/animal", 0)],
    )
    result = assemble([oi], tax, tiny_mappings(), hashing=False)
    a = by_key(result, "a")
    assert a["tags"] == ["animal", "dog"]
    assert a["known"] == ["animal", "dog", "puppy", "cat"]
    assert result.stats["conflicts_within_source"] == 1


def test_unmapped_labels_counted_and_unknown_vocabulary_fails():
    tax = tiny_taxonomy()
    src = source(
        "oi",
        {"a": "/x/a.jpg"},
        [
            ("a", "openimages", "/m/zebra", 1),
            ("a", "openimages", "/m/zebra", 0),
            ("zz", "openimages", "/m/dog", 1),
        ],
    )
    result = assemble([src], tax, tiny_mappings(), hashing=False)
    assert result.stats["unmapped_labels"] == {"openimages": {"/m/zebra": 2}}
    assert result.stats["sources"]["oi"]["label_rows_unmatched"] == 1
    assert any("image keys" in p.reason for p in result.problems)
    bad = source("x", {"a": "/x/a.jpg"}, [("a", "voc", "dog", 1)])
    with pytest.raises(ValueError, match="no mapping for vocabulary 'voc'"):
        assemble([bad], tax, tiny_mappings(), hashing=False)


def test_duplicates_merged_across_and_within_sources(tmp_path: Path):
    tax = tiny_taxonomy()
    p1 = write_image(tmp_path / "one.png", seed=1)
    p2 = write_image(tmp_path / "two.png", seed=2)
    copy = tmp_path / "copy_of_one.png"
    copy.write_bytes(Path(p1).read_bytes())
    oi = source(
        "oi",
        {"a": p1, "b": p2},
        [("a", "openimages", "/m/dog", 1), ("b", "openimages", "/m/cat", 1)],
        boxes=[("a", "openimages", "/m/dog", 0.1, 0.1, 0.5, 0.5)],
    )
    coco = source(
        "coco",
        {"c": str(copy), "c2": p1},
        [("c", "coco", "car", 1)],
        boxes=[
            ("c", "coco", "car", 0.2, 0.2, 0.9, 0.9),
            ("c", "coco", "zebra", 0.0, 0.0, 0.1, 0.1),
        ],
    )
    result = assemble([oi, coco], tax, tiny_mappings(), workers=2)
    assert result.manifest.num_rows == 2
    assert result.stats["duplicates_merged"] == 2
    merged = next(r for r in result.manifest.to_pylist() if r["path"] == p1)
    assert merged["image_id"] == merged["content_hash"][:16] and len(merged["content_hash"]) == 64
    assert merged["sources"] == ["oi", "coco"] and merged["source"] == "oi"
    assert merged["tags"] == ["animal", "dog", "vehicle", "car"]
    # coco is exhaustive and its copy has no dog: it says dog (and puppy) and cat are absent.
    # The dog positive of "oi" wins (a counted conflict); puppy and cat stay known negatives.
    assert merged["known"] == ["animal", "dog", "puppy", "cat", "vehicle", "car"]
    assert result.stats["conflicts_across_sources"] == 1
    assert (merged["width"], merged["height"]) == (24, 16)
    assert [(b["tag"], b["source_label"]) for b in merged["boxes"]] == [
        ("dog", "/m/dog"),
        ("car", "car"),
        (None, "zebra"),
    ]
    assert {p["source"] for p in merged["provenance"]} == {"oi", "coco"}


def test_unusable_images_reported_and_left_out(tmp_path: Path):
    tax = tiny_taxonomy()
    good = write_image(tmp_path / "good.jpg", seed=3, size=(64, 48), fmt="JPEG")
    data = Path(write_image(tmp_path / "full.jpg", seed=4, size=(64, 48), fmt="JPEG")).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    images = {
        "good": good,
        "trunc": str(truncated),
        "text": str(text),
        "gone": str(tmp_path / "missing.jpg"),
    }
    labels = [(k, "coco", "dog", 1) for k in images]
    result = assemble([source("coco", images, labels)], tax, tiny_mappings(), workers=2)
    assert result.manifest.column("path").to_pylist() == [good]
    codes = {p.image_key: p.reason.split(":")[0] for p in result.problems}
    assert codes == {"coco:trunc": "truncated", "coco:text": "not_an_image", "coco:gone": "missing"}
    assert result.stats["images_unusable"] == 3


def test_identify_images_returns_errors(tmp_path: Path):
    good = write_image(tmp_path / "a.png", seed=5)
    out = identify_images([good, str(tmp_path / "nope.png")], workers=2)
    assert out[0].width == 24 and isinstance(out[1], ImageError) and out[1].code == "missing"


def test_manifest_matrices_round_trip_and_folds():
    tax = tiny_taxonomy()
    src = source(
        "oi",
        {"a": "/x/a.jpg", "b": "/x/b.jpg", "c": "/x/c.jpg"},
        [("a", "openimages", "/m/dog", 1), ("b", "openimages", "/m/car", 0)],
    )
    result = assemble([src], tax, tiny_mappings(), hashing=False)
    targets, known = targets_from_manifest(result.manifest.to_pandas(), tax)
    assert targets.shape == (3, len(tax))
    assert targets[0, tax.index("dog")] == 1 and targets[0, tax.index("animal")] == 1
    assert known[1, tax.index("car")] and targets[1, tax.index("car")] == 0
    assert not known[2].any()  # an image with no labels knows nothing
    folded = with_folds(result.manifest, np.array([0, 1, 0]))
    assert folded.column("fold").to_pylist() == [0, 1, 0]
    with pytest.raises(ValueError, match="2 folds for 3"):
        with_folds(result.manifest, np.array([0, 1]))


def test_no_sources_and_repeated_keys():
    tax = tiny_taxonomy()
    empty = assemble([], tax, tiny_mappings(), hashing=False)
    assert empty.manifest.num_rows == 0
    assert empty.manifest.cast(MANIFEST_SCHEMA).schema == MANIFEST_SCHEMA
    src = source("oi", {"a": "/x/a.jpg"}, [("a", "openimages", "/m/dog", 1)])
    src.images = src.images.iloc[[0, 0]]
    result = assemble([src], tax, tiny_mappings(), hashing=False)
    assert result.manifest.num_rows == 1
    assert any("listed twice" in p.reason for p in result.problems)
    with pytest.raises(ValueError, match="source names must be unique"):
        assemble([src, src], tax, tiny_mappings(), hashing=False)


def reference(rows, images, mapping, taxonomy, known_tags=None):
    """Set-by-set reference of the documented semantics for one source: {key: (tags, known)}."""
    tax = taxonomy
    desc = {t: {t, *tax.descendants(t)} for t in tax.tag_ids}
    out = {}
    for key in images:
        mine = [(lab, val) for k, lab, val in rows if k == key]
        direct = {t for lab, val in mine if val == 1 for t in mapping.tags_for(lab)}
        pos = set(tax.with_ancestors(direct))
        unknown = {
            u
            for lab, val in mine
            if val == -1
            for t in mapping.tags_for(lab)
            for u in {t, *tax.ancestors(t), *desc[t]}
        }
        said = {t for lab, val in mine if val == 0 for t in mapping.negative_tags_for(lab)}
        if mapping.negatives == "exhaustive":
            said |= set(known_tags if known_tags is not None else mapping.known_tags) - pos
        neg = {d for t in said for d in desc[t]} - unknown - pos
        order = tax.tag_ids
        out[key] = ([t for t in order if t in pos], [t for t in order if t in pos | neg])
    return out


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("vocabulary", ["openimages", "coco", "keywords"])
def test_matches_set_reference_on_random_labels(monkeypatch, vocabulary, chunk):
    import tagger.data.assembly as assembly

    if chunk:
        monkeypatch.setattr(assembly, "ROW_CHUNK", chunk)  # exercise every chunk boundary
    tax = tiny_taxonomy()
    mapping = tiny_mappings()[vocabulary]
    labels = sorted({e.label for e in mapping.entries} | {"unmapped"})
    rng = np.random.default_rng(len(vocabulary) + (chunk or 0))
    images = {f"i{j}": f"/x/{j}.jpg" for j in range(12)}
    rows = sorted(
        {
            (
                f"i{rng.integers(12)}",
                labels[rng.integers(len(labels))],
                int(rng.choice([1, 1, 0, -1])),
            )
            for _ in range(40)
        }
    )
    rows = list({(k, lab): (k, lab, v) for k, lab, v in rows}.values())  # one value per label
    result = assemble(
        [source("s", images, [(k, vocabulary, lab, v) for k, lab, v in rows])],
        tax,
        tiny_mappings(),
        hashing=False,
    )
    expected = reference(rows, images, mapping, tax)
    got = {
        r["image_id"].split(":")[1]: (r["tags"], r["known"]) for r in result.manifest.to_pylist()
    }
    assert got == expected
