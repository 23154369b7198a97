"""Detector quality on held-out images (AP at IoU 0.5 per class, on covering images only) and
pictures of boxes for review."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from tagger.detect.detections import Detections
from tagger.detect.targets import BoxTargets

IOU = 0.5


def _ap(scores: np.ndarray, hits: np.ndarray, n_true: int) -> float:
    """All-point interpolated AP (VOC 2010+) of detections sorted by score."""
    if n_true == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - prev) * envelope))


def average_precision_50(
    detections: Sequence[Detections | None],
    targets: BoxTargets,
    taxonomy_tag_ids: Sequence[str],
) -> dict[str, float]:
    """AP50 per detector tag over the images that cover it (NaN without true boxes); images
    without detections (None: not decodable) count their true boxes as missed."""
    column = {t: i for i, t in enumerate(taxonomy_tag_ids)}
    out: dict[str, float] = {}
    for c, tag in enumerate(targets.tag_ids):
        col = column[tag]
        scores: list[np.ndarray] = []
        hits: list[np.ndarray] = []
        n_true = 0
        for i, det in enumerate(detections):
            if not targets.covered[i, c]:
                continue
            true = targets.boxes[i][targets.classes[i] == c]
            n_true += len(true)
            if det is None:
                continue
            mine = det.tags == col
            found, conf = det.boxes[mine], det.scores[mine]
            hit = np.zeros(len(conf), dtype=bool)
            if len(true) and len(conf):
                scale = np.array([det.width, det.height, det.width, det.height], np.float32)
                iou = box_iou(torch.from_numpy(found), torch.from_numpy(true * scale)).numpy()
                taken = np.zeros(len(true), dtype=bool)
                for k in np.argsort(-conf, kind="stable"):
                    j = int(np.argmax(np.where(taken, -1.0, iou[k])))
                    if not taken[j] and iou[k, j] >= IOU:
                        taken[j], hit[k] = True, True
            scores.append(conf)
            hits.append(hit)
        all_scores = np.concatenate(scores) if scores else np.zeros(0)
        all_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
        out[tag] = _ap(all_scores, all_hits, n_true)
    return out


def mean_ap50(per_tag: dict[str, float]) -> float:
    values = [v for v in per_tag.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def draw_detections(
    image: Image.Image, detections: Detections, names: Sequence[str], min_score: float = 0.25
) -> Image.Image:
    """A copy of `image` (the same size as the detections' frame) with boxes and labels."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for box, score, tag in zip(detections.boxes, detections.scores, detections.tags, strict=True):
        if score < min_score:
            continue
        draw.rectangle(tuple(float(v) for v in box), outline=(255, 0, 0), width=2)
        draw.text(
            (float(box[0]) + 2, float(box[1]) + 1), f"{names[tag]} {score:.2f}", fill=(255, 0, 0)
        )
    return out
