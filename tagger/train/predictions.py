"""Model outputs on manifest images: probabilities `[N, num_tags]` of a model, and the
predictions file (Parquet) that carries them between stages.

A predictions file holds, per image, its id, its fold and the probabilities, with the tag ids
and the folds the model trained on in its metadata. The held-out and out-of-fold predictions
that calibration, fusion, priors and cleaning read are all in this format.

Out-of-fold (cross-fitted, `tagger.train.crossfit`) files score each row with one of several
models: a `scored_by` column names the model per row, and the metadata lists each model's
training folds (`models`); the rule "a row's fold is never among its model's training folds" is
checked on write and on read (`check_out_of_fold`). Files without them (one model, its training
folds in `train_folds`) read as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from label_system.taxonomy import Taxonomy
from tagger.data.manifest import targets_from_manifest
from tagger.train.dataset import TaggingDataset, create_loader, normalize_images

PREDICTIONS_FORMAT = "album-tagger-predictions"


# ---- probabilities ---------------------------------------------------------------------------


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Sigmoid probabilities `[N, num_tags]` float32, in batch order.

    `batches` yields image tensors `[B, 3, H, W]` or tuples whose first item is one (a
    `TaggingDataset` loader); uint8 images are normalised by mean/std here.
    """
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    for batch in batches:
        images = batch[0] if isinstance(batch, tuple | list) else batch
        images = normalize_images(images.to(device), mean, std)
        out.append(torch.sigmoid(model(images).float()).cpu().numpy())
    model.train(was_training)
    if not out:
        raise ValueError("predict_probs: no batches")
    return np.concatenate(out).astype(np.float32, copy=False)


def eval_loader(
    manifest: pd.DataFrame,
    preprocessing: dict[str, Any],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
) -> Iterable[Any]:
    """Batches of the manifest's rows in row order, as uint8 images `[B, 3, S, S]` in the
    bundle's eval view (`preprocessing`: image_size, resize), read from the resized cache."""
    no_labels = np.zeros((len(manifest), 1), dtype=np.float32)
    dataset = TaggingDataset(
        manifest["path"].tolist(),
        manifest["content_hash"].fillna("").tolist(),
        no_labels,
        no_labels.astype(bool),
        image_size=int(preprocessing["image_size"]),
        cache_dir=cache_dir,
        eval_fit=preprocessing.get("resize", "squash"),
    )
    return create_loader(dataset, batch_size=batch_size, num_workers=num_workers)


def predict_manifest(
    model: nn.Module,
    manifest: pd.DataFrame,
    preprocessing: dict[str, Any],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Probabilities `[N, num_tags]` for the manifest's rows, in row order (the eval view)."""
    loader = eval_loader(
        manifest, preprocessing, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers
    )
    return predict_probs(
        model, loader, mean=preprocessing["mean"], std=preprocessing["std"], device=device
    )


# ---- the predictions file --------------------------------------------------------------------


@dataclass(frozen=True)
class Predictions:
    """Held-out probabilities `[N, T]` with image ids and folds `[N]`, columns `tag_ids`."""

    image_ids: np.ndarray
    folds: np.ndarray
    probs: np.ndarray
    tag_ids: tuple[str, ...]
    train_folds: tuple[int, ...] = ()  # folds the scoring model saw; () = out-of-fold
    # cross-fitted files: row i was scored by model scored_by[i], trained on models[scored_by[i]]
    scored_by: np.ndarray | None = None  # [N] int
    models: tuple[tuple[int, ...], ...] = ()

    def row_train_folds(self) -> list[tuple[int, ...]]:
        """The folds the model that scored each row trained on, `[N]` tuples."""
        if self.scored_by is None:
            return [self.train_folds] * len(self.image_ids)
        return [self.models[int(m)] for m in self.scored_by]


OUT_OF_FOLD_RULE = (
    "row i was scored by model scored_by[i], trained only on the folds models[scored_by[i]], "
    "which never include the row's fold"
)


def check_out_of_fold(pred: Predictions, where: str = "predictions") -> None:
    """Raise a ValueError when a row was scored by a model that trained on the row's fold.

    Also checks the cross-fit fields fit together (`scored_by` indexes `models`). A file of one
    model (no `scored_by`) passes: its `train_folds` are checked where folds are chosen.
    """
    if pred.scored_by is None:
        return  # one model: its training folds are `train_folds`, refused by the calibrate job
    scored_by = np.asarray(pred.scored_by)
    if len(scored_by) != len(pred.image_ids):
        raise ValueError(f"{where}: scored_by has {len(scored_by)} rows, {len(pred.image_ids)} ids")
    if len(scored_by) and (scored_by.min() < 0 or scored_by.max() >= len(pred.models)):
        raise ValueError(
            f"{where}: scored_by values must index the {len(pred.models)} models; got "
            f"{int(scored_by.min())}..{int(scored_by.max())}"
        )
    for m, folds in enumerate(pred.models):
        rows = np.flatnonzero(scored_by == m)
        bad = rows[np.isin(np.asarray(pred.folds)[rows], list(folds))]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{where}: row {i} (image {pred.image_ids[i]!r}, fold {int(pred.folds[i])}) was "
                f"scored by model {m}, which trained on folds {list(folds)}: not out-of-fold"
            )


