"""The review round trip: exports (contact sheet, Label Studio) and imports -> new version."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from tagger.clean.changes import apply_label_changes, write_manifest_version
from tagger.clean.export import (
    label_studio_config,
    label_studio_tasks,
    write_contact_sheet,
    write_label_studio,
)
from tagger.clean.review import (
    ReviewImportError,
    check_decisions,
    decisions_to_changes,
    read_decisions_csv,
    read_label_studio_export,
)
from tagger.data.images import hash_file
from tagger.data.manifest import read_manifest
from tests.tagger.clean.fixtures import World, make_world


def world_and_queue(tmp_path: Path) -> tuple[World, pd.DataFrame]:
    world = make_world(
        tmp_path / "w",
        [
            (["dog", "animal"], ["animal", "dog", "cat"]),
            ([], ["animal", "dog", "cat"]),
            (["beach"], ["beach"]),
        ],
    )
    ids = world.manifest["image_id"]
    queue = pd.DataFrame(
        {
            "rank": [1, 2, 3],
            "image_id": [ids[0], ids[1], ids[0]],
            "tag": ["dog", "cat", "beach"],
            "kind": ["wrong", "missing", "pseudo"],
            "current": ["positive", "negative", "unknown"],
            "suggested": ["negative", "positive", "positive"],
            "priority": [1.5, 1.2, 0.4],
            "quality": [0.05, 0.1, float("nan")],
            "model_prob": [0.05, 0.9, 0.8],
            "api_score": [float("nan")] * 3,
            "reasons": [
                "labelled positive, model says 0.05",
                "labelled negative, model says 0.90",
                "model top-k 0.80",
            ],
        }
    )
    return world, queue


def test_label_studio_tasks_parse_as_the_labeling_config_expects(tmp_path: Path) -> None:
    world, queue = world_and_queue(tmp_path)
    sha = hash_file(world.manifest_path)
    tasks = label_studio_tasks(queue, world.manifest, world.taxonomy, sha, image_root=world.root)
    tasks_path, config_path = write_label_studio(tasks, tmp_path / "ls")
    config = ET.fromstring(config_path.read_text())
    assert config.tag == "View"
    image = config.find("Image")
    choices = config.find("Choices")
    assert image is not None and choices is not None
    assert choices.get("toName") == image.get("name") and choices.get("choice") == "multiple"
    # every $variable of the config is a key of every task's data
    variables = set(re.findall(r'value="\$(\w+)"', label_studio_config()))
    loaded = json.loads(tasks_path.read_text())
    assert isinstance(loaded, list) and len(loaded) == 2  # one task per image
    for task in loaded:
        assert set(task) == {"data", "predictions"}
        assert variables <= set(task["data"])
        offered = [c["value"] for c in task["data"]["review_tags"]]
        assert all(isinstance(c["value"], str) for c in task["data"]["review_tags"])
        for prediction in task["predictions"]:
            assert isinstance(prediction["model_version"], str)
            assert isinstance(prediction["score"], float)
            for result in prediction["result"]:
                assert result["from_name"] == choices.get("name")
                assert result["to_name"] == image.get("name")
                assert result["type"] == "choices"
                assert set(result["value"]["choices"]) <= set(offered)
    first = loaded[0]
    assert first["data"]["image_id"] == world.manifest["image_id"][0]
    assert first["data"]["image"] == "/data/local-files/?d=img000.jpg"
    assert [c["value"] for c in first["data"]["review_tags"]] == ["dog", "beach"]
    # our suggestion: dog removed, beach added
    assert first["predictions"][0]["result"][0]["value"]["choices"] == ["beach"]
    assert "a real dog" in first["data"]["guidelines"]  # the tag's guideline is shown


def test_contact_sheet_is_offline_with_guidelines(tmp_path: Path) -> None:
    world, queue = world_and_queue(tmp_path)
    sheet = write_contact_sheet(queue, world.manifest, world.taxonomy, tmp_path / "sheet.html")
    page = sheet.read_text()
    assert page.count("data:image/jpeg;base64,") == 2  # one embedded thumbnail per image
    assert "http://" not in page and "https://" not in page
    assert "remove <b>Dog</b>" in page and "add <b>Cat</b>" in page
    assert (
        "Counts: a real dog. Does not count: wolves and toy dogs. Look-alikes: wolf, fox." in page
    )
    assert "current tags: Animal, Dog" in page
    rel = write_contact_sheet(
        queue, world.manifest, world.taxonomy, tmp_path / "s2.html", thumbnails="relative"
    ).read_text()
    assert 'src="w/img000.jpg"' in rel


def label_studio_export(tasks: list[dict], choices: list[list[str]]) -> list[dict]:
    """What Label Studio's JSON export holds after annotators ticked `choices` per task."""
    out = []
    for i, (task, chosen) in enumerate(zip(tasks, choices, strict=True)):
        result = [
            {
                "id": "r1",
                "from_name": "tags",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": chosen},
            }
        ]
        out.append(
            task
            | {
                "id": 100 + i,
                "annotations": [
                    {
                        "id": 7,
                        "result": [],
                        "was_cancelled": True,
                        "updated_at": "2026-12-02T10:00:00Z",
                    },
                    {
                        "id": 8,
                        "result": result,
                        "was_cancelled": False,
                        "completed_by": 3,
                        "updated_at": "2026-12-01T10:00:00Z",
                    },
                ],
            }
        )
    return out


