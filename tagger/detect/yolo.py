"""The Ultralytics YOLO backend (the optional `detector` extra; Ultralytics is AGPL-3.0, so it
is imported only here, only when this backend is used).

Built from the architecture YAML (`yolo11n.yaml` by default: no download) and trained by our own
loop over Ultralytics' model and loss, not by its trainer: nothing goes to `runs/`, no plots,
fonts or datasets are fetched, and its MLflow/hub/sync callbacks never run. Before the first
import, `YOLO_OFFLINE=true` (no online checks) and `YOLO_CONFIG_DIR` (where its settings file
goes: a folder we choose) are set unless the caller set them; then every integration in its
settings is switched off. The YOLO loss (per-class BCE) cannot leave a class out per image, so
only images that cover every detector class train it (`BoxTargets.covering_all`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from tagger.detect.detections import Backend, Detections, DetectorConfig
from tagger.detect.targets import BoxTargets
from tagger.detect.training_data import Batch, TrainingImages, optimize
from tagger.detect.weights import read_state_dict

DEFAULT_CONFIG_DIR = Path.home() / ".cache" / "album-tagger" / "ultralytics"
OFF_SETTINGS = ("sync", "hub", "mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard",
                "wandb", "neptune", "vscode_msg", "openvino_msg")  # fmt: skip
NMS_IOU = 0.45


def import_ultralytics(config_dir: Path | None = None) -> ModuleType:
    """Import Ultralytics offline with its integrations off; a clear error without the extra.

    The environment variables are set (only when unset) before the first import because
    Ultralytics reads them at import time and nowhere else.
    """
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir or DEFAULT_CONFIG_DIR))
    try:
        import ultralytics
        from ultralytics.utils import SETTINGS
    except ImportError as err:
        raise ImportError(
            "detector.backend 'yolo' needs Ultralytics (AGPL-3.0): pip install "
            "'album-tagger[detector]', or use backend 'ssd'"
        ) from err
    SETTINGS.update({k: False for k in OFF_SETTINGS if k in SETTINGS})
    return ultralytics


def create_yolo(model_yaml: str, num_classes: int) -> nn.Module:
    """An untrained Ultralytics DetectionModel from its YAML (e.g. "yolo11n.yaml")."""
    import_ultralytics()
    from ultralytics.cfg import DEFAULT_CFG, get_cfg
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg=model_yaml, nc=num_classes, verbose=False)
    model.args = get_cfg(DEFAULT_CFG)  # type: ignore[assignment]  # the loss gains (box, cls, dfl) its criterion reads
    return model


def load_matching(model: nn.Module, state: dict[str, Tensor]) -> int:
    """Load the tensors of `state` whose name and shape match (a checkpoint trained on other
    classes keeps its backbone); returns how many were loaded."""
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return len(matched)


def hub_state_dict(name: str, *, trust_pickle: bool) -> dict[str, Tensor]:
    """Weights of a published Ultralytics model (e.g. "yolo11n.pt"): downloads, so only when the
    user asks (`detector.hub_weights`) and allows it (YOLO_OFFLINE=false in the environment)."""
    import_ultralytics()
    if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ValueError(
            f"detector.hub_weights {name!r} needs a download, and YOLO_OFFLINE is true; set "
            "YOLO_OFFLINE=false to allow it, or give a local file in detector.weights"
        )
    from ultralytics.utils.downloads import attempt_download_asset

    return read_state_dict(attempt_download_asset(name), trust_pickle=trust_pickle)


class YoloDetector:
    """A trained YOLO over `tag_ids` (class i = tag_ids[i]); see `Detector`. Inputs are squashed
    to `image_size` squares, boxes scaled back to each image's pixels."""

    backend: Backend = "yolo"

    def __init__(
        self,
        model: nn.Module,
        tag_ids: tuple[str, ...],
        taxonomy_tag_ids: tuple[str, ...],
        config: DetectorConfig,
    ) -> None:
        self.model = model.eval()
        self.tag_ids = tuple(tag_ids)
        self.taxonomy_tag_ids = tuple(taxonomy_tag_ids)
        self.config = config
        index = {t: i for i, t in enumerate(taxonomy_tag_ids)}
        self._columns = np.array([index[t] for t in self.tag_ids], dtype=np.int64)
        self.inference_only = False

    def architecture(self) -> dict[str, Any]:
        return {
            "backend": "yolo",
            "architecture": self.config.yolo_model,
            "num_classes": len(self.tag_ids),
            "image_size": self.config.image_size,
            "tag_ids": list(self.tag_ids),
        }

    def state_dict(self) -> dict[str, Tensor]:
        if self.inference_only:
            raise RuntimeError("this detector's BatchNorm is folded (for_inference); save first")
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def for_inference(self) -> None:
        """See `Detector.for_inference` (Ultralytics' own Conv+BatchNorm fusion)."""
        self.model.eval().fuse(verbose=False)  # type: ignore[operator]
        self.model.to(memory_format=torch.channels_last)
        self.inference_only = True

    @torch.inference_mode()
    def detect(self, images: list[Image.Image]) -> list[Detections]:
        from ultralytics.utils.nms import non_max_suppression

        if not images:
            return []
        size = self.config.image_size
        batch = torch.stack([_square_tensor(im, size) for im in images])
        preds = self.model(batch.to(next(self.model.parameters()).device))
        found = non_max_suppression(
            preds,
            conf_thres=self.config.score_threshold,
            iou_thres=NMS_IOU,
            max_det=self.config.max_detections,
        )
        out = []
        for rows, im in zip(found, images, strict=True):
            rows = rows.float().cpu().numpy()
            det = Detections(
                rows[:, :4].astype(np.float32),
                rows[:, 4].astype(np.float32),
                self._columns[rows[:, 5].astype(np.int64)],
                size,
                size,
            )
            out.append(det.scaled(im.width / size, im.height / size, im.width, im.height))
        return out


