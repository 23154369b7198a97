"""Tests for tagger/readers/ade20k.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.data.readers.ade20k import compute_mask_stats, read_ade20k
from tagger.data.sources import EXPLICIT_UNKNOWN, SourceTable


def golden_mask() -> np.ndarray:
    """10x10: class 1 fills rows 0-4, class 3 is a 2x3 block, 255 pads the last two rows."""
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0:5, :] = 1
    mask[6:8, 2:5] = 3
    mask[8:, :] = 255
    return mask


def test_mask_stats_golden_values() -> None:
    stats = compute_mask_stats(golden_mask())
    assert list(stats.classes) == [1, 3]
    assert list(stats.pixels) == [50, 6]
    assert stats.labelled == 56 and stats.invalid == 0
    # class 3: columns 2..4, rows 6..7 -> (0.2, 0.6, 0.5, 0.8) with exclusive ends
    np.testing.assert_allclose(stats.boxes, [[0.0, 0.0, 1.0, 0.5], [0.2, 0.6, 0.5, 0.8]])


def test_mask_stats_of_an_unlabelled_mask_and_invalid_values() -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0] = 200
    stats = compute_mask_stats(mask, num_classes=150)
    assert len(stats.classes) == 0 and stats.boxes.shape == (0, 4)
    assert stats.labelled == 0 and stats.invalid == 1
    with pytest.raises(ValueError, match="uint8"):
        compute_mask_stats(mask.astype(np.int32))


@pytest.fixture
def ade_root(tmp_path: Path, write_jpeg: Callable[..., Path]) -> Path:
    (tmp_path / "annotations").mkdir()
    for stem in ("ADE_val_1", "ADE_val_2", "ADE_val_3"):
        write_jpeg(tmp_path / "images" / f"{stem}.jpg", (10, 10))
    Image.fromarray(golden_mask(), mode="L").save(tmp_path / "annotations" / "ADE_val_1.png")
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "annotations" / "ADE_val_2.png")
    # ADE_val_3 has no label map; ADE_val_9 has a label map but no image
    Image.fromarray(golden_mask(), mode="L").save(tmp_path / "annotations" / "ADE_val_9.png")
    (tmp_path / "sceneCategories.txt").write_text(
        "ADE_train_1 bedroom\nADE_val_1 kitchen\nbroken line here\n"
    )
    return tmp_path


def labels_of(table: SourceTable, key: str, vocabulary: str) -> dict[str, int]:
    rows = table.labels[
        (table.labels["image_key"] == key) & (table.labels["vocabulary"] == vocabulary)
    ]
    return dict(zip(rows["label"], rows["value"], strict=True))


def test_small_classes_are_explicitly_unknown_and_scenes_are_read(ade_root: Path) -> None:
    # class 3 covers 6 / 56 labelled pixels = 0.107
    table = read_ade20k(ade_root, min_pixel_fraction=0.2, workers=1)
    assert list(table.images["image_key"]) == ["ADE_val_1"]
    assert table.images["mask_path"][0] == str(ade_root / "annotations" / "ADE_val_1.png")
    assert labels_of(table, "ADE_val_1", "ade20k_objects") == {"1": 1, "3": EXPLICIT_UNKNOWN}
    assert labels_of(table, "ADE_val_1", "ade20k_scenes") == {"kitchen": 1}
    assert list(table.boxes["label"]) == ["1", "3"]
    np.testing.assert_allclose(table.boxes["pixel_fraction"], [50 / 56, 6 / 56], rtol=1e-6)
    loose = read_ade20k(ade_root, min_pixel_fraction=0.1)
    assert labels_of(loose, "ADE_val_1", "ade20k_objects") == {"1": 1, "3": 1}


def test_unusable_files_are_problems(ade_root: Path) -> None:
    problems = {(Path(p.file).name, p.reason.split(";")[0]) for p in read_ade20k(ade_root).problems}
    assert problems == {
        ("sceneCategories.txt", "expected '<image id> <scene>', got 'broken line here'"),
        ("ADE_val_9.png", "label map without an image"),
        ("ADE_val_3.jpg", "image without a label map in annotations/"),
        ("ADE_val_2.png", "label map mode is RGB, expected 8-bit single channel (L or P)"),
    }


def test_bad_threshold_and_missing_folders_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"min_pixel_fraction=1\.5"):
        read_ade20k(tmp_path, min_pixel_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="ADE20K images folder not found"):
        read_ade20k(tmp_path)


def test_real_ade20k(shared_data: Path) -> None:
    start = time.perf_counter()
    table = read_ade20k(shared_data / "ade20k")
    seconds = time.perf_counter() - start
    assert len(table.images) == 1410 and table.problems == []
    scenes = table.labels[table.labels["vocabulary"] == "ade20k_scenes"]
    assert len(scenes) == 1410 and scenes["image_key"].is_unique
    objects = table.labels[table.labels["vocabulary"] == "ade20k_objects"]
    positives = objects[objects["value"] == 1]["label"].value_counts()
    assert positives.index[0] == "1"  # wall is the most common class
    assert set(objects["label"].astype(int)) <= set(range(1, 151))
    assert (objects["value"] == EXPLICIT_UNKNOWN).any()
    assert len(table.boxes) == len(objects)
    assert seconds < 20  # a few seconds on two cores; generous for a shared machine
