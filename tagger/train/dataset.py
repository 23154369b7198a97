"""Training data: a Dataset over the resized image cache, its transforms and a DataLoader factory.

Images come from the resized cache (`tagger.data.cache.cache_path`, one small JPEG per content
hash); an image missing from the cache is decoded from its original file at reduced scale. Training
crops and flips are driven by a per-draw seed that the sampler supplies (`SeededSampler`), so
batches are the same with any number of workers and after a resume.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import DataLoader, Dataset, Sampler

from tagger.data.cache import cache_path
from tagger.data.child_processes import loader_worker_init
from tagger.data.images import REDUCING_GAP, RESAMPLE, FitMode, load_reduced, resize_square

_LOADER_WORKERS = multiprocessing.get_context("spawn")  # why: see `create_loader`

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class AugmentConfig(BaseModel):
    """Training augmentation: a light random-resized crop and a horizontal flip.

    The crop keeps scale in [min_scale, max_scale] of the image area (default 0.4, higher than
    ImageNet's 0.08: a multi-label crop must keep most objects its tags name) with aspect ratio
    in [min_ratio, max_ratio], then resizes to the square training size.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_scale: float = Field(default=0.4, gt=0.0, le=1.0)
    max_scale: float = Field(default=1.0, gt=0.0, le=1.0)
    min_ratio: float = Field(default=3 / 4, gt=0.0)
    max_ratio: float = Field(default=4 / 3, gt=0.0)
    hflip: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> AugmentConfig:
        if self.min_scale > self.max_scale or self.min_ratio > self.max_ratio:
            raise ValueError(
                f"need min_scale <= max_scale and min_ratio <= max_ratio, got scale "
                f"({self.min_scale}, {self.max_scale}), ratio ({self.min_ratio}, {self.max_ratio})"
            )
        return self


def random_crop_box(
    width: int, height: int, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A random crop box (left, top, right, bottom) in pixels, as RandomResizedCrop draws it."""
    area = width * height
    log_ratio = (math.log(cfg.min_ratio), math.log(cfg.max_ratio))
    for _ in range(10):
        target = area * rng.uniform(cfg.min_scale, cfg.max_scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    # fallback: the largest central crop within the ratio range
    ratio = min(max(width / height, cfg.min_ratio), cfg.max_ratio)
    w, h = (
        (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    )
    w, h = min(w, width), min(h, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_transform(
    image: Image.Image, size: int, cfg: AugmentConfig, rng: np.random.Generator
) -> Image.Image:
    """Random-resized crop to `size x size` and random horizontal flip."""
    box = random_crop_box(image.width, image.height, cfg, rng)
    out = image.resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    if rng.random() < cfg.hflip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def eval_transform(image: Image.Image, size: int, fit: FitMode = "squash") -> Image.Image:
    """Deterministic `size x size` view, as prediction sees it (`tagger.data.images.resize_square`):
    the whole frame squashed (default), or the central square with fit="crop"."""
    return resize_square(image, size, fit)


def normalize_images(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 `[B, 3, H, W]` (0..255) -> float32 normalised by mean/std (in 0..1 units).

    Float input is returned unchanged (already normalised by the dataset). Keeps the memory
    format (a channels-last batch stays channels-last).
    """
    if images.dtype != torch.uint8:
        return images
    m = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


class TaggingDataset(Dataset[Sample]):
    """Images with their targets and known mask: item -> (image, targets [T], known [T]).

    image: uint8 `[3, size, size]` when `normalize` is None (normalise the batch on the device
    with `normalize_images`, cheaper for loader workers), else float32 normalised by
    `normalize = (mean, std)`. targets: float32 0/1; known: bool.
    Key: an int (augmentation, if any, seeded by the index alone) or `(index, seed)` from
    `SeededSampler` (a fresh augmentation per draw). `augment=None` gives the eval view.
    """

    def __init__(
        self,
        paths: Sequence[str],
        content_hashes: Sequence[str],
        targets: np.ndarray,
        known: np.ndarray,
        *,
        image_size: int,
        cache_dir: Path | None = None,
        cache_size: int = 256,
        augment: AugmentConfig | None = None,
        eval_fit: FitMode = "squash",
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        n = len(paths)
        if not (len(content_hashes) == targets.shape[0] == known.shape[0] == n):
            raise ValueError(
                f"lengths differ: paths {n}, content_hashes {len(content_hashes)}, "
                f"targets {targets.shape[0]}, known {known.shape[0]}"
            )
        # fixed-width string arrays: no per-item Python objects whose refcounts would copy
        # pages into every forked worker
        self.paths = np.asarray(list(paths), dtype=str)
        self.hashes = np.asarray(list(content_hashes), dtype=str)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.known = torch.as_tensor(np.asarray(known, dtype=bool))
        self.image_size = image_size
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        self.augment = augment
        self.eval_fit = eval_fit
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> Image.Image:
        """RGB image of item `index`, decoded at the smallest JPEG scale that keeps the shorter
        side >= image_size: the cached file, else the original. Not yet resized: the transform
        does the one resize. Raises `tagger.data.images.ImageError`."""
        content_hash = str(self.hashes[index])
        if self.cache_dir is not None and content_hash:
            cached = cache_path(self.cache_dir, self.cache_size, content_hash)
            if cached.exists():
                return load_reduced(cached, self.image_size)
        return load_reduced(str(self.paths[index]), self.image_size)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        index, seed = key if isinstance(key, tuple) else (key, key)
        image = self.load_image(index)
        if self.augment is not None:
            rng = np.random.default_rng(seed)
            image = train_transform(image, self.image_size, self.augment, rng)
        else:
            image = eval_transform(image, self.image_size, self.eval_fit)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        if self.normalize is not None:
            tensor = normalize_images(tensor[None], *self.normalize)[0]
        return tensor, self.targets[index], self.known[index]


def create_loader(
    dataset: Dataset[Sample],
    *,
    batch_size: int,
    sampler: Sampler[int] | Sampler[tuple[int, int]] | None = None,
    num_workers: int = 2,
    drop_last: bool = False,
    seed: int = 0,
    prefetch_factor: int = 4,
    pin_memory: bool | None = None,
) -> DataLoader[Sample]:
    """A DataLoader that keeps workers alive across epochs and prefetches ahead of the step.

    Without a sampler the order is sequential (evaluation). pin_memory defaults to True when
    CUDA is available. The loader's own generator is seeded, so it never draws from (and so
    never shifts) the global torch RNG.

    Workers are spawned, not forked (the dataset must pickle): a fork inherits the parent's
    interpreter-exit callbacks, such as those Prefect's logging and event services register
    (`threading._register_atexit`). They fail in the fork, the worker exits with code 1 when
    the loader shuts it down, and torch's SIGCHLD handler raises "DataLoader worker exited
    unexpectedly" in the parent, inside whatever code runs then (often `__del__`). A spawned
    worker starts once per loader (persistent) and dies with its parent (`loader_worker_init`).
    """
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=workers,
        prefetch_factor=prefetch_factor if workers else None,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=loader_worker_init() if workers else None,  # workers die with us
        multiprocessing_context=_LOADER_WORKERS if workers else None,
    )