def _square_tensor(image: Image.Image, size: int) -> Tensor:
    square = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return (
        torch.from_numpy(np.asarray(square, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    )


def train_yolo(
    targets: BoxTargets,
    taxonomy_tag_ids: tuple[str, ...],
    config: DetectorConfig,
    *,
    initial_state: dict[str, Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> YoloDetector:
    """Train YOLO on the rows of `targets` that cover every class (see the module notes)."""
    size = config.image_size
    model = create_yolo(config.yolo_model, len(targets.tag_ids))
    if initial_state is not None:
        load_matching(model, initial_state)
    device = torch.device(config.device)
    model.to(device).train()
    rows = targets.covering_all()
    if not rows.any():
        raise ValueError(
            "detector backend 'yolo': no training image covers every detector class "
            f"{list(targets.tag_ids)} (known negative or boxed); use backend 'ssd', which trains "
            "on partly covering images, or fewer tags"
        )
    images = TrainingImages.load(targets.subset(rows), size)

    def batch_loss(batch: Batch) -> Tensor:
        pixels = np.stack([np.ascontiguousarray(p) for p in batch.pixels])
        img = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0).to(device)
        counts = [len(c) for c in batch.classes]
        boxes = np.concatenate(batch.boxes) if sum(counts) else np.zeros((0, 4), np.float32)
        xywh = np.stack(
            [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
             boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1,
        ).astype(np.float32)  # fmt: skip
        labels = {
            "img": img,
            "batch_idx": torch.from_numpy(np.repeat(np.arange(len(counts)), counts))
            .float()
            .to(device),
            "cls": torch.from_numpy(np.concatenate(batch.classes)).float().view(-1, 1).to(device),
            "bboxes": torch.from_numpy(xywh).to(device),
        }
        loss, _ = model.loss(labels)  # type: ignore[operator]
        return loss.sum()

    optimize(model, images, config.training, batch_loss, on_step=on_step, clip_norm=10.0)
    return YoloDetector(model.cpu(), targets.tag_ids, taxonomy_tag_ids, config)


def load_yolo(
    architecture: dict[str, Any],
    state: dict[str, Tensor],
    taxonomy_tag_ids: tuple[str, ...],
    config: DetectorConfig,
) -> YoloDetector:
    """A `YoloDetector` from its architecture description and weights."""
    model = create_yolo(str(architecture["architecture"]), int(architecture["num_classes"]))
    model.load_state_dict(state)
    cfg = config.model_copy(
        update={
            "yolo_model": architecture["architecture"],
            "image_size": architecture["image_size"],
        }
    )
    return YoloDetector(model, tuple(architecture["tag_ids"]), taxonomy_tag_ids, cfg)
