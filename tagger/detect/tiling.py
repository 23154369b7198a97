"""SAHI-style tiling: overlapping slices of a large image, boxes merged back with NMS."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import batched_nms

from tagger.detect.detections import Detections


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)  # the last slice ends at the border
    return starts


def tile_windows(
    width: int, height: int, tile: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """Slices (left, top, right, bottom) of `tile` pixels (clipped to the image) covering it,
    neighbours overlapping by `overlap` of a tile, row by row."""
    if tile < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile must be >= 1 and overlap in [0, 1), got {tile}, {overlap}")
    step = max(1, round(tile * (1.0 - overlap)))
    return [
        (x, y, min(x + tile, width), min(y + tile, height))
        for y in _starts(height, tile, step)
        for x in _starts(width, tile, step)
    ]


def merge_tiles(
    parts: list[Detections],
    offsets: list[tuple[int, int]],
    width: int,
    height: int,
    iou: float,
) -> Detections:
    """Boxes of each part shifted by its (left, top) offset into the full image, then per-tag
    NMS at `iou` (a box seen in two slices, or in a slice and the whole image, is kept once,
    with its best score)."""
    if len(parts) != len(offsets):
        raise ValueError(f"{len(parts)} parts but {len(offsets)} offsets")
    shifted = [
        p.boxes + np.array([dx, dy, dx, dy], dtype=np.float32)
        for p, (dx, dy) in zip(parts, offsets, strict=True)
    ]
    boxes = np.concatenate(shifted) if shifted else np.zeros((0, 4), np.float32)
    scores = np.concatenate([p.scores for p in parts]) if parts else np.zeros(0, np.float32)
    tags = np.concatenate([p.tags for p in parts]) if parts else np.zeros(0, np.int64)
    if len(scores) == 0:
        return Detections.empty(width, height)
    keep = batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(tags), iou
    ).numpy()
    limits = np.array([width, height, width, height], dtype=np.float32)
    return Detections(
        np.clip(boxes[keep], 0, limits).astype(np.float32),
        scores[keep].astype(np.float32),
        tags[keep].astype(np.int64),
        width,
        height,
    )
