"""Album users' accept/reject feedback as label evidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagger.clean.feedback import (
    FEEDBACK_COLUMNS,
    feedback_evidence,
    read_feedback,
    split_feedback,
)
from tagger.data.manifest import targets_from_manifest
from tests.tagger.clean.fixtures import make_world


def lines(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    return path


def test_feedback_by_id_or_hash_majority_and_split(tmp_path: Path) -> None:
    world = make_world(tmp_path, [(["dog", "animal"], ["dog", "animal", "cat"]), ([], ["beach"])])
    a, b = world.manifest["image_id"]
    hash_b = world.manifest["content_hash"][1]
    t = "2026-11-30T10:00:0{}Z"
    path = lines(
        tmp_path / "fb.jsonl",
        [
            {"image_id": a, "tag": "dog", "decision": "reject", "user": "u1", "time": t.format(1)},
            {"image_id": a, "tag": "Dog", "decision": "reject", "user": "u2", "time": t.format(2)},
            {"image_id": a, "tag": "dog", "decision": "accept", "user": "u3", "time": t.format(3)},
            {
                "content_hash": hash_b,
                "tag": "cat",
                "decision": "accept",
                "user": "u1",
                "time": t.format(4),
            },
            {
                "image_id": b,
                "tag": "beach",
                "decision": "accept",
                "user": "u1",
                "time": t.format(5),
            },
            {
                "image_id": b,
                "tag": "beach",
                "decision": "reject",
                "user": "u2",
                "time": t.format(6),
            },
            {
                "image_id": "nope",
                "tag": "dog",
                "decision": "accept",
                "user": "u1",
                "time": t.format(7),
            },
        ],
    )
    fb = read_feedback([path], world.manifest, world.taxonomy)
    assert len(fb.rows) == 6 and len(fb.problems) == 1 and "fb.jsonl:7" in fb.problems[0]
    evidence = feedback_evidence(fb.rows).set_index(["image_id", "tag"])
    assert evidence.loc[(a, "dog"), "value"] == 0  # 2 rejects beat 1 accept
    assert evidence.loc[(a, "dog"), "votes"] == 3
    assert (b, "beach") not in evidence.index  # a tie is no evidence
    targets, known = targets_from_manifest(world.manifest, world.taxonomy)
    fills, conflicts = split_feedback(
        evidence.reset_index(),
        targets,
        known,
        world.manifest["image_id"].to_numpy(),
        world.taxonomy.tag_ids,
    )
    assert list(zip(fills["image_id"], fills["tag"], fills["value"], strict=True)) == [
        (b, "cat", 1)
    ]
    assert list(zip(conflicts["image_id"], conflicts["tag"], strict=True)) == [(a, "dog")]
    assert conflicts["label"].tolist() == [1]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("{not json", "not valid JSON"),
        (
            json.dumps({"tag": "dog", "decision": "accept", "user": "u", "time": "2026-01-01"}),
            "image_id",
        ),
        (
            json.dumps(
                {
                    "image_id": "x",
                    "tag": "dog",
                    "decision": "maybe",
                    "user": "u",
                    "time": "2026-01-01",
                }
            ),
            "allowed",
        ),
        (
            json.dumps(
                {
                    "image_id": "x",
                    "tag": "unicorn",
                    "decision": "accept",
                    "user": "u",
                    "time": "2026-01-01",
                }
            ),
            "not in taxonomy",
        ),
        (
            json.dumps(
                {
                    "image_id": "x",
                    "tag": "dog",
                    "decision": "accept",
                    "user": "u",
                    "time": "yesterday",
                }
            ),
            "ISO 8601",
        ),
    ],
)
def test_malformed_feedback_names_file_and_line(tmp_path: Path, record: str, message: str) -> None:
    world = make_world(tmp_path, [([], [])])
    path = tmp_path / "fb.jsonl"
    path.write_text("\n" + record + "\n")
    with pytest.raises(ValueError, match=message) as error:
        read_feedback([path], world.manifest, world.taxonomy)
    assert "fb.jsonl:2" in str(error.value)


def test_no_feedback_is_empty() -> None:
    ev = feedback_evidence(pd.DataFrame(columns=FEEDBACK_COLUMNS))
    assert ev.empty and np.isin(["value", "votes"], ev.columns).all()
