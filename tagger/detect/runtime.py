"""Detector evidence at prediction time: classifier probs -> (gate) -> detector on the images
that need it -> fused probs, which cells used detector evidence, and the boxes.

Built from what a model bundle stores (`detector.json` as `bundle_detector_settings` writes
it, plus the detector weights), so it does not depend on the bundle module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from tagger.data.images import ImageError
from tagger.detect.backends import load_detector
from tagger.detect.detections import Detections, Detector, DetectorConfig
from tagger.detect.evidence import (
    decode_for_detector,
    detect_images,
    detector_side,
    evidence_features,
    to_original,
)
from tagger.detect.fusion import FusionModel, GateMode, apply_fusion, gate_mask


def bundle_detector_settings(
    architecture: dict[str, Any], config: DetectorConfig, fusion: FusionModel
) -> dict[str, Any]:
    """What a bundle's `detector.json` holds (the weights travel beside it)."""
    return {
        "architecture": architecture,
        "config": config.model_dump(mode="json"),
        "fusion": fusion.to_dict(),
    }


def decode_side(settings: dict[str, Any], gate: GateMode | None = None) -> int | None:
    """The shorter side decode workers hand the detector a copy of each photo at (see
    `tagger.inference.decoding.decode_input`), for a bundle's `detector.json` and a job's gate
    (None: the bundle's own); None when the detector never runs."""
    if (gate or settings["fusion"].get("gate", "gated")) == "never":
        return None
    config = DetectorConfig.model_validate(settings["config"])
    return detector_side(config.image_size, config.tiling)


@dataclass(frozen=True)
class DetectorView:
    """A photo decoded for the detector: uint8 `pixels [H, W, 3]` (shorter side about the
    detector's decode side, aspect kept) and the displayed `width`, `height` of the original."""

    pixels: np.ndarray
    width: int
    height: int


@dataclass
class FusedScores:
    """probs `[B, T]` after fusion; `detector_cells` bool `[B, T]` (scored with detector
    evidence); `ran` bool `[B]`; detections per image (None where the detector did not run)."""

    probs: np.ndarray
    detector_cells: np.ndarray
    ran: np.ndarray
    detections: list[Detections | None]


class DetectorRuntime:
    """Applies a bundle's detector and fusion to classifier probabilities of image files."""

    def __init__(
        self,
        settings: dict[str, Any],
        weights: dict[str, Tensor],
        taxonomy_tag_ids: tuple[str, ...],
        *,
        gate: GateMode | None = None,
        device: str = "cpu",
    ) -> None:
        self.config = DetectorConfig.model_validate(settings["config"]).model_copy(
            update={"device": device}
        )
        fusion = FusionModel.from_dict(settings["fusion"])
        self.fusion = fusion if gate is None else FusionModel(fusion.tags, gate, fusion.features)
        self.detector: Detector = load_detector(
            settings["architecture"], weights, taxonomy_tag_ids, self.config
        )
        self.detector.for_inference()
        self.columns = np.asarray(
            [taxonomy_tag_ids.index(t) for t in self.fusion.tag_ids], dtype=np.int64
        )

    def __call__(
        self,
        probs: np.ndarray,
        paths: Sequence[str],
        views: Sequence[DetectorView | None] | None = None,
    ) -> FusedScores:
        """Fuse `probs [B, T]` of the images at `paths`, running the detector where the gate
        says: on `views[i]` when the decode worker made one, else on the file decoded again."""
        run = gate_mask(self.fusion, probs, self.columns)
        found: list[Detections | None] = [None] * len(paths)
        picked: list[tuple[int, Image.Image, int, int]] = []  # (row, image, original w, h)
        for i in np.flatnonzero(run).tolist():
            view = views[i] if views is not None else None
            if view is not None:
                picked.append((i, Image.fromarray(view.pixels), view.width, view.height))
                continue
            try:
                picked.append((i, *decode_for_detector(paths[i], self.config.image_size,
                                                       self.config.tiling)))  # fmt: skip
            except ImageError:
                run[i] = False
        images = [image for _, image, _, _ in picked]
        for (i, image, width, height), det in zip(
            picked, detect_images(self.detector, images, self.config.tiling), strict=True
        ):
            found[i] = to_original(det, image, width, height)
        features = evidence_features(probs, found, self.columns)
        fused, cells = apply_fusion(self.fusion, probs, features, run, self.columns)
        return FusedScores(fused, cells, run, found)
