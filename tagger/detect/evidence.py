"""Detector evidence for images on disk: reduced-scale decode (EXIF-oriented), optional
tiling, boxes in original-image pixels, and the per-tag features fusion reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from tagger.data.images import ImageError, load_reduced_info, shrink_shorter
from tagger.detect.detections import Detections, Detector, TilingConfig
from tagger.detect.tiling import merge_tiles, tile_windows

FEATURES = ("classifier_logit", "max_score", "box_count", "largest_area")
COUNT_SCORE = 0.25  # a box counts (and its area) from this confidence on
LOGIT_EPS = 1e-6
DETECT_BATCH = 16  # untiled images per detector call


def detect_image(detector: Detector, image: Image.Image, tiling: TilingConfig) -> Detections:
    """Boxes of one decoded image in its own pixels; slices it when tiling is on and the
    image's longer side exceeds `tiling.min_image_side`."""
    if not tiling.enabled or max(image.size) <= tiling.min_image_side:
        return detector.detect([image])[0]
    windows = tile_windows(image.width, image.height, tiling.tile, tiling.overlap)
    crops = [image] + [image.crop(w) for w in windows]
    parts = detector.detect(crops)
    offsets = [(0, 0)] + [(w[0], w[1]) for w in windows]
    return merge_tiles(parts, offsets, image.width, image.height, tiling.nms_iou)


def detect_images(
    detector: Detector, images: Sequence[Image.Image], tiling: TilingConfig
) -> list[Detections]:
    """`detect_image` for many images: those not to be sliced go through the detector
    `DETECT_BATCH` at a time, each image to be sliced on its own (with its tiles)."""
    out: list[Detections | None] = [None] * len(images)
    whole = [i for i, im in enumerate(images) if not _tiled(im, tiling)]
    for start in range(0, len(whole), DETECT_BATCH):
        part = whole[start : start + DETECT_BATCH]
        for i, found in zip(part, detector.detect([images[i] for i in part]), strict=True):
            out[i] = found
    for i, im in enumerate(images):
        if out[i] is None:
            out[i] = detect_image(detector, im, tiling)
    return [found for found in out if found is not None]


def _tiled(image: Image.Image, tiling: TilingConfig) -> bool:
    return tiling.enabled and max(image.size) > tiling.min_image_side


def detector_side(image_size: int, tiling: TilingConfig) -> int:
    """The shorter side a photo is decoded to for the detector: its input size, or
    `tiling.decode_side` when tiling."""
    return tiling.decode_side if tiling.enabled else image_size


def decode_for_detector(
    path: str, image_size: int, tiling: TilingConfig
) -> tuple[Image.Image, int, int]:
    """The image as displayed, reduced so its shorter side is about the detector's input (or
    `tiling.decode_side` when tiling), and its full displayed width and height."""
    side = detector_side(image_size, tiling)
    image, info = load_reduced_info(path, side)
    return shrink_shorter(image, side), info.width, info.height


def detect_paths(
    detector: Detector, paths: Sequence[str], image_size: int, tiling: TilingConfig
) -> list[Detections | None]:
    """Detections per path in original displayed pixels; None where the image fails to decode."""
    decoded: list[tuple[Image.Image, int, int] | None] = []
    for path in paths:
        try:
            decoded.append(decode_for_detector(path, image_size, tiling))
        except ImageError:
            decoded.append(None)
    ok = [d for d in decoded if d is not None]
    found = iter(detect_images(detector, [image for image, _, _ in ok], tiling))
    return [None if d is None else to_original(next(found), *d) for d in decoded]


def to_original(found: Detections, image: Image.Image, width: int, height: int) -> Detections:
    """Boxes found on a reduced `image` in the pixels of the `width` x `height` original."""
    return found.scaled(width / image.width, height / image.height, width, height)


def evidence_features(
    probs: np.ndarray, detections: Sequence[Detections | None], columns: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Fusion features float32 `[N, len(columns), 4]` (see FEATURES) for taxonomy columns.

    probs: classifier probs `[N, num_tags]`. For each image and tag: the classifier's logit,
    the highest box confidence (0 without boxes), log(1 + boxes with confidence >= COUNT_SCORE),
    and the area share of the largest such box. An image the detector did not see (None) has
    zero detector features.
    """
    cols = np.asarray(columns, dtype=np.int64)
    p = np.clip(probs[:, cols].astype(np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    out = np.zeros((len(probs), len(cols), len(FEATURES)), dtype=np.float32)
    out[:, :, 0] = np.log(p / (1 - p))
    where = {int(c): j for j, c in enumerate(cols)}
    for i, det in enumerate(detections):
        if det is None or len(det) == 0:
            continue
        area = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
        share = area / max(1.0, float(det.width * det.height))
        for k in range(len(det)):
            j = where.get(int(det.tags[k]))
            if j is None:
                continue
            out[i, j, 1] = max(out[i, j, 1], det.scores[k])
            if det.scores[k] >= COUNT_SCORE:
                out[i, j, 2] += 1
                out[i, j, 3] = max(out[i, j, 3], share[k])
    out[:, :, 2] = np.log1p(out[:, :, 2])
    return out
