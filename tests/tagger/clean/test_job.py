"""The clean job end to end on a small world: issues, pseudo labels, feedback, queue, exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagger.clean.job import ApiPredictionsConfig, CleanConfig, run_clean
from tagger.clean.pseudo import PseudoConfig
from tagger.data.manifest import read_manifest
from tagger.train.predictions import Predictions, write_predictions
from tests.tagger.clean.fixtures import make_world, write_oof

KNOWN_ANIMALS = ["animal", "dog", "cat"]


def animal_world(tmp_path: Path):
    """12 images of source A (animals known), 4 of source B (only beach known)."""
    rows = [(["animal", "dog"], KNOWN_ANIMALS)] * 6 + [([], KNOWN_ANIMALS)] * 6
    rows += [(["beach"], ["beach"])] * 2 + [([], ["beach"])] * 2
    world = make_world(tmp_path / "w", rows)
    probs = np.zeros((16, 4))
    probs[:6, :2] = 0.9  # dogs
    probs[6:12, :2] = 0.1
    probs[5, :2] = 0.05  # labelled dog, model says no: a wrong positive
    probs[11, :2] = 0.97  # labelled not a dog, model says dog: a missing positive
    probs[:12, 3] = 0.2  # beach unknown on A
    probs[0, 3] = 0.8  # ... but the model sees a beach on image 0
    probs[12:14, 3] = 0.9
    probs[14:, 3] = 0.1
    probs[12, 1] = 0.7  # a dog on a beach image of B (dog unknown there)
    return world, probs


def test_run_clean_end_to_end(tmp_path: Path) -> None:
    world, probs = animal_world(tmp_path)
    ids = world.manifest["image_id"]
    api = tmp_path / "api.jsonl"
    api.write_text(
        "\n".join(
            json.dumps({"image": Path(world.manifest["path"][i]).name, "labels": labels})
            for i, labels in [
                (0, [{"name": "Beach", "score": 0.8}]),
                (12, [{"name": "dog", "score": 0.9}]),
            ]
        )
    )
    feedback = tmp_path / "fb.jsonl"
    feedback.write_text(
        json.dumps(
            {
                "image_id": ids[13],
                "tag": "cat",
                "decision": "reject",
                "user": "u",
                "time": "2026-12-01T00:00:00Z",
            }
        )
        + "\n"
        + json.dumps(
            {
                "image_id": ids[1],
                "tag": "dog",
                "decision": "reject",
                "user": "u",
                "time": "2026-12-01T00:00:00Z",
            }
        )
        + "\n"
    )
    config = CleanConfig(
        pseudo=PseudoConfig(auto_accept=True),
        api_predictions=ApiPredictionsConfig(json_path=api, images_dir=world.root),
        feedback=(feedback,),
    )
    out = run_clean(
        world.manifest_path, write_oof(world, probs), config, tmp_path / "clean", world.taxonomy
    )
    issues = pd.read_parquet(out.issues).set_index(["image_id", "tag"])
    assert issues.loc[(ids[5], "dog"), "kind"] == "wrong"
    assert issues.loc[(ids[11], "dog"), "kind"] == "missing"
    assert not issues.index.get_level_values(0).isin(ids[12:]).any()  # unknown on source B
    summary = out.summary
    assert summary["label_context"] == "on, out of folds"  # no cross-fit models: the folds
    assert (issues["image_prob"].between(0, 1)).all()
    assert set(issues["found_by"]) <= {"cleanlab", "posterior", "both"}
    assert summary["issues_posterior_only"] == int((issues["found_by"] == "posterior").sum())
    assert summary["min_flip_prob"] == 0.5
    assert summary["pseudo_accepted"] == 2  # model and API agree: beach on 0, dog on 12
    assert summary["feedback_fills"] == 1 and summary["feedback_conflicts"] == 1
    # the new manifest version: accepted pseudo labels and the feedback fill, logged
    assert out.manifest != world.manifest_path and out.changes is not None
    log = pd.read_csv(out.changes)
    assert set(log["kind"]) == {"pseudo", "implied", "feedback"}  # implied: animal of dog
    new = read_manifest(out.manifest).set_index("image_id")
    assert "beach" in new.loc[ids[0], "tags"]
    assert "cat" in new.loc[ids[13], "known"] and "cat" not in new.loc[ids[13], "tags"]
    assert {p["kind"] for p in new.loc[ids[12], "provenance"] if p["tag"] == "dog"} == {"pseudo"}
    assert read_manifest(world.manifest_path).equals(world.manifest)  # base untouched
    queue = pd.read_csv(out.queue)
    kinds = dict(zip(zip(queue["image_id"], queue["tag"], strict=True), queue["kind"], strict=True))
    assert kinds[(ids[5], "dog")] == "wrong" and kinds[(ids[11], "dog")] == "missing"
    assert kinds[(ids[1], "dog")] == "feedback"
    assert (queue["decision"].isna()).all() and (
        queue["manifest_sha256"] == summary["manifest_sha256"]
    ).all()
    per_source = pd.read_csv(out.issues_per_source)
    assert per_source.set_index("source").loc["src", "images"] == 16
    tasks = json.loads(out.label_studio_tasks.read_text())
    assert {t["data"]["image_id"] for t in tasks} == set(queue["image_id"])
    assert out.contact_sheet.read_text().count('<div class="card"') == queue["image_id"].nunique()


def test_in_sample_predictions_are_refused(tmp_path: Path) -> None:
    world, probs = animal_world(tmp_path)
    pred = Predictions(
        world.manifest["image_id"].to_numpy(),
        world.manifest["fold"].to_numpy(),
        probs.astype(np.float32),
        world.taxonomy.tag_ids,
        train_folds=(0, 1),
    )
    path = write_predictions(pred, tmp_path / "in_sample.parquet")
    with pytest.raises(ValueError, match="in-sample for folds \\[0, 1\\]"):
        run_clean(world.manifest_path, path, CleanConfig(), tmp_path / "c", world.taxonomy)