def write_predictions(pred: Predictions, path: str | Path) -> Path:
    """Write a predictions file (Parquet, see the module docstring)."""
    path = Path(path)
    n, t = pred.probs.shape
    if len(pred.tag_ids) != t or len(pred.image_ids) != n or len(pred.folds) != n:
        raise ValueError(
            f"predictions: probs {pred.probs.shape}, {len(pred.image_ids)} image "
            f"ids, {len(pred.folds)} folds, {len(pred.tag_ids)} tag ids"
        )
    check_out_of_fold(pred, str(path))
    flat = pa.array(np.ascontiguousarray(pred.probs, dtype=np.float32).ravel())
    meta: dict[str, Any] = {
        "format": PREDICTIONS_FORMAT,
        "tag_ids": list(pred.tag_ids),
        "train_folds": [int(f) for f in pred.train_folds],
    }
    columns = {
        "image_id": pa.array([str(i) for i in pred.image_ids], pa.string()),
        "fold": pa.array(np.asarray(pred.folds, dtype=np.int16)),
        "probs": pa.FixedSizeListArray.from_arrays(flat, t),
    }
    if pred.scored_by is not None:
        columns["scored_by"] = pa.array(np.asarray(pred.scored_by, dtype=np.int16))
        meta["models"] = [[int(f) for f in folds] for folds in pred.models]
        meta["rule"] = OUT_OF_FOLD_RULE
    table = pa.table(columns).replace_schema_metadata({"tagger": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_predictions(path: str | Path) -> Predictions:
    """Read a predictions file written by `write_predictions` (cross-fitted ones are checked
    to be out-of-fold)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions file not found: {path}")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"tagger")
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != PREDICTIONS_FORMAT:
        raise ValueError(f"{path}: not a predictions file (no {PREDICTIONS_FORMAT!r} metadata)")
    missing = [c for c in ("image_id", "fold", "probs") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    t = len(meta["tag_ids"])
    column = table.column("probs").combine_chunks()
    probs = column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), t)
    scored_by = None
    if "scored_by" in table.column_names:
        scored_by = table.column("scored_by").to_numpy().astype(np.int64)
    pred = Predictions(
        image_ids=np.asarray(table.column("image_id").to_pylist(), dtype=object),
        folds=table.column("fold").to_numpy().astype(np.int64),
        probs=probs.astype(np.float32, copy=False),
        tag_ids=tuple(meta["tag_ids"]),
        train_folds=tuple(int(f) for f in meta.get("train_folds", [])),
        scored_by=scored_by,
        models=tuple(tuple(int(f) for f in m) for m in meta.get("models", [])),
    )
    check_out_of_fold(pred, str(path))
    return pred


def align_predictions(
    pred: Predictions, manifest: pd.DataFrame, taxonomy: Taxonomy
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(probs, targets, known [N, T], folds [N])` for predicted images, taxonomy column order.

    Rows join by image_id; folds come from the manifest. Raises when an image or a taxonomy tag
    is missing from the other side.
    """
    index = pd.Index(manifest["image_id"])
    rows = index.get_indexer(pred.image_ids)
    if (rows < 0).any():
        bad = list(np.asarray(pred.image_ids)[rows < 0][:5])
        raise ValueError(
            f"predictions: {int((rows < 0).sum())} image ids not in the manifest, e.g. {bad}"
        )
    cols = pd.Index(pred.tag_ids).get_indexer(pd.Index(taxonomy.tag_ids))
    if (cols < 0).any():
        bad = [t for t, c in zip(taxonomy.tag_ids, cols, strict=True) if c < 0][:10]
        raise ValueError(f"predictions lack taxonomy tags {bad}")
    sub = manifest.iloc[rows]
    targets, known = targets_from_manifest(sub, taxonomy)
    folds = sub["fold"].to_numpy().astype(np.int64)
    return pred.probs[:, cols], targets, known, folds
