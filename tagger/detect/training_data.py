"""Decoded detector training images and their shuffled, flipped batches (shared by backends)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tagger.data.images import ImageError, load_rgb_square
from tagger.detect.detections import DetectorTraining
from tagger.detect.targets import BoxTargets


@dataclass(frozen=True)
class TrainingImages:
    """uint8 `[S, S, 3]` squares (squashed: normalised boxes stay valid) with their targets."""

    pixels: list[np.ndarray]
    boxes: list[np.ndarray]  # normalised xyxy [K, 4]
    classes: list[np.ndarray]  # [K] 0-based
    covered: list[np.ndarray]  # bool [C]
    skipped: list[str]  # paths that failed to decode (with the reason)

    @classmethod
    def load(cls, targets: BoxTargets, size: int) -> TrainingImages:
        pixels, boxes, classes, covered, skipped = [], [], [], [], []
        for i, path in enumerate(targets.paths):
            try:
                image = load_rgb_square(path, size)
            except ImageError as err:
                skipped.append(str(err))
                continue
            pixels.append(np.asarray(image, dtype=np.uint8))
            boxes.append(targets.boxes[i])
            classes.append(targets.classes[i])
            covered.append(targets.covered[i])
        if not pixels:
            raise ValueError(
                f"no detector training images: {len(targets)} rows cover a detector class"
                f"{', all failed to decode' if targets.paths else ''}"
            )
        return cls(pixels, boxes, classes, covered, skipped)

    def __len__(self) -> int:
        return len(self.pixels)


@dataclass(frozen=True)
class Batch:
    pixels: list[np.ndarray]
    boxes: list[np.ndarray]
    classes: list[np.ndarray]
    covered: list[np.ndarray]


def training_batches(
    images: TrainingImages, config: DetectorTraining, rng: np.random.Generator
) -> Iterator[Batch]:
    """`config.epochs` shuffled passes (stopping at `max_steps`), random horizontal flips.

    A pass holds every image with a box and as many images without (SSD and YOLO learn
    nothing from a batch without boxes, and small objects are rare), drawn afresh each pass.
    """
    step = 0
    boxed = np.flatnonzero([len(b) > 0 for b in images.boxes])
    empty = np.flatnonzero([len(b) == 0 for b in images.boxes])
    for _ in range(config.epochs):
        take = rng.permutation(empty)[: max(len(boxed), 1)]
        order = rng.permutation(np.concatenate([boxed, take]))
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            flips = rng.random(len(rows)) < 0.5 if config.hflip else np.zeros(len(rows), bool)
            yield Batch(
                [images.pixels[i][:, ::-1].copy() if f else images.pixels[i]
                 for i, f in zip(rows, flips, strict=True)],
                [_flip(images.boxes[i]) if f else images.boxes[i]
                 for i, f in zip(rows, flips, strict=True)],
                [images.classes[i] for i in rows],
                [images.covered[i] for i in rows],
            )  # fmt: skip
            step += 1
            if config.max_steps is not None and step >= config.max_steps:
                return


def _flip(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, 0], out[:, 2] = 1.0 - boxes[:, 2], 1.0 - boxes[:, 0]
    return out


def optimize(
    model: nn.Module,
    images: TrainingImages,
    train: DetectorTraining,
    batch_loss: Callable[[Batch], torch.Tensor],
    *,
    on_step: Callable[[int, float], None] | None = None,
    clip_norm: float | None = None,
) -> None:
    """AdamW over `training_batches(images, train)` (seeded by `train.seed`), minimising
    `batch_loss(batch)`; the backends differ only in how a batch becomes a loss.

    on_step(step, loss) reports progress (the flow logs it).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    generator = np.random.default_rng(train.seed)
    torch.manual_seed(train.seed)
    for step, batch in enumerate(training_batches(images, train, generator), start=1):
        loss = batch_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
