"""`tagger clean` and `tagger review export|import` through the command line entry point."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tagger.cli import main
from tagger.data.manifest import read_manifest
from tests.tagger.clean.fixtures import write_oof
from tests.tagger.clean.test_job import animal_world


def test_clean_then_review_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world, probs = animal_world(tmp_path)
    oof = write_oof(world, probs)
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(yaml.safe_dump(world.taxonomy.to_dict()))
    out = tmp_path / "clean"
    code = main(
        [
            "clean", str(world.manifest_path), str(oof), "--output-dir", str(out),
            "--taxonomy", str(taxonomy), "--max-per-tag", "3",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "issues:" in printed and "label context: on, out of folds" in printed
    queue = pd.read_csv(out / "queue.csv")
    assert queue.groupby("tag").size().max() <= 3
    code = main(
        ["review", "export", str(out), "--output-dir", str(tmp_path / "r"), "--top", "2",
         "--taxonomy", str(taxonomy), "--thumbnails", "relative"]
    )  # fmt: skip
    assert code == 0 and (tmp_path / "r" / "label_studio_tasks.json").is_file()
    queue["decision"] = "accept"
    queue.to_csv(out / "decided.csv", index=False)
    args = ["review", "import", str(out / "decided.csv"), "--manifest", str(world.manifest_path),
            "--output-dir", str(tmp_path / "v2"), "--taxonomy", str(taxonomy)]  # fmt: skip
    assert main(args) == 0
    new = read_manifest(tmp_path / "v2" / "manifest.parquet")
    log = pd.read_csv(tmp_path / "v2" / "changes.csv")
    assert len(log) >= len(queue) and (log["kind"].isin(["reviewed", "implied"])).all()
    assert not new.equals(world.manifest)
    # a second import into the same folder is refused: versions are never overwritten
    assert main(args) == 2
    assert "already holds a manifest version" in capsys.readouterr().err


def test_label_context_can_be_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world, probs = animal_world(tmp_path)
    out, taxonomy = tmp_path / "clean", tmp_path / "taxonomy.yaml"
    taxonomy.write_text(yaml.safe_dump(world.taxonomy.to_dict()))
    args = ["clean", str(world.manifest_path), str(write_oof(world, probs)), "--output-dir",
            str(out), "--taxonomy", str(taxonomy), "--no-label-context"]  # fmt: skip
    assert main(args) == 0 and "label context: off (config)" in capsys.readouterr().out
    issues = pd.read_parquet(out / "issues.parquet")
    assert (issues["prob"] == issues["image_prob"]).all()


def test_arguments_are_checked_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["clean", str(tmp_path / "none.parquet"), "x", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no such file" in capsys.readouterr().err
    existing = tmp_path / "m.parquet"
    existing.write_bytes(b"")
    with pytest.raises(SystemExit):
        main(["clean", str(existing), str(existing), "--output-dir", "o", "--min-confidence", "2"])
    assert "outside 0..1" in capsys.readouterr().err
    code = main(
        ["clean", str(existing), str(existing), "--output-dir", "o", "--api-json", str(existing)]
    )
    assert code == 2 and "--api-json and --api-images go together" in capsys.readouterr().err
