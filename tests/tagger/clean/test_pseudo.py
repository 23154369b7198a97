"""Pseudo labels: model top-k and API on unknown cells, with provenance; conflicts to review."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from label_system.mapping import identity_mapping
from tagger.clean.changes import apply_label_changes
from tagger.clean.pseudo import (
    PseudoConfig,
    api_suggestions,
    model_suggestions,
    propose_pseudo_labels,
)
from tagger.data.readers.api import VOCABULARY, read_api_predictions
from tests.tagger.clean.fixtures import make_world

TAGS = ("animal", "dog", "cat", "beach")


def test_model_top_k_above_confidence() -> None:
    probs = np.array([[0.9, 0.8, 0.7, 0.4], [0.3, 0.2, 0.1, 0.55]])
    out = model_suggestions(probs, np.array(["a", "b"], dtype=object), TAGS, top_k=2)
    assert sorted(zip(out["image_id"], out["tag"], strict=True)) == [
        ("a", "animal"),
        ("a", "dog"),
        ("b", "beach"),
    ]
    assert len(model_suggestions(probs, np.array(["a", "b"]), TAGS, 5, 0.95)) == 0


def test_unknown_cells_become_pseudo_labels_with_their_source() -> None:
    ids = np.array(["a", "b", "c"], dtype=object)
    targets = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    known = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    model = pd.DataFrame(
        {"image_id": ["a", "a", "b", "c"], "tag": ["dog", "beach", "cat", "dog"], "prob": 0.9}
    )
    api = pd.DataFrame({"image_id": ["a", "c", "c"], "tag": ["beach", "dog", "cat"], "score": 0.8})
    off = propose_pseudo_labels(model, api, targets, known, ids, TAGS, PseudoConfig())
    pseudo = off.pseudo.set_index(["image_id", "tag"])
    # a/dog is a known positive that agrees: dropped; b/cat is a known negative: a conflict
    assert set(pseudo.index) == {("a", "beach"), ("c", "dog"), ("c", "cat")}
    assert pseudo.loc[("a", "beach"), "source"] == "model+api"
    assert pseudo.loc[("c", "dog"), "source"] == "model+api"
    assert pseudo.loc[("c", "cat"), "source"] == "api"
    assert not pseudo["accepted"].any()  # auto-accept is off by default
    assert list(zip(off.conflicts["image_id"], off.conflicts["tag"], strict=True)) == [("b", "cat")]
    on = propose_pseudo_labels(
        model, api, targets, known, ids, TAGS, PseudoConfig(auto_accept=True)
    )
    accepted = on.pseudo[on.pseudo["accepted"]]
    assert set(zip(accepted["image_id"], accepted["tag"], strict=True)) == {
        ("a", "beach"),
        ("c", "dog"),
    }


def test_accepted_pseudo_label_carries_pseudo_provenance(tmp_path: Path) -> None:
    world = make_world(tmp_path, [(["dog", "animal"], ["dog", "cat", "animal"]), ([], ["beach"])])
    image = world.manifest["image_id"][1]
    changes = pd.DataFrame(
        {
            "image_id": [image],
            "tag": ["dog"],
            "new": ["positive"],
            "kind": ["pseudo"],
            "source": ["pseudo:model+api"],
        }
    )
    new, log = apply_label_changes(world.manifest, changes, world.taxonomy)
    row = new.set_index("image_id").loc[image]
    assert set(row["tags"]) == {"dog", "animal"}  # the ancestor follows, as in assembly
    kinds = {p["tag"]: p["kind"] for p in row["provenance"]}
    assert kinds == {"dog": "pseudo", "animal": "implied"}
    assert log[["tag", "old", "new", "kind"]].values.tolist() == [
        ["dog", "unknown", "positive", "pseudo"],
        ["animal", "unknown", "positive", "implied"],
    ]
    assert list(world.manifest["tags"][1]) == []  # the input manifest is not edited


def test_api_predictions_map_and_join_by_path_and_hash(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w", [([], []), ([], []), ([], [])])
    elsewhere = tmp_path / "api_images"
    elsewhere.mkdir()
    # image 1 is the same file under another name: joined by content hash
    (elsewhere / "copy.jpg").write_bytes(Path(world.manifest["path"][1]).read_bytes())
    records = [
        {
            "image": str(Path(world.manifest["path"][0]).name),
            "labels": [
                {"name": "Dog", "score": 0.9},
                {"name": "Beach", "score": 0.3},
                {"name": "unicorn", "score": 0.99},
            ],
        },
        {"image": "../api_images/copy.jpg", "labels": [{"name": "cat", "score": 0.7}]},
        {"image": "not_there.jpg", "labels": [{"name": "dog", "score": 0.9}]},
    ]
    api_json = tmp_path / "api.json"
    api_json.write_text(json.dumps(records))
    table = read_api_predictions(api_json, world.root)
    mapping = identity_mapping(world.taxonomy, vocabulary=VOCABULARY)
    out = api_suggestions(table, mapping, world.manifest, min_score=0.5)
    got = set(zip(out["image_id"], out["tag"], strict=True))
    ids = world.manifest["image_id"]
    assert got == {(ids[0], "dog"), (ids[1], "cat")}
