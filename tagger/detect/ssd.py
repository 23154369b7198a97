"""The torchvision SSD backend (BSD): SSDlite320-MobileNetV3 (default), SSD300-VGG16, or
`ssd_tiny` (torchvision's SSD with a four-stage plain-convolution backbone: for the demo, tests
and CPU benchmarks, where MobileNet's depthwise backward costs seconds a step on a busy CPU).

Built with `weights=None, weights_backbone=None`: nothing downloads. Unknown is not negative:
each training image carries a class mask (its covered classes, `tagger.detect.targets`), and
`CoverageSSD` removes the uncovered classes from that image's softmax, so the loss never pushes
a class down on an image whose source does not speak about it.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from tagger.detect.detections import Backend, Detections, DetectorConfig
from tagger.detect.targets import BoxTargets
from tagger.detect.training_data import Batch, TrainingImages, optimize
from tagger.train.model import fold_sequential_batch_norm

MASKED_LOGIT = -1e4  # an uncovered class: far below any real logit, finite (no NaN in the loss)
TINY_CHANNELS = (32, 48, 64, 96, 128)  # stem, then feature maps at strides 8, 16, 32, 64


class TinyBackbone(nn.Module):
    """Plain 3x3 convolutions (BatchNorm, ReLU), stride 2 per stage; four feature maps."""

    def __init__(self) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        c = TINY_CHANNELS
        self.stem = nn.Sequential(  # stride 4, one convolution per scale
            nn.Conv2d(3, c[0] // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c[0] // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c[0] // 2, c[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList(stage(a, b) for a, b in itertools.pairwise(c))
        self.out_channels = list(c[1:])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        out: dict[str, Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[str(i)] = x
        return out


def ssd_tiny(*, weights: None, weights_backbone: None, num_classes: int) -> SSD:
    """torchvision SSD over `TinyBackbone`: anchors from 7% to 75% of the image side."""
    if weights is not None or weights_backbone is not None:
        raise ValueError("ssd_tiny has no published weights; use weights=None")
    anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2]], scales=[0.07, 0.15, 0.3, 0.5, 0.75])
    backbone = TinyBackbone()
    head = SSDHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes)
    return SSD(backbone, anchors, (320, 320), num_classes, head=head, image_mean=[0.5] * 3,
               image_std=[0.25] * 3)  # fmt: skip


ARCHITECTURES: dict[str, Callable[..., SSD]] = {
    "ssdlite320_mobilenet_v3_large": ssdlite320_mobilenet_v3_large,
    "ssd300_vgg16": ssd300_vgg16,
    "ssd_tiny": ssd_tiny,
}


class CoverageSSD(SSD):
    """SSD whose classification loss ignores, per image, the classes the image does not cover
    (`targets[i]["class_mask"]`: bool `[num_classes]`, background always True)."""

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        if targets and "class_mask" in targets[0]:
            mask = torch.stack([t["class_mask"] for t in targets])[:, None, :]
            logits = head_outputs["cls_logits"].masked_fill(~mask, MASKED_LOGIT)
            head_outputs = {**head_outputs, "cls_logits": logits}
        return super().compute_loss(targets, head_outputs, anchors, matched_idxs)


def create_ssd(architecture: str, num_classes: int, image_size: int) -> CoverageSSD:
    """An untrained SSD with `num_classes` (background included) at `image_size` square input."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"detector.architecture {architecture!r} is not an SSD; allowed: {list(ARCHITECTURES)}"
        )
    model = ARCHITECTURES[architecture](
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    old = model.transform
    model.transform = GeneralizedRCNNTransform(
        image_size,
        image_size,
        old.image_mean,
        old.image_std,
        size_divisible=1,
        fixed_size=(image_size, image_size),
    )
    model.__class__ = CoverageSSD
    return model


class SSDDetector:
    """A trained SSD over `tag_ids` (network class i+1 = tag_ids[i]); see `Detector`."""

    backend: Backend = "ssd"

    def __init__(
        self,
        model: CoverageSSD,
        tag_ids: tuple[str, ...],
        taxonomy_tag_ids: tuple[str, ...],
        config: DetectorConfig,
    ) -> None:
        self.model = model.eval()
        self.tag_ids = tuple(tag_ids)
        self.taxonomy_tag_ids = tuple(taxonomy_tag_ids)
        self.config = config
        index = {t: i for i, t in enumerate(taxonomy_tag_ids)}
        self._columns = torch.tensor([-1] + [index[t] for t in self.tag_ids])
        self.model.score_thresh = config.score_threshold
        self.model.detections_per_img = config.max_detections
        self.inference_only = False

    def architecture(self) -> dict[str, Any]:
        return {
            "backend": "ssd",
            "architecture": self.config.architecture,
            "num_classes": len(self.tag_ids) + 1,
            "image_size": self.config.image_size,
            "tag_ids": list(self.tag_ids),
        }

    def state_dict(self) -> dict[str, Tensor]:
        if self.inference_only:
            raise RuntimeError("this detector's BatchNorm is folded (for_inference); save first")
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def for_inference(self) -> None:
        """See `Detector.for_inference` (SSDlite320 on CPU: ~1.7x faster per image)."""
        fold_sequential_batch_norm(self.model.eval())
        self.model.to(memory_format=torch.channels_last)
        self.inference_only = True

    @torch.inference_mode()
    def detect(self, images: list[Image.Image]) -> list[Detections]:
        """Boxes in each image's own pixels (the SSD transform maps them back)."""
        if not images:
            return []
        device = next(self.model.parameters()).device
        tensors = [_to_tensor(im).to(device) for im in images]
        outputs = self.model(tensors)
        return [
            Detections(
                out["boxes"].float().cpu().numpy().reshape(-1, 4),
                out["scores"].float().cpu().numpy(),
                self._columns[out["labels"].cpu()].numpy().astype(np.int64),
                im.width,
                im.height,
            )
            for out, im in zip(outputs, images, strict=True)
        ]


def _to_tensor(image: Image.Image) -> Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def train_ssd(
    targets: BoxTargets,
    taxonomy_tag_ids: tuple[str, ...],
    config: DetectorConfig,
    *,
    initial_state: dict[str, Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> SSDDetector:
    """Train an SSD on `targets` (rows that cover no class are skipped) and return it.

    on_step(step, loss) reports progress (the flow logs it).
    """
    size = config.image_size
    model = create_ssd(config.architecture, len(targets.tag_ids) + 1, size)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    device = torch.device(config.device)
    model.to(device).train()
    images = TrainingImages.load(targets.subset(targets.useful()), size)

    def batch_loss(batch: Batch) -> Tensor:
        tensors = [torch.from_numpy(np.array(p)).permute(2, 0, 1).float().div_(255.0).to(device)
                   for p in batch.pixels]  # fmt: skip
        batch_targets = [
            {
                "boxes": torch.from_numpy(b * size).to(device),
                "labels": torch.from_numpy(c + 1).to(device),
                "class_mask": F.pad(torch.from_numpy(m), (1, 0), value=True).to(device),
            }
            for b, c, m in zip(batch.boxes, batch.classes, batch.covered, strict=True)
        ]
        losses = model(tensors, batch_targets)
        return sum(losses.values())

    optimize(model, images, config.training, batch_loss, on_step=on_step)
    return SSDDetector(model.cpu(), targets.tag_ids, taxonomy_tag_ids, config)


def load_ssd(
    architecture: dict[str, Any],
    state: dict[str, Tensor],
    taxonomy_tag_ids: tuple[str, ...],
    config: DetectorConfig,
) -> SSDDetector:
    """An `SSDDetector` from its architecture description and weights."""
    model = create_ssd(
        str(architecture["architecture"]),
        int(architecture["num_classes"]),
        int(architecture["image_size"]),
    )
    model.load_state_dict(state)
    cfg = config.model_copy(
        update={
            "architecture": architecture["architecture"],
            "image_size": architecture["image_size"],
        }
    )
    return SSDDetector(model, tuple(architecture["tag_ids"]), taxonomy_tag_ids, cfg)
