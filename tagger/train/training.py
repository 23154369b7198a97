"""The training loop: sigmoid tagger on the manifest, with exact resume and DDP.

`train(cfg, manifest, taxonomy)` runs the epochs and reports through callbacks; it needs no
MLflow or Prefect. Under `torchrun` call `init_distributed()` first (the CLI does), and every
process runs the same `train` call: each takes its slice of the sampler's epoch, DDP averages
gradients, validation is split across processes and gathered, process 0 writes checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from tqdm import tqdm

from label_system.taxonomy import Taxonomy, load_default_taxonomy, load_taxonomy
from tagger.data.images import FitMode
from tagger.data.manifest import read_manifest, targets_from_manifest
from tagger.metrics import average_precision, mean_average_precision
from tagger.train.checkpoint import (
    Checkpoint,
    capture_rng_state,
    copy_checkpoint,
    read_checkpoint,
    restore_rng_state,
    scoped_rng,
    write_checkpoint,
)
from tagger.train.dataset import AugmentConfig, TaggingDataset, create_loader, normalize_images
from tagger.train.losses import FocalLossConfig, LossConfig, LossFn, create_loss
from tagger.train.model import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, create_model
from tagger.train.precision import bf16_supported
from tagger.train.sampling import Phi, RepeatFactorSampler, SeededSampler, compute_repeat_factors

# ---------------------------------------------------------------------------------------------
# Config


class ModelSpec(BaseModel):
    """`ModelConfig` without `num_tags`, which the taxonomy decides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = "resnet50"
    image_size: int = Field(default=224, ge=16)
    pretrained: Literal[False, "hub"] | Path = False
    drop_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @model_validator(mode="after")
    def _valid_model(self) -> ModelSpec:
        self.to_model_config(num_tags=1)  # ModelConfig checks the backbone name
        return self

    def to_model_config(self, num_tags: int) -> ModelConfig:
        """The full model config for `num_tags` outputs."""
        return ModelConfig(num_tags=num_tags, **self.model_dump())


class SamplerConfig(BaseModel):
    """Which images an epoch draws: "uniform" (each once) or "repeat_factor" (rare tags more)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["uniform", "repeat_factor"] = "repeat_factor"
    threshold: float = Field(default=0.01, gt=0.0, le=1.0)
    phi: Phi = "sqrt"


class OptimizerConfig(BaseModel):
    """AdamW or SGD (momentum, Nesterov); no weight decay on biases and norm weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.05, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    encoder_lr_scale: float = Field(default=1.0, gt=0.0, description="encoder lr / head lr")


