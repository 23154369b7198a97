"""Tiny synthetic detection data: red squares ("dog") at known places on noise, as a manifest
the detect stage reads, and a deterministic colour detector for coordinate tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from label_system.taxonomy import Taxonomy
from tagger.detect.detections import Backend, Detections


def red_square_image(
    width: int, height: int, box: tuple[int, int, int, int] | None, rng: np.random.Generator
) -> Image.Image:
    pixels = rng.integers(60, 140, size=(height, width, 3), dtype=np.uint8)
    pixels[..., 0] //= 2  # little red in the background
    if box is not None:
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = (250, 10, 10)
    return Image.fromarray(pixels)


def write_detection_manifest(
    root: Path, n: int = 12, size: int = 64, seed: int = 0
) -> pd.DataFrame:
    """`n` images, two thirds with one red square ("dog", boxed, known), the rest known
    negatives for dog; folds 0..2 round robin; "cat" is unknown everywhere."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        has = i % 3 != 2
        box = None
        if has:
            side = int(rng.integers(size // 5, size // 3))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
            box = (x0, y0, x0 + side, y0 + side)
        path = root / f"img{i}.png"
        red_square_image(size, size, box, rng).save(path)
        boxes = []
        if box is not None:
            boxes.append({"tag": "dog", "source_label": "dog", "xmin": box[0] / size,
                          "ymin": box[1] / size, "xmax": box[2] / size, "ymax": box[3] / size,
                          "difficult": False})  # fmt: skip
        rows.append({
            "image_id": f"s:{i}", "path": str(path), "content_hash": "", "width": size,
            "height": size, "source": "s", "sources": ["s"],
            "tags": ["dog", "animal"] if has else [], "known": ["dog", "animal"],
            "provenance": [], "boxes": boxes, "mask_path": None, "fold": i % 3,
        })  # fmt: skip
    return pd.DataFrame(rows)


class RedDetector:
    """Finds the bounding box of strongly red pixels (score 0.9) as tag column `column`."""

    backend: Backend = "ssd"

    def __init__(self, taxonomy: Taxonomy, tag: str = "dog") -> None:
        self.tag_ids = (tag,)
        self.taxonomy_tag_ids = taxonomy.tag_ids
        self.column = taxonomy.index(tag)
        self.calls: list[tuple[int, int]] = []  # image sizes, in the order seen
        self.batches: list[int] = []  # images per detect call

    def detect(self, images: list[Image.Image]) -> list[Detections]:
        self.batches.append(len(images))
        out = []
        for im in images:
            self.calls.append(im.size)
            a = np.asarray(im.convert("RGB")).astype(int)
            red = (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)
            if not red.any():
                out.append(Detections.empty(im.width, im.height))
                continue
            ys, xs = np.nonzero(red)
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
            out.append(Detections(box, np.array([0.9], np.float32),
                                  np.array([self.column]), im.width, im.height))  # fmt: skip
        return out

    def for_inference(self) -> None:  # nothing to fold
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def architecture(self) -> dict[str, Any]:
        return {}
