"""Box coordinates in original-image pixels: EXIF orientation, reduced decode, tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.detect.detections import Detections, TilingConfig
from tagger.detect.evidence import (
    FEATURES,
    detect_image,
    detect_images,
    detect_paths,
    evidence_features,
)
from tagger.detect.tiling import merge_tiles, tile_windows
from tests.tagger.bundle_fixtures import tiny_taxonomy
from tests.tagger.detect.fixtures import RedDetector, red_square_image
from tests.tagger.image_corpus import write_oriented_jpeg


def test_tile_windows_cover_the_image_with_overlap() -> None:
    windows = tile_windows(1000, 600, 320, 0.25)
    covered = np.zeros((600, 1000), bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 <= 320 and y1 - y0 <= 320
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert windows[0] == (0, 0, 320, 320) and windows[-1][2:] == (1000, 600)
    assert tile_windows(100, 80, 320, 0.2) == [(0, 0, 100, 80)]
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(100, 100, 32, 1.0)


def test_merge_tiles_shifts_boxes_and_suppresses_duplicates() -> None:
    box = np.array([[10, 10, 30, 30]], np.float32)
    a = Detections(box, np.array([0.8], np.float32), np.array([2]), 50, 50)
    b = Detections(box - 5, np.array([0.6], np.float32), np.array([2]), 50, 50)  # same object
    c = Detections(box, np.array([0.7], np.float32), np.array([3]), 50, 50)  # another tag
    merged = merge_tiles([a, b, c], [(100, 0), (105, 5), (0, 0)], 300, 200, iou=0.5)
    order = np.argsort(-merged.scores)
    assert merged.boxes[order].tolist() == [[110, 10, 130, 30], [10, 10, 30, 30]]
    assert merged.tags[order].tolist() == [2, 3]
    assert len(merge_tiles([], [], 10, 10, 0.5)) == 0


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_boxes_are_in_displayed_original_pixels_under_exif_rotation(
    tmp_path: Path, orientation: int
) -> None:
    # displayed 400x240 with the object at (300, 40)-(360, 100); stored rotated per EXIF
    image = red_square_image(400, 240, (300, 40, 360, 100), np.random.default_rng(0))
    path = tmp_path / f"o{orientation}.jpg"
    write_oriented_jpeg(path, image, orientation)
    detector = RedDetector(tiny_taxonomy())
    (found,) = detect_paths(detector, [str(path)], 60, TilingConfig())
    assert found is not None and (found.width, found.height) == (400, 240)
    assert detector.calls[0][0] < 400  # decoded reduced, mapped back
    np.testing.assert_allclose(found.boxes[0], [300, 40, 360, 100], atol=8)


def test_tiling_finds_a_small_object_in_a_large_photo_at_its_place(tmp_path: Path) -> None:
    image = red_square_image(1600, 1200, (1210, 830, 1240, 860), np.random.default_rng(1))
    path = tmp_path / "big.jpg"
    write_oriented_jpeg(path, image, 6)  # stored 1200x1600, displayed 1600x1200
    detector = RedDetector(tiny_taxonomy())
    tiling = TilingConfig(enabled=True, tile=200, overlap=0.25, decode_side=600, min_image_side=300)
    (found,) = detect_paths(detector, [str(path)], 100, tiling)
    assert found is not None and len(found) == 1  # seen in several slices, merged to one
    assert len(detector.calls) > 1 and max(detector.calls[1]) <= 200
    np.testing.assert_allclose(found.boxes[0], [1210, 830, 1240, 860], atol=10)


def test_unreadable_image_gives_none(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert detect_paths(RedDetector(tiny_taxonomy()), [str(bad)], 64, TilingConfig()) == [None]


def test_evidence_features_golden_values() -> None:
    tax = tiny_taxonomy()
    probs = np.array([[0.5, 0.8, 0.2, 0.1], [0.5, 0.5, 0.5, 0.5]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 50, 20], [0, 0, 5, 5]], np.float32)
    det = Detections(boxes, np.array([0.9, 0.3, 0.1], np.float32), np.array([1, 1, 2]), 100, 100)
    f = evidence_features(probs, [det, None], [tax.index("dog"), tax.index("cat")])
    assert f.shape == (2, 2, len(FEATURES))
    np.testing.assert_allclose(f[0, 0], [np.log(4), 0.9, np.log(3), 0.1], rtol=1e-5)
    np.testing.assert_allclose(f[0, 1], [np.log(0.25), 0.1, 0.0, 0.0], rtol=1e-5)
    np.testing.assert_allclose(f[1, :, 1:], 0.0)


def test_detections_check_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        Detections(np.zeros((2, 4), np.float32), np.zeros(1, np.float32), np.zeros(1), 1, 1)
    assert len(Detections.empty(3, 4)) == 0
    assert isinstance(Image.new("RGB", (1, 1)), Image.Image)


def test_detect_images_batches_untiled_images_and_slices_the_rest() -> None:
    rng = np.random.default_rng(2)
    images = [
        red_square_image(200, 120, (150, 20, 180, 50), rng),
        red_square_image(900, 600, (700, 400, 730, 430), rng),  # sliced
        red_square_image(160, 160, None, rng),
    ]
    tiling = TilingConfig(enabled=True, tile=300, overlap=0.2, min_image_side=400)
    detector = RedDetector(tiny_taxonomy())
    batched = detect_images(detector, images, tiling)
    assert detector.batches[0] == 2 and detector.calls[:2] == [(200, 120), (160, 160)]
    one_by_one = [detect_image(RedDetector(tiny_taxonomy()), im, tiling) for im in images]
    for a, b in zip(batched, one_by_one, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes)
        assert (a.width, a.height) == (b.width, b.height)
