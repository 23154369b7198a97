"""A tiny model bundle (timm `test_resnet` at 32 px, four tags) and a few images, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from label_system.priors import PriorRules
from label_system.taxonomy import Taxonomy
from tagger.bundle.model_bundle import Bundle, create_bundle
from tagger.calibrate.thresholds import CalibrationConfig, calibrate_thresholds
from tagger.train.model import ModelConfig, create_model


def tiny_taxonomy() -> Taxonomy:
    """animal <- dog, animal <- cat; beach in another category."""

    def tag(i: str, cat: str, parents: list[str] | None = None) -> dict[str, object]:
        return {"id": i, "names": {"en": i.title()}, "category": cat, "parents": parents or []}

    return Taxonomy.from_dict({
        "name": "tiny", "version": "1",
        "categories": [{"id": "animals", "names": {"en": "Animals"}},
                       {"id": "scenes", "names": {"en": "Scenes"}}],
        "tags": [tag("animal", "animals"), tag("dog", "animals", ["animal"]),
                 tag("cat", "animals", ["animal"]), tag("beach", "scenes")],
    })  # fmt: skip


def make_bundle(seed: int = 0, dataset_hash: str = "hash0", with_extras: bool = True) -> Bundle:
    """A bundle with random weights and thresholds calibrated on random held-out scores."""
    taxonomy = tiny_taxonomy()
    cfg = ModelConfig(backbone="test_resnet", num_tags=len(taxonomy), image_size=32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model(cfg)
    rng = np.random.default_rng(seed)
    targets = (rng.random((200, 4)) < 0.3).astype(np.float32)
    probs = np.clip(rng.random((200, 4)) * 0.7 + 0.3 * targets, 0, 1).astype(np.float32)
    known = np.ones((200, 4), dtype=bool)
    known[:, 3] = rng.random(200) < 0.1  # beach: few known cells -> a fallback
    calibration = calibrate_thresholds(
        probs, targets, known, taxonomy, CalibrationConfig(target_precision=0.6)
    )
    priors = PriorRules.from_dict({"excludes": [{"tags": ["dog", "beach"]}]}, taxonomy)
    return create_bundle(
        model, cfg, taxonomy, calibration,
        priors=priors if with_extras else None,
        detector={"kind": "none", "min_score": 0.25} if with_extras else None,
        metrics={"val_map": 0.5, "seed": seed},
        dataset_hash=dataset_hash,
    )  # fmt: skip


def write_images(directory: Path, n: int = 3, seed: int = 0) -> list[Path]:
    """`n` small RGB PNGs of different sizes."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(24 + 8 * i, 40, 3), dtype=np.uint8)
        path = directory / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def write_calibration_inputs(
    directory: Path, n: int = 600, seed: int = 0, train_folds: tuple[int, ...] = ()
) -> dict[str, Path]:
    """A manifest (no images needed), its taxonomy YAML, and held-out predictions for it."""
    import pandas as pd
    import yaml

    from tagger.data.manifest import MANIFEST_COLUMNS, write_manifest
    from tagger.train.predictions import Predictions, write_predictions

    directory.mkdir(parents=True, exist_ok=True)
    taxonomy = tiny_taxonomy()
    rng = np.random.default_rng(seed)
    tags = list(taxonomy.tag_ids)
    targets = rng.random((n, 4)) < np.array([0.5, 0.3, 0.2, 0.1])
    targets[:, 0] |= targets[:, 1] | targets[:, 2]  # dog, cat -> animal
    known = np.ones((n, 4), dtype=bool)
    known[n // 2 :, 3] = False  # half the images come from a source that cannot see beaches
    rows = []
    for i in range(n):
        rows.append({
            "image_id": f"img{i:05d}", "path": f"/nowhere/img{i:05d}.jpg", "content_hash": "",
            "width": 64, "height": 48, "source": "synthetic", "sources": ["synthetic"],
            "tags": [t for t, y in zip(tags, targets[i], strict=True) if y],
            "known": [t for t, k in zip(tags, known[i], strict=True) if k],
            "provenance": [], "boxes": [], "mask_path": None, "fold": i % 5,
        })  # fmt: skip
    manifest = write_manifest(
        pd.DataFrame(rows, columns=MANIFEST_COLUMNS), directory / "manifest.parquet"
    )
    (directory / "taxonomy.yaml").write_text(yaml.safe_dump(taxonomy.to_dict(), sort_keys=False))
    probs = np.clip(rng.random((n, 4)) * 0.6 + 0.4 * targets, 0, 1).astype(np.float32)
    order = rng.permutation(n)  # predictions need not follow the manifest's row order
    pred = Predictions(
        image_ids=np.array([f"img{i:05d}" for i in order], dtype=object),
        folds=order % 5,
        probs=probs[order][:, ::-1].copy(),  # and their columns need not follow the taxonomy
        tag_ids=tuple(reversed(tags)),
        train_folds=train_folds,
    )
    predictions = write_predictions(pred, directory / "predictions.parquet")
    return {
        "manifest": manifest,
        "taxonomy": directory / "taxonomy.yaml",
        "predictions": predictions,
    }
