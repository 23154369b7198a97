"""What every detector returns (`Detections`), the interface both backends share (`Detector`),
and the detector's typed settings (`DetectorConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["ssd", "yolo"]
SSD_ARCHITECTURES = ("ssdlite320_mobilenet_v3_large", "ssd300_vgg16", "ssd_tiny")


@dataclass(frozen=True)
class Detections:
    """Boxes of one image.

    boxes: float32 `[K, 4]` xmin, ymin, xmax, ymax in pixels of the image as displayed (after
        EXIF orientation) at its original size; scores: float32 `[K]` in 0..1; tags: int64 `[K]`
        column indices into the taxonomy's tag ids. width/height: that image's size.
    """

    boxes: np.ndarray
    scores: np.ndarray
    tags: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        k = len(self.scores)
        if self.boxes.shape != (k, 4) or self.tags.shape != (k,):
            raise ValueError(
                f"detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"tags {self.tags.shape}; expected [K, 4], [K], [K]"
            )

    @classmethod
    def empty(cls, width: int, height: int) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            width,
            height,
        )

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, sx: float, sy: float, width: int, height: int) -> Detections:
        """The same boxes in an image `sx`, `sy` times larger (clipped to width x height)."""
        boxes = self.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        boxes = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))
        return Detections(boxes.astype(np.float32), self.scores, self.tags, width, height)


class Detector(Protocol):
    """A trained detector over some of the taxonomy's tags.

    `tag_ids`: the tags it covers (class i+1 of the network is `tag_ids[i]`; 0 = background).
    `detect(images)`: RGB images -> one `Detections` per image, boxes in that image's pixels,
    `tags` already as indices into `taxonomy_tag_ids`.
    """

    backend: Backend
    tag_ids: tuple[str, ...]
    taxonomy_tag_ids: tuple[str, ...]

    def detect(self, images: list[Image.Image]) -> list[Detections]: ...

    def for_inference(self) -> None:
        """Prediction only, from now on: BatchNorm folded into the convolutions, channels-last
        (faster on CPU); `state_dict` refuses afterwards (save before)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def architecture(self) -> dict[str, Any]: ...


class TilingConfig(BaseModel):
    """SAHI-style slicing: overlapping `tile` x `tile` slices (pixels of the decoded image) plus
    the whole image, boxes merged back with per-tag NMS. Only images whose longer side exceeds
    `min_image_side` are sliced; such images decode with their shorter side at `decode_side`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    tile: int = Field(default=320, ge=32)
    overlap: float = Field(default=0.2, ge=0.0, lt=0.9)
    decode_side: int = Field(default=640, ge=32)
    min_image_side: int = Field(default=480, ge=32)
    nms_iou: float = Field(default=0.5, gt=0.0, le=1.0)


class GateConfig(BaseModel):
    """When the detector runs at prediction time: "always", "never", or "gated" (only on images
    where some fused tag's classifier score lies inside its band learned on held-out data,
    the narrowest band keeping `keep_gain` of the tag's held-out AP gain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["always", "gated", "never"] = "gated"
    keep_gain: float = Field(default=0.95, ge=0.0, le=1.0)


class DetectorTraining(BaseModel):
    """Detector training settings (CPU-small defaults; raise them for real data)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=10, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many steps")
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = 0
    hflip: bool = True


class DetectorConfig(BaseModel):
    """The detector stage: backend and architecture, which tags it covers, training, tiling,
    gating, and the fusion fallback rule.

    tags: tag ids the detector covers; None = the taxonomy's `small_object` tags that have boxes
    in the training data. image_size: the network's input side (SSD resizes to a square, YOLO
    letterboxes). weights: a local weights file to start from (safetensors; a pickle only with
    `trust_pickle`); `hub_weights` names Ultralytics hub weights (downloads: only when asked).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    backend: Backend = "ssd"
    architecture: str = "ssdlite320_mobilenet_v3_large"
    yolo_model: str = "yolo11n.yaml"
    tags: tuple[str, ...] | None = None
    image_size: int = Field(default=320, ge=32)
    score_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    max_detections: int = Field(default=100, ge=1)
    weights: str | None = None
    hub_weights: str | None = None
    trust_pickle: bool = False
    training: DetectorTraining = DetectorTraining()
    tiling: TilingConfig = TilingConfig()
    gate: GateConfig = GateConfig()
    fusion_min_positives: int = Field(default=10, ge=2)
    device: str = "cpu"

    @model_validator(mode="after")
    def _check_architecture(self) -> DetectorConfig:
        if self.backend == "ssd" and self.architecture not in SSD_ARCHITECTURES:
            raise ValueError(
                f"detector.architecture {self.architecture!r} is not an SSD; allowed with "
                f"backend 'ssd': {list(SSD_ARCHITECTURES)}"
            )
        if self.backend == "yolo" and not self.yolo_model.endswith((".yaml", ".yml")):
            raise ValueError(
                f"detector.yolo_model {self.yolo_model!r}: give an architecture YAML such as "
                "'yolo11n.yaml' (weights go in detector.weights or detector.hub_weights)"
            )
        return self
