"""Pseudo labels: the model's top-k and a tagging API's mapped predictions on unknown cells.

Two opinions per image, as the seed system used them:
- the model: its top `top_k` tags with probability >= `min_confidence` (defaults 5 and 0.5);
- the API: the `api_predictions` reader's labels with score >= `api_min_score`, mapped onto our
  tags (the identity mapping over tag names and aliases by default, or a mapping file).

A suggestion on an *unknown* cell becomes a pseudo label (provenance kind `pseudo`, source
`model`, `api` or `model+api`); where both agree it may be accepted automatically (config, off
by default), otherwise it waits in the review queue. A suggestion on a *known negative* cell
contradicts a human label: that pair goes to review as a conflict, never applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from label_system.mapping import SourceMapping
from tagger.data.images import hash_file
from tagger.data.sources import SourceTable

PSEUDO_SOURCES = ("model", "api", "model+api")


class PseudoConfig(BaseModel):
    """Which suggestions become pseudo labels.

    top_k / min_confidence: the model's top k tags per image at or above the confidence.
    api_min_score: API labels below this score are ignored.
    auto_accept: apply pseudo labels where model and API agree (off: all go to review).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(default=5, ge=1)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    api_min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    auto_accept: bool = False


@dataclass(frozen=True)
class PseudoLabels:
    """Suggested positives.

    pseudo: unknown cells: image_id, tag, model_prob (NaN: not in the model's top k), api_score
        (NaN: API silent), source ("model" | "api" | "model+api"), accepted (bool).
    conflicts: known-negative cells a suggestion calls positive: the same columns, plus label.
    """

    pseudo: pd.DataFrame
    conflicts: pd.DataFrame


def model_suggestions(
    probs: np.ndarray,
    image_ids: np.ndarray,
    tag_ids: tuple[str, ...],
    top_k: int = 5,
    min_confidence: float = 0.5,
) -> pd.DataFrame:
    """The model's top-k tags per image at or above `min_confidence`: image_id, tag, prob.

    probs: `[N, T]`. Ties at the k-th place are broken by column order.
    """
    n, t = probs.shape
    k = min(top_k, t)
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k] if k < t else np.tile(np.arange(t), (n, 1))
    rows = np.repeat(np.arange(n), top.shape[1])
    cols = top.ravel()
    values = probs[rows, cols]
    keep = values >= min_confidence
    return pd.DataFrame(
        {
            "image_id": np.asarray(image_ids, dtype=object)[rows[keep]],
            "tag": np.asarray(tag_ids, dtype=object)[cols[keep]],
            "prob": values[keep].astype(np.float32),
        }
    )


def api_suggestions(
    table: SourceTable, mapping: SourceMapping, manifest: pd.DataFrame, min_score: float = 0.5
) -> pd.DataFrame:
    """API labels mapped onto tags and joined to manifest images: image_id, tag, score.

    Images join by path, else by content hash (the file is hashed); API images that are not in
    the manifest are dropped. A label that maps to several tags (or ancestors) gives each the
    label's score; repeated (image, tag) pairs keep the highest score.
    """
    labels = table.labels
    if "score" not in labels.columns:
        raise ValueError(f"source {table.name!r}: API labels need a 'score' column")
    labels = labels[labels["score"].astype(float) >= min_score]
    key_to_id = _join_images(table.images, manifest)
    rows: list[tuple[str, str, float]] = []
    for key, label, score in zip(
        labels["image_key"], labels["label"], labels["score"], strict=True
    ):
        image_id = key_to_id.get(str(key))
        if image_id is None:
            continue
        rows.extend((image_id, tag, float(score)) for tag in mapping.tags_for(str(label)))
    out = pd.DataFrame(rows, columns=["image_id", "tag", "score"])
    return out.groupby(["image_id", "tag"], sort=True)["score"].max().reset_index()


def _join_images(images: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, str]:
    """API image_key -> manifest image_id, by resolved path first, then by content hash."""
    by_path = {
        str(Path(p).resolve()): i
        for p, i in zip(manifest["path"], manifest["image_id"], strict=True)
    }
    by_hash = {
        h: i for h, i in zip(manifest["content_hash"], manifest["image_id"], strict=True) if h
    }
    out: dict[str, str] = {}
    for key, path in zip(images["image_key"], images["path"], strict=True):
        image_id = by_path.get(str(Path(path).resolve()))
        if image_id is None and by_hash and Path(path).is_file():
            image_id = by_hash.get(hash_file(path))
        if image_id is not None:
            out[str(key)] = image_id
    return out


def propose_pseudo_labels(
    model: pd.DataFrame,
    api: pd.DataFrame,
    targets: np.ndarray,
    known: np.ndarray,
    image_ids: np.ndarray,
    tag_ids: tuple[str, ...],
    config: PseudoConfig | None = None,
) -> PseudoLabels:
    """Split model (image_id, tag, prob) and API (image_id, tag, score) suggestions into
    pseudo labels on unknown cells and conflicts with known negatives.

    targets / known: `[N, T]` in `image_ids` x `tag_ids` order. Suggestions on known
    positives agree with the label and are dropped.
    """
    config = config or PseudoConfig()
    merged = pd.merge(
        model.rename(columns={"prob": "model_prob"})[["image_id", "tag", "model_prob"]],
        api.rename(columns={"score": "api_score"})[["image_id", "tag", "api_score"]],
        on=["image_id", "tag"],
        how="outer",
    )
    row_of = pd.Index(np.asarray(image_ids, dtype=object))
    col_of = pd.Index(list(tag_ids))
    rows = row_of.get_indexer(pd.Index(merged["image_id"]))
    cols = col_of.get_indexer(pd.Index(merged["tag"]))
    inside = (rows >= 0) & (cols >= 0)
    merged, rows, cols = merged[inside].reset_index(drop=True), rows[inside], cols[inside]
    has_model, has_api = merged["model_prob"].notna(), merged["api_score"].notna()
    merged["source"] = np.where(
        has_model & has_api, "model+api", np.where(has_model, "model", "api")
    )
    is_known = known[rows, cols]
    label = targets[rows, cols] > 0.5
    pseudo = merged[~is_known].copy()
    pseudo["accepted"] = config.auto_accept & (pseudo["source"] == "model+api")
    conflicts = merged[is_known & ~label].copy()
    conflicts["label"] = np.int8(0)
    order = ["image_id", "tag"]
    return PseudoLabels(
        pseudo.sort_values(order, ignore_index=True),
        conflicts.sort_values(order, ignore_index=True),
    )
