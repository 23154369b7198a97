"""Glue between a training checkpoint and the calibration / bundle / promotion steps.

Each function loads files, calls the library once, and writes or returns the result; the
retrain flow's tasks call them. The held-out fold is the training run's validation fold: the
checkpoint never trained on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from label_system.priors import load_priors
from label_system.taxonomy import Taxonomy, load_default_taxonomy, load_taxonomy
from tagger.bundle.model_bundle import Bundle, create_bundle
from tagger.calibrate.evaluation import EvalData
from tagger.calibrate.thresholds import read_thresholds
from tagger.data.images import hash_file
from tagger.data.manifest import read_manifest
from tagger.inference.rules import RuleStep
from tagger.train.checkpoint import read_checkpoint_meta, read_checkpoint_weights
from tagger.train.model import ModelConfig, create_model
from tagger.train.predictions import Predictions, predict_manifest, write_predictions

EVAL_BATCH = 32


def load_config_taxonomy(path: Path | None) -> Taxonomy:
    """The taxonomy file, or the shipped album taxonomy for None."""
    return load_taxonomy(path) if path is not None else load_default_taxonomy()


def heldout_rows(manifest: pd.DataFrame, val_fold: int) -> pd.DataFrame:
    """The manifest rows of the held-out fold (fails when it is empty)."""
    held = manifest[manifest["fold"] == val_fold].reset_index(drop=True)
    if held.empty:
        folds = sorted(set(manifest["fold"].tolist()))
        raise ValueError(f"held-out fold {val_fold} has no images; folds present: {folds}")
    return held


def write_heldout_predictions(
    checkpoint: Path, manifest: Path, cache_dir: Path, val_fold: int, out: Path
) -> Path:
    """Probabilities `[N_heldout, T]` of the checkpoint on fold `val_fold`, as a predictions
    file whose metadata records the folds the model trained on."""
    meta = read_checkpoint_meta(checkpoint)
    model = create_model(ModelConfig.model_validate(meta["model_config"]))
    model.load_state_dict(read_checkpoint_weights(checkpoint))
    table = read_manifest(manifest)
    held = heldout_rows(table, val_fold)
    probs = predict_manifest(
        model.eval(), held, meta["preprocessing"], cache_dir=cache_dir, batch_size=EVAL_BATCH
    )
    train_folds = tuple(sorted(int(f) for f in set(table["fold"].tolist()) - {val_fold}))
    pred = Predictions(
        held["image_id"].to_numpy(),
        held["fold"].to_numpy(),
        probs,
        tuple(meta["tag_ids"]),
        train_folds=train_folds,
    )
    return write_predictions(pred, out)


def build_bundle(
    checkpoint: Path,
    thresholds: Path,
    manifest: Path,
    taxonomy: Path | None,
    metrics: dict[str, Any],
    demo: bool = False,
    priors: Path | None = None,
) -> Bundle:
    """A bundle from the checkpoint's weights and preprocessing, the calibrated thresholds and
    the prior rules in force (a priors YAML; None: no rules); it records what it was trained on
    (`training_data_of`), `demo` for the drawn demo set."""
    meta = read_checkpoint_meta(checkpoint)
    tax = load_config_taxonomy(taxonomy)
    return create_bundle(
        read_checkpoint_weights(checkpoint),
        ModelConfig.model_validate(meta["model_config"]),
        tax,
        read_thresholds(thresholds, tax),
        preprocessing=dict(meta["preprocessing"]),
        priors=None if priors is None else load_priors(priors, tax),
        metrics=metrics,
        dataset_hash=hash_file(manifest),
        training_data=training_data_of(read_manifest(manifest), demo),
    )


def training_data_of(manifest: pd.DataFrame, demo: bool) -> dict[str, Any]:
    """What a bundle records of its data: a name (the sources, or "demo"), the sources, the
    image count, and whether it is the drawn demo set."""
    sources = sorted({str(s) for s in manifest["source"]}) if "source" in manifest else []
    return {
        "name": "demo" if demo else "+".join(sources) or "unnamed",
        "sources": sources,
        "images": len(manifest),
        "demo": demo,
    }


def heldout_eval(
    manifest: Path, cache_dir: Path, taxonomy: Path | None, val_fold: int
) -> tuple[EvalData, Callable[[Bundle], np.ndarray]]:
    """Labels of the held-out fold and a `predict_fn(bundle) -> probs [N, bundle's T]` on the
    same images, for comparing two registered models."""
    held = heldout_rows(read_manifest(manifest), val_fold)
    data = EvalData.from_manifest(held, load_config_taxonomy(taxonomy))

    def predict_fn(bundle: Bundle) -> np.ndarray:
        probs = predict_manifest(
            bundle.create_model(),
            held,
            bundle.preprocessing,
            cache_dir=cache_dir,
            batch_size=EVAL_BATCH,
        )
        # the scores the bundle thresholds at prediction time: its prior rules applied
        scores, _ = RuleStep(bundle.taxonomy, bundle.priors, bundle.thresholds)(probs)
        return scores

    return data, predict_fn