def test_label_studio_round_trip_to_a_new_manifest_version(tmp_path: Path) -> None:
    world, queue = world_and_queue(tmp_path)
    sha = hash_file(world.manifest_path)
    tasks = label_studio_tasks(queue, world.manifest, world.taxonomy, sha)
    # image 0: the annotator keeps dog (rejects our suggestion) and does not add beach;
    # image 1: adds cat (accepts)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export(tasks, [["dog"], ["cat"]])))
    decisions = read_label_studio_export(export)
    check_decisions(decisions, world.manifest, world.taxonomy, sha)
    new, log = apply_label_changes(world.manifest, decisions_to_changes(decisions), world.taxonomy)
    version = write_manifest_version(new, log, world.manifest_path, tmp_path / "v2")
    ids = world.manifest["image_id"]
    logged = pd.read_csv(version.changes)
    assert logged[["image_id", "tag", "old", "new", "kind"]].values.tolist() == [
        [ids[0], "beach", "unknown", "negative", "reviewed"],
        [ids[1], "cat", "negative", "positive", "reviewed"],
        [ids[1], "animal", "negative", "positive", "implied"],
    ]
    assert logged["source"].str.startswith("labelstudio:export.json#task=").all()
    assert logged["reviewer"].astype(str).tolist() == ["3", "3", "3"]
    assert logged["decided_at"].tolist() == ["2026-12-01T10:00:00Z"] * 3
    info = json.loads(version.version.read_text())
    assert info["base_sha256"] == sha and info["changes"] == 3
    assert hash_file(world.manifest_path) == sha  # the base is not overwritten
    row = read_manifest(version.manifest).set_index("image_id").loc[ids[1]]
    assert set(row["tags"]) == {"cat", "animal"}
    assert [p["kind"] for p in row["provenance"] if p["tag"] == "cat"] == ["reviewed"]
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_manifest_version(new, log, world.manifest_path, tmp_path / "v2")


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_decisions_and_accept_reject_of_the_queue(tmp_path: Path) -> None:
    world, _ = world_and_queue(tmp_path)
    a, b, _c = world.manifest["image_id"]
    path = write_csv(
        tmp_path / "d.csv",
        "image_id,tag,decision,suggested,reviewer\n"
        f"{a},dog,reject,negative,ann\n"
        f"{b},cat,accept,positive,ann\n"
        f"{b},beach,no,,ann\n"
        f"{a},cat,skip,,ann\n"
        f"{a},beach,,,\n",
    )
    decisions = read_decisions_csv(path)
    assert decisions[["image_id", "tag", "new"]].values.tolist() == [
        [a, "dog", "positive"],
        [b, "cat", "positive"],
        [b, "beach", "negative"],
    ]
    assert decisions["source"].tolist() == ["csv:d.csv:2", "csv:d.csv:3", "csv:d.csv:4"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "ffffffffffffffff,dog,positive,",
            "d.csv:2: image_id 'ffffffffffffffff' is not in the manifest",
        ),
        (
            "{a},dgo,positive,",
            "d.csv:2: tag 'dgo' is not in taxonomy 'clean-test'; close matches: \\['dog'\\]",
        ),
        ("{a},dog,positive,{stale}", "d.csv:2: made against manifest sha256 0000"),
        ("{a},dog,maybe,", "d.csv:2: decision 'maybe'; allowed"),
        ("{a},dog,accept,", "d.csv:2: decision 'accept' needs a 'suggested' column"),
    ],
)
def test_import_errors_name_the_row(tmp_path: Path, row: str, message: str) -> None:
    world, _ = world_and_queue(tmp_path)
    a = world.manifest["image_id"][0]
    path = write_csv(
        tmp_path / "d.csv",
        "image_id,tag,decision,manifest_sha256\n" + row.format(a=a, stale="0" * 64) + "\n",
    )
    with pytest.raises(ReviewImportError, match=message):
        decisions = read_decisions_csv(path)
        check_decisions(decisions, world.manifest, world.taxonomy, hash_file(world.manifest_path))


def test_label_studio_export_errors(tmp_path: Path) -> None:
    world, queue = world_and_queue(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ReviewImportError, match="expected a JSON list"):
        read_label_studio_export(bad)
    bad.write_text(json.dumps([{"id": 5, "data": {"image": "x.jpg"}}]))
    with pytest.raises(ReviewImportError, match=r"task 5: no data\.image_id"):
        read_label_studio_export(bad)
    tasks = label_studio_tasks(queue, world.manifest, world.taxonomy, "f" * 64)
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(label_studio_export(tasks, [["dog"], []])))
    decisions = read_label_studio_export(stale)
    with pytest.raises(ReviewImportError, match=r"stale\.json: task 100: made against manifest"):
        check_decisions(decisions, world.manifest, world.taxonomy, hash_file(world.manifest_path))