class ScheduleConfig(BaseModel):
    """Epochs, linear warmup then cosine decay per step, frozen-encoder phase, early stop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=10, ge=1)
    warmup_epochs: float = Field(default=1.0, ge=0.0)
    min_lr_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    freeze_encoder_epochs: int = Field(default=0, ge=0, description="head-only epochs first")
    early_stop_patience: int | None = Field(default=None, ge=1)


class DataConfig(BaseModel):
    """Where the manifest and image cache are and how batches are made.

    Relative paths in a YAML file are resolved against the file's folder.
    val_fold: the manifest fold held out for validation (None: train on all, no validation).
    image_root: folder that relative manifest paths are relative to (default: the manifest's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest: Path | None = None
    taxonomy: Path | None = Field(default=None, description="None: the shipped album taxonomy")
    cache_dir: Path | None = None
    cache_size: int = Field(default=256, ge=16)
    image_root: Path | None = None
    val_fold: int | None = 0
    batch_size: int = Field(default=64, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    num_workers: int = Field(default=2, ge=0)
    prefetch_factor: int = Field(default=4, ge=1)
    augment: AugmentConfig = AugmentConfig()
    eval_fit: FitMode = Field(default="squash", description="validation view: squash or crop")


class TrainConfig(BaseModel):
    """Everything one training run needs; defaults beside the code, YAML-loadable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSpec = ModelSpec()
    loss: LossConfig = FocalLossConfig()
    sampler: SamplerConfig = SamplerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    data: DataConfig = DataConfig()
    output_dir: Path = Path("runs/train")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 (or fp16 + GradScaler) on CUDA; bf16 on a CPU with bf16 units "
        "(AVX-512 BF16 / AMX), else off",
    )
    channels_last: bool = True
    grad_clip_norm: float | None = Field(default=5.0, gt=0.0)
    ema_decay: float | None = Field(default=None, gt=0.0, lt=1.0)
    seed: int = 0
    log_every_steps: int = Field(default=20, ge=1)
    progress: bool = True


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training config YAML, with `overrides` merged over it section by section.

    Relative paths (from the file or the overrides) become relative to the file's folder.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"training config not found: {path}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a mapping with sections {list(TrainConfig.model_fields)}"
        )
    data = merge_nested(data, overrides or {})
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as e:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']} (given: {err.get('input')!r})"
            for err in e.errors()
        ]
        raise ValueError(f"{path}: invalid training config\n" + "\n".join(lines)) from None
    return resolve_paths(cfg, path.parent)


def merge_nested(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` merged in; nested dicts merge key by key, other values replace."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_nested(out[key], value)
        else:
            out[key] = value
    return out


def resolve_paths(cfg: TrainConfig, base: Path) -> TrainConfig:
    """Make the config's relative paths relative to `base`."""

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    m, d = cfg.model, cfg.data
    model = m.model_copy(
        update={"pretrained": fix(m.pretrained) if isinstance(m.pretrained, Path) else m.pretrained}
    )
    data = d.model_copy(
        update={
            "manifest": fix(d.manifest),
            "taxonomy": fix(d.taxonomy),
            "cache_dir": fix(d.cache_dir),
            "image_root": fix(d.image_root),
        }
    )
    return cfg.model_copy(
        update={"model": model, "data": data, "output_dir": base / cfg.output_dir}
    )


# ---------------------------------------------------------------------------------------------
# Callbacks and results


class TrainCallback(Protocol):
    """What the loop reports; called on process 0 only. Subclass `Callback` to pick some."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, path: Path, best: bool) -> None: ...


class Callback:
    """No-op base for callbacks: override the hooks you need."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Every `log_every_steps` steps: loss (running mean), lr, images_per_s."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """After epoch `epoch` (1-based) is validated and checkpointed."""

    def on_checkpoint(self, path: Path, best: bool) -> None:
        """After a checkpoint directory is written; best: it is also the new best."""


@dataclass
class TrainResult:
    """What a run produced: checkpoints, the metric history, per-tag validation AP `[T]` of
    the best and of the last epoch (nan: no known positive in validation) and the trained
    network (last weights, eval mode; on every process)."""

    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    best_metric: float | None
    epochs_completed: int
    stopped_early: bool
    tag_ids: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_ap: np.ndarray | None = None
    last_val_ap: np.ndarray | None = None
    model: nn.Module | None = None


# ---------------------------------------------------------------------------------------------
# Distributed


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: Literal["auto", "cpu", "cuda"] = "auto") -> DistContext:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL on CUDA, gloo on CPU. One process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = _use_cuda(device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return current_context()


def current_context() -> DistContext:
    """The running process group's rank and size (rank 0 of 1 without one)."""
    if not dist.is_initialized():
        return DistContext()
    return DistContext(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    )


def _use_cuda(device: str) -> bool:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but CUDA is not available; use 'cpu' or 'auto'")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def _gather(obj: Any, ctx: DistContext) -> list[Any]:
    if ctx.world_size == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------
# Schedule and precision


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step `step`: linear warmup, then cosine decay.

    Rises linearly to 1 over `warmup_steps`, then follows a half cosine to `min_ratio` at
    `total_steps` (and stays there if an epoch runs a little longer than estimated).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "auto" and device.type != "cuda":
        # bf16 units (AVX-512 BF16 / AMX): ~2x the images/s of fp32 (bench/train_throughput.py)
        return torch.bfloat16 if bf16_supported(device) else None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp 'fp16' needs CUDA; use 'bf16' or 'off' on CPU")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


# ---------------------------------------------------------------------------------------------
# Data preparation


@dataclass(frozen=True)
class SplitData:
    """Arrays for one split of the manifest."""

    paths: list[str]
    hashes: list[str]
    targets: np.ndarray
    known: np.ndarray


def split_manifest(
    manifest: pd.DataFrame, taxonomy: Taxonomy, data: DataConfig
) -> tuple[SplitData, SplitData]:
    """Train and validation arrays: validation is fold `data.val_fold`, train all the others."""
    targets, known = targets_from_manifest(manifest, taxonomy)
    root = data.image_root or (data.manifest.parent if data.manifest is not None else None)
    paths = [
        p if root is None or Path(p).is_absolute() else str(root / p) for p in manifest["path"]
    ]
    hashes = manifest["content_hash"].fillna("").astype(str).tolist()
    folds = manifest["fold"].to_numpy()
    if data.val_fold is None:
        is_val = np.zeros(len(manifest), dtype=bool)
    else:
        is_val = folds == data.val_fold
        if not is_val.any():
            raise ValueError(
                f"data.val_fold={data.val_fold}: no manifest row has that fold; "
                f"folds present: {sorted(set(folds.tolist()))}"
            )

    def take(mask: np.ndarray) -> SplitData:
        idx = np.flatnonzero(mask)
        return SplitData(
            [paths[i] for i in idx], [hashes[i] for i in idx], targets[idx], known[idx]
        )

    return take(~is_val), take(is_val)


def _param_groups(model: nn.Module, opt: OptimizerConfig) -> list[dict[str, Any]]:
    head_ids = {id(p) for p in _head(model).parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in head_ids, p.ndim > 1), []).append(p)
    out = []
    for (is_head, decays), params in sorted(groups.items()):
        scale = 1.0 if is_head else opt.encoder_lr_scale
        out.append(
            {
                "params": params,
                "lr": opt.lr * scale,
                "weight_decay": opt.weight_decay if decays else 0.0,
            }
        )
    return out


def _head(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_classifier", None)  # timm models
    if get is None:
        raise TypeError(f"{type(model).__name__} has no get_classifier(); expected a timm model")
    head: nn.Module = get()
    return head


def create_optimizer(model: nn.Module, opt: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over head/encoder x decay/no-decay parameter groups."""
    groups = _param_groups(model, opt)
    optimizers = {
        "adamw": lambda: torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas),
        "sgd": lambda: torch.optim.SGD(
            groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.momentum > 0
        ),
    }
    return optimizers[opt.name]()


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Holds the state of one run; `train()` is the public entry point."""

    def __init__(
        self,
        cfg: TrainConfig,
        train_split: SplitData,
        val_split: SplitData,
        taxonomy: Taxonomy,
        callbacks: Sequence[TrainCallback],
        ctx: DistContext,
    ) -> None:
        self.cfg, self.ctx, self.callbacks = cfg, ctx, list(callbacks) if ctx.is_main else []
        self.tag_ids = taxonomy.tag_ids
        self.taxonomy_id = {"name": taxonomy.name, "version": taxonomy.version}
        cuda = _use_cuda(cfg.device)
        self.device = torch.device("cuda", ctx.local_rank) if cuda else torch.device("cpu")
        self.amp_dtype = _amp_dtype(cfg.amp, self.device)
        self.model_cfg = cfg.model.to_model_config(len(taxonomy))
        self.model = create_model(self.model_cfg).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn: LossFn = create_loss(cfg.loss)
        self.val = val_split
        self._build_loaders(train_split, val_split)
        self.optimizer = create_optimizer(self.model, cfg.optimizer)
        steps_per_epoch = self.sampler.expected_length() // cfg.data.batch_size
        if steps_per_epoch < 1:
            raise ValueError(
                f"data.batch_size={cfg.data.batch_size} is larger than the training draws per "
                f"process per epoch ({self.sampler.expected_length()}); lower it"
            )
        self.steps_per_epoch = steps_per_epoch
        total = steps_per_epoch * cfg.schedule.epochs
        warmup = round(cfg.schedule.warmup_epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            partial(
                lr_factor,
                warmup_steps=warmup,
                total_steps=total,
                min_ratio=cfg.schedule.min_lr_ratio,
            ),
        )
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.ema = None
        if cfg.ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True)
        self.ddp: nn.Module = self.model
        self.frozen: bool | None = None
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.best_metric: float | None = None
        self.stale_epochs = 0
        self.history: list[dict[str, float]] = []
        self.best_val_ap: np.ndarray | None = None

    # -- setup --------------------------------------------------------------------------------
    def _build_loaders(self, train_split: SplitData, val_split: SplitData) -> None:
        cfg, data = self.cfg, self.cfg.data

        def dataset(split: SplitData, augment: AugmentConfig | None) -> TaggingDataset:
            return TaggingDataset(
                split.paths,
                split.hashes,
                split.targets,
                split.known,
                image_size=cfg.model.image_size,
                cache_dir=data.cache_dir,
                cache_size=data.cache_size,
                augment=augment,
                eval_fit=data.eval_fit,
            )

        train_set = dataset(train_split, data.augment)
        if cfg.sampler.name == "repeat_factor":
            factors = compute_repeat_factors(
                train_split.targets, train_split.known, cfg.sampler.threshold, cfg.sampler.phi
            )
        else:
            factors = np.ones(len(train_set))
        self.sampler = RepeatFactorSampler(
            factors, seed=cfg.seed, num_replicas=self.ctx.world_size, rank=self.ctx.rank
        )
        self.train_loader = create_loader(
            train_set,
            batch_size=data.batch_size,
            sampler=SeededSampler(self.sampler),
            num_workers=data.num_workers,
            drop_last=True,
            seed=cfg.seed,
            prefetch_factor=data.prefetch_factor,
        )
        val_set = dataset(val_split, None)
        # contiguous shard per process; gathered in rank order, so no padding is needed
        shard = np.array_split(np.arange(len(val_set)), self.ctx.world_size)[self.ctx.rank]
        self.val_loader = create_loader(
            Subset(val_set, shard.tolist()),
            batch_size=data.eval_batch_size or data.batch_size,
            num_workers=min(data.num_workers, 1) if len(shard) else 0,
            seed=cfg.seed,
            prefetch_factor=data.prefetch_factor,
        )

    def _set_phase(self, epoch: int) -> None:
        """Freeze the encoder (weights and norm statistics) for the first epochs, then unfreeze."""
        frozen = epoch < self.cfg.schedule.freeze_encoder_epochs
        if frozen == self.frozen:
            return
        head_ids = {id(p) for p in _head(self.model).parameters()}
        for p in self.model.parameters():
            p.requires_grad_(not frozen or id(p) in head_ids)
        self.frozen = frozen
        if self.ctx.world_size > 1:
            # DDP registers the parameters that need gradients when it is built, so re-wrap
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.frozen:
            # encoder blocks in eval (norm statistics frozen too); the root stays in training
            # mode so head dropout still applies
            head_ids = {id(p) for p in _head(self.model).parameters()}
            for child in self.model.children():
                if not any(id(p) in head_ids for p in child.parameters()):
                    child.eval()

    # -- one epoch ----------------------------------------------------------------------------
    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return normalize_images(images, self.cfg.model.mean, self.cfg.model.std)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_epoch(self) -> dict[str, float]:
        """One pass over this epoch's draws; returns train_loss, lr, images_per_s."""
        self.sampler.set_epoch(self.epoch)
        self._set_train_mode()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        seen, start = 0, time.perf_counter()
        n_steps = len(self.train_loader)
        bar = tqdm(
            total=n_steps,
            desc=f"epoch {self.epoch + 1}",
            leave=False,
            disable=not (self.ctx.is_main and self.cfg.progress),
            dynamic_ncols=True,
        )
        for i, (images, targets, known) in enumerate(self.train_loader):
            loss = self.train_step(images, targets, known)
            loss_sum += loss.detach()
            seen += len(images)
            bar.update()
            if (i + 1) % self.cfg.log_every_steps == 0 or i + 1 == n_steps:
                mean_loss = loss_sum.item() / (i + 1)
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {self.epoch + 1}, step {self.step}"
                    )
                rate = seen * self.ctx.world_size / (time.perf_counter() - start)
                lr = float(self.scheduler.get_last_lr()[-1])
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                for cb in self.callbacks:
                    cb.on_step(self.step, {"loss": mean_loss, "lr": lr, "images_per_s": rate})
        bar.close()
        self._average_buffers()
        steps = max(1, n_steps)
        # on the device: NCCL reduces only CUDA tensors (gloo either)
        totals = torch.tensor(
            [loss_sum.item(), float(steps)], dtype=torch.float64, device=self.device
        )
        if self.ctx.world_size > 1:
            dist.all_reduce(totals)
        return {
            "train_loss": float(totals[0] / totals[1]),
            "lr": float(self.scheduler.get_last_lr()[-1]),
            "images_per_s": seen * self.ctx.world_size / (time.perf_counter() - start),
        }

    def _average_buffers(self) -> None:
        """Average norm statistics over processes: DDP syncs them before each forward only, so
        after an epoch each process holds its own; validation and checkpoints need one."""
        if self.ctx.world_size == 1:
            return
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        for module in modules:
            for buf in module.buffers():
                if buf.is_floating_point():
                    dist.all_reduce(buf)
                    buf /= self.ctx.world_size

    def train_step(
        self, images: torch.Tensor, targets: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        """One optimizer step on a batch: images `[B, 3, H, W]` (uint8 or normalised float),
        targets/known `[B, num_tags]`; returns the loss (a 0-d tensor on the device)."""
        x = self._inputs(images)
        targets = targets.to(self.device, non_blocking=True)
        known = known.to(self.device, non_blocking=True)
        with self._autocast():
            logits = self.ddp(x)
        loss = self.loss_fn(logits.float(), targets, known)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        # fp16: a step with inf/NaN gradients is skipped and the scale lowered; the schedule
        # waits for it (and torch's "scheduler before optimizer" warning has no cause)
        if not self.scaler.is_enabled() or self.scaler.get_scale() >= scale:
            self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        return loss

    # -- validation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self) -> tuple[dict[str, float], np.ndarray]:
        """Validation loss and mAP over known cells (EMA weights when on); per-tag AP `[T]`."""
        model = self.ema.module if self.ema is not None else self.model
        was_training = model.training
        model.eval()
        logits = []
        for images, _, _ in self.val_loader:
            with self._autocast():
                logits.append(model(self._inputs(images)).float().cpu())
        model.train(was_training)
        t = len(self.tag_ids)
        local = torch.cat(logits) if logits else torch.zeros(0, t)
        all_logits = torch.cat(_gather(local, self.ctx))
        targets = torch.as_tensor(self.val.targets)
        known = torch.as_tensor(self.val.known)
        loss = float(self.loss_fn(all_logits, targets, known))
        probs = torch.sigmoid(all_logits).numpy()
        ap = average_precision(probs, self.val.targets, self.val.known.astype(bool))
        return {"val_loss": loss, "val_map": mean_average_precision(ap)}, ap

    # -- checkpoints --------------------------------------------------------------------------
    def to_checkpoint(self, metrics: dict[str, float]) -> Checkpoint:
        """The full state after `self.epoch` epochs (gathers RNG states of all processes)."""
        rng = _gather(capture_rng_state(), self.ctx)
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "best_metric": self.best_metric,
            "stale_epochs": self.stale_epochs,
            "history": self.history,
            "best_val_ap": None if self.best_val_ap is None else torch.from_numpy(self.best_val_ap),
            "tag_ids": list(self.tag_ids),
        }
        meta = {
            "epoch": self.epoch,
            "step": self.step,
            "metrics": metrics,
            "model_config": self.model_cfg.model_dump(mode="json"),
            "tag_ids": list(self.tag_ids),
            "taxonomy": self.taxonomy_id,
            "ema": self.ema is not None,
            "preprocessing": {
                "image_size": self.cfg.model.image_size,
                "resize": self.cfg.data.eval_fit,
                "mean": list(self.cfg.model.mean),
                "std": list(self.cfg.model.std),
            },
            "train_config": self.cfg.model_dump(mode="json"),
        }
        ema = self.ema.module.state_dict() if self.ema is not None else None
        return Checkpoint(model=self.model.state_dict(), state=state, meta=meta, ema=ema)

    def load(self, checkpoint: Checkpoint) -> None:
        """Continue from `checkpoint` exactly where it stopped."""
        state = checkpoint.state
        if list(state["tag_ids"]) != list(self.tag_ids):
            raise ValueError("checkpoint tags differ from the taxonomy's; cannot resume")
        self.model.load_state_dict(checkpoint.model)
        if self.ema is not None:
            if checkpoint.ema is None:
                raise ValueError("config has ema_decay but the checkpoint has no EMA weights")
            self.ema.module.load_state_dict(checkpoint.ema)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_metric, self.stale_epochs = state["best_metric"], state["stale_epochs"]
        self.history = list(state["history"])
        ap = state["best_val_ap"]
        self.best_val_ap = None if ap is None else ap.numpy()
        rng = state["rng"]
        restore_rng_state(rng[self.ctx.rank % len(rng)])

    def _save(self, metrics: dict[str, float], improved: bool) -> Path:
        out = self.cfg.output_dir
        last, best = out / "last", out / "best"
        checkpoint = self.to_checkpoint(metrics)
        if self.ctx.is_main:
            write_checkpoint(checkpoint, last)
            if improved:
                copy_checkpoint(last, best)
        if self.ctx.world_size > 1:
            dist.barrier()
        return last

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train the remaining epochs; validate, checkpoint and report after each."""
        stopped = False
        has_val = len(self.val.paths) > 0
        ap = None
        while self.epoch < self.cfg.schedule.epochs:
            self._set_phase(self.epoch)
            start = time.perf_counter()
            metrics = self.train_epoch()
            self.epoch += 1
            if has_val:
                val_metrics, ap = self.evaluate()
                metrics |= val_metrics
            metrics |= {
                "epoch_time_s": time.perf_counter() - start,
                "frozen_encoder": float(bool(self.frozen)),
            }
            score = metrics.get("val_map", float(self.epoch))  # no validation: latest is best
            improved = self.best_metric is None or score > self.best_metric
            if improved:
                self.best_metric, self.stale_epochs, self.best_val_ap = score, 0, ap
            else:
                self.stale_epochs += 1
            self.history.append({"epoch": float(self.epoch), **metrics})
            last = self._save(metrics, improved)
            for cb in self.callbacks:
                cb.on_checkpoint(last, best=improved)
                cb.on_epoch_end(self.epoch, metrics)
            patience = self.cfg.schedule.early_stop_patience
            if has_val and patience is not None and self.stale_epochs >= patience:
                stopped = True
                break
        out = self.cfg.output_dir
        return TrainResult(
            output_dir=out,
            last_checkpoint=out / "last",
            best_checkpoint=out / "best",
            best_metric=self.best_metric if has_val else None,
            epochs_completed=self.epoch,
            stopped_early=stopped,
            tag_ids=self.tag_ids,
            history=self.history,
            best_val_ap=self.best_val_ap,
            last_val_ap=ap,
            model=self.model.eval(),
        )


def train(
    cfg: TrainConfig,
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    *,
    callbacks: Sequence[TrainCallback] = (),
    resume: str | Path | None = None,
) -> TrainResult:
    """Train a tagger on `manifest` (train folds) and validate on fold `cfg.data.val_fold`.

    Writes `cfg.output_dir/last` every epoch and `cfg.output_dir/best` when validation mAP
    improves (see `tagger.train.checkpoint`). `resume`: a checkpoint directory to continue from
    exactly. Global RNGs are seeded from `cfg.seed` for the run and restored afterwards.
    Under an initialised process group, every process calls this with the same arguments.
    """
    ctx = current_context()
    train_split, val_split = split_manifest(manifest, taxonomy, cfg.data)
    cuda_devices = [ctx.local_rank] if _use_cuda(cfg.device) else []
    with scoped_rng(cfg.seed, cuda_devices):
        trainer = Trainer(cfg, train_split, val_split, taxonomy, callbacks, ctx)
        if resume is not None:
            # on the CPU: load_state_dict moves weights and optimizer state to their device;
            # RNG states and metric arrays must stay host tensors
            trainer.load(read_checkpoint(resume, map_location="cpu"))
        return trainer.run()


def load_training_inputs(cfg: TrainConfig) -> tuple[pd.DataFrame, Taxonomy]:
    """Read the manifest and taxonomy a config names."""
    if cfg.data.manifest is None:
        raise ValueError("data.manifest is not set in the training config")
    taxonomy = load_taxonomy(cfg.data.taxonomy) if cfg.data.taxonomy else load_default_taxonomy()
    return read_manifest(cfg.data.manifest), taxonomy


def run_train_config(
    config_path: str | Path,
    *,
    resume: str | Path | None = None,
    callbacks: Sequence[TrainCallback] = (),
) -> TrainResult:
    """`tagger train CONFIG.yaml`: load config and inputs, join torchrun's group, train.

    resume "last" means `<output_dir>/last`.
    """
    cfg = load_train_config(config_path)
    if resume == "last":
        resume = cfg.output_dir / "last"
    manifest, taxonomy = load_training_inputs(cfg)
    ctx = init_distributed(cfg.device)
    try:
        return train(cfg, manifest, taxonomy, callbacks=callbacks, resume=resume)
    finally:
        if ctx.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
