"""Cross-fitting: out-of-fold probabilities for every labelled image of the manifest.

The manifest's folds (or a chosen subset) are split into `k` groups; for each group one model
trains on the other groups' folds and scores the group's images. Every row of the result was
scored by a model that never saw it, so calibration can use all of a tag's positives instead of
one validation fold, and label cleaning can rank label issues on every image (cleanlab's
out-of-fold `pred_probs`). The models may be cheaper than the final one (fewer epochs, smaller
images, another backbone: `CrossFitConfig`); thresholds transfer best when they match it.

    config = CrossFitConfig(k=5, epochs=4)
    pred = cross_fit(manifest, taxonomy, train_config, config, out_dir)   # Predictions
    write_predictions(pred, out_dir / "oof_predictions.parquet")

Rows whose fold is outside `CrossFitConfig.folds` are neither trained on nor scored (a blind
test set stays blind). Each model's scores are written to `<out_dir>/model_<m>.parquet` as soon
as it finishes, and a rerun into the same folder reuses them (a stopped run resumes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from label_system.taxonomy import Taxonomy
from tagger.train.checkpoint import read_checkpoint_weights
from tagger.train.model import create_model
from tagger.train.predictions import (
    Predictions,
    check_out_of_fold,
    predict_manifest,
    read_predictions,
    write_predictions,
)
from tagger.train.training import TrainCallback, TrainConfig, merge_nested, train


class CrossFitConfig(BaseModel):
    """Which folds are cross-fitted, into how many models, with which training overrides.

    folds: manifest folds to cross-fit over (None: all); rows of other folds are not used.
    k: number of models; the sorted folds are dealt round-robin into k groups (None: one model
    per fold). epochs, image_size, backbone, batch_size: training overrides for the cross-fit
    models (None: as the final model). keep_checkpoints: keep each model's checkpoint folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    folds: tuple[int, ...] | None = None
    k: int | None = Field(default=None, ge=2)
    epochs: int | None = Field(default=None, ge=1)
    image_size: int | None = Field(default=None, ge=16)
    backbone: str | None = None
    batch_size: int | None = Field(default=None, ge=1)
    keep_checkpoints: bool = False
    score_batch_size: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _enough_folds(self) -> CrossFitConfig:
        if self.folds is not None and len(set(self.folds)) < 2:
            raise ValueError(f"folds {list(self.folds)}: cross-fitting needs at least 2 folds")
        if self.folds is not None and self.k is not None and self.k > len(set(self.folds)):
            raise ValueError(f"k={self.k} models but only {len(set(self.folds))} folds")
        return self


def fold_groups(folds_present: Sequence[int], config: CrossFitConfig) -> list[tuple[int, ...]]:
    """The scored folds of each model: `config.folds` (or all present) dealt into k groups.

    Raises when a chosen fold has no rows or there are fewer folds than models.
    """
    present = sorted({int(f) for f in folds_present})
    chosen = sorted(set(config.folds)) if config.folds is not None else present
    missing = sorted(set(chosen) - set(present))
    if missing:
        raise ValueError(f"crossfit folds {missing} have no rows; folds present: {present}")
    k = config.k or len(chosen)
    if len(chosen) < max(k, 2):
        raise ValueError(
            f"crossfit: {len(chosen)} folds {chosen} for k={k} models; need at least "
            f"{max(k, 2)} folds"
        )
    return [tuple(chosen[i::k]) for i in range(k)]


def crossfit_train_config(base: TrainConfig, config: CrossFitConfig, out_dir: Path) -> TrainConfig:
    """The training config of one cross-fit model: `base` with the overrides, no validation
    fold (the model trains on everything it is given; its last epoch scores) and no early stop."""
    model: dict[str, Any] = {}
    if config.backbone is not None:
        model["backbone"] = config.backbone
    if config.image_size is not None:
        model["image_size"] = config.image_size
    schedule: dict[str, Any] = {"early_stop_patience": None}
    if config.epochs is not None:
        schedule["epochs"] = config.epochs
    data: dict[str, Any] = {"val_fold": None}
    if config.batch_size is not None:
        data["batch_size"] = config.batch_size
    update = {"model": model, "schedule": schedule, "data": data, "output_dir": str(out_dir)}
    return TrainConfig.model_validate(merge_nested(base.model_dump(), update))


def preprocessing_of(cfg: TrainConfig) -> dict[str, Any]:
    """The eval-time preprocessing of models trained with `cfg` (as checkpoints record it)."""
    return {
        "image_size": cfg.model.image_size,
        "resize": cfg.data.eval_fit,
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
    }


