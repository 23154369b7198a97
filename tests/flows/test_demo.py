"""The main command's own parts: the album of new demo scenes and the final report."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from flows.demo import main, write_album


def test_write_album_draws_new_scenes_with_their_tags(tmp_path: Path) -> None:
    truth = write_album(tmp_path / "album", 3, size=96)
    assert sorted(truth) == ["photo_00.jpg", "photo_01.jpg", "photo_02.jpg"]
    assert all(tags for tags in truth.values())
    with Image.open(tmp_path / "album" / "photo_00.jpg") as image:
        assert image.size == (96, 72)
    assert write_album(tmp_path / "again", 3, size=96) == truth, "deterministic for a seed"


@pytest.mark.slow
def test_main_runs_the_whole_loop_on_a_small_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([
        "--work-dir", str(tmp_path / "work"), "--images", "2",
        "--set", "demo={size: 64, coco: 20, voc: 10, openimages: 10, keywords: 10, internal: 10}",
        "--set", "train.model.image_size=32", "--set", "train.schedule.epochs=1",
        "--set", "calibrate.min_positives=1", "--set", "calibrate.min_negatives=1",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert "models:/tagger/1 (promoted to @champion" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert (tmp_path / "work" / "album_tags.jsonl").read_text().count("\n") == 2
