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
from torch import Tensor

from tagger.data.images import ImageError
from tagger.detect.backends import load_detector
from tagger.detect.detections import Detections, Detector, DetectorConfig
from tagger.detect.evidence import decode_for_detector, detect_image, evidence_features
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
        self.columns = np.asarray(
            [taxonomy_tag_ids.index(t) for t in self.fusion.tag_ids], dtype=np.int64
        )

    def __call__(self, probs: np.ndarray, paths: Sequence[str]) -> FusedScores:
        """Fuse `probs [B, T]` of the images at `paths` (decoded again for the detector,
        reduced scale, only where the gate says)."""
        run = gate_mask(self.fusion, probs, self.columns)
        found: list[Detections | None] = [None] * len(paths)
        for i in np.flatnonzero(run):
            try:
                image, width, height = decode_for_detector(
                    paths[int(i)], self.config.image_size, self.config.tiling
                )
            except ImageError:
                run[i] = False
                continue
            det = detect_image(self.detector, image, self.config.tiling)
            found[i] = det.scaled(width / image.width, height / image.height, width, height)
        features = evidence_features(probs, found, self.columns)
        fused, cells = apply_fusion(self.fusion, probs, features, run, self.columns)
        return FusedScores(fused, cells, run, found)