def _with_resolved_paths(manifest: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Manifest paths made absolute the way training resolves them (image_root or its folder)."""
    d = cfg.data
    root = d.image_root or (d.manifest.parent if d.manifest is not None else None)
    if root is None:
        return manifest
    out = manifest.copy()
    out["path"] = [p if Path(p).is_absolute() else str(root / p) for p in manifest["path"]]
    return out


def cross_fit(
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    train_config: TrainConfig,
    config: CrossFitConfig,
    out_dir: str | Path,
    *,
    callbacks: Sequence[TrainCallback] = (),
    device: str | None = None,
) -> Predictions:
    """Out-of-fold probabilities `[N_chosen, T]` for the rows of the cross-fitted folds.

    Model m trains on the chosen folds outside group m (`fold_groups`) and scores group m's
    rows; the result's `scored_by` / `models` record that (checked by `check_out_of_fold`).
    Rows come back in manifest order. `device`: where the models score (None: CUDA when
    `train_config.device` allows it and one is there, else the CPU).
    """
    out_dir = Path(out_dir)
    if device is None:
        cuda = train_config.device != "cpu" and torch.cuda.is_available()
        device = "cuda" if cuda else "cpu"
    folds = manifest["fold"].to_numpy().astype(np.int64)
    groups = fold_groups(folds.tolist(), config)
    chosen = sorted(f for g in groups for f in g)
    rows = np.flatnonzero(np.isin(folds, chosen))
    probs = np.zeros((rows.size, len(taxonomy)), dtype=np.float32)
    scored_by = np.full(rows.size, -1, dtype=np.int64)
    models: list[tuple[int, ...]] = []
    for m, group in enumerate(groups):
        trained_on = tuple(f for f in chosen if f not in group)
        models.append(trained_on)
        part = _fit_and_score(
            manifest, taxonomy, train_config, config, out_dir, m, group, trained_on,
            callbacks=callbacks, device=device,
        )  # fmt: skip
        mine = np.isin(folds[rows], group)
        probs[mine], scored_by[mine] = part.probs, m
    assert (scored_by >= 0).all()  # the groups cover every chosen fold
    pred = Predictions(
        image_ids=manifest["image_id"].to_numpy()[rows],
        folds=folds[rows],
        probs=probs,
        tag_ids=taxonomy.tag_ids,
        train_folds=(),
        scored_by=scored_by,
        models=tuple(models),
    )
    check_out_of_fold(pred, "cross_fit")
    return pred


def _ids(manifest: pd.DataFrame, folds: np.ndarray, wanted: Sequence[int]) -> str:
    """A short digest of the image ids in `wanted` folds (a reused model saw the same images)."""
    ids = manifest["image_id"].to_numpy()[np.isin(folds, list(wanted))]
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def _fit_and_score(
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    train_config: TrainConfig,
    config: CrossFitConfig,
    out_dir: Path,
    m: int,
    group: tuple[int, ...],
    trained_on: tuple[int, ...],
    *,
    callbacks: Sequence[TrainCallback],
    device: str,
) -> Predictions:
    """Train model m on folds `trained_on`, score the folds `group` (reused when written)."""
    done, recipe = out_dir / f"model_{m}.parquet", out_dir / f"model_{m}.json"
    folds = manifest["fold"].to_numpy()
    scored = manifest[np.isin(folds, group)].reset_index(drop=True)
    cfg = crossfit_train_config(train_config, config, out_dir / f"model_{m}")
    described = json.dumps(
        {"train_config": cfg.model_dump(mode="json", exclude={"output_dir"}),
         "trained_on": list(trained_on), "train_images": _ids(manifest, folds, trained_on)},
        sort_keys=True,
    )  # fmt: skip
    if done.exists() and recipe.exists() and recipe.read_text(encoding="utf-8") == described:
        part = read_predictions(done)
        if list(part.image_ids) == scored["image_id"].tolist():
            return part
    train_rows = manifest[np.isin(folds, trained_on)].reset_index(drop=True)
    result = train(cfg, train_rows, taxonomy, callbacks=callbacks)
    model = create_model(cfg.model.to_model_config(len(taxonomy)))
    model.load_state_dict(read_checkpoint_weights(result.last_checkpoint))
    probs = predict_manifest(
        model.to(device).eval(),
        _with_resolved_paths(scored, cfg),
        preprocessing_of(cfg),
        cache_dir=cfg.data.cache_dir,
        batch_size=config.score_batch_size,
        device=device,
    )
    part = Predictions(
        scored["image_id"].to_numpy(),
        scored["fold"].to_numpy().astype(np.int64),
        probs,
        taxonomy.tag_ids,
        train_folds=trained_on,
    )
    write_predictions(part, done)
    recipe.write_text(described, encoding="utf-8")
    if not config.keep_checkpoints:
        shutil.rmtree(cfg.output_dir, ignore_errors=True)
    return part
