"""What the retrain flow's stages hand each other: paths and figures, never data.

Each stage task returns one of these (persisted as JSON by `flows.caching`), and the next
stage reads the files it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from tagger.train.training import TrainConfig


class Assembled(BaseModel):
    """The assembled data set: manifest, resized-image cache, report."""

    model_config = ConfigDict(frozen=True)

    manifest: Path
    cache_dir: Path
    cache_size: int
    taxonomy: Path | None  # None: the shipped album taxonomy
    report: Path
    problems: Path
    images: int
    problem_count: int


class Trained(BaseModel):
    """A training run: its MLflow run and best checkpoint."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str
    checkpoint: Path
    best_val_map: float | None
    epochs: int


class Calibrated(BaseModel):
    """Thresholds chosen on the held-out fold, with the report, plots and summary figures."""

    model_config = ConfigDict(frozen=True)

    predictions: Path
    thresholds: Path
    report: Path
    plots: dict[str, Path]
    summary: dict[str, Any]


class Registered(BaseModel):
    """The registered model version (alias @candidate)."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    model_uri: str
    run_id: str


class Promotion(BaseModel):
    """The promotion decision as written on the model version."""

    model_config = ConfigDict(frozen=True)

    promoted: bool
    reason: str
    champion_version: str | None  # @champion after this run
    compared_with: str | None  # the champion it was compared with
    candidate: dict[str, float] | None
    champion: dict[str, float] | None


class RetrainSummary(BaseModel):
    """What a retrain run did and where to look."""

    model_config = ConfigDict(frozen=True)

    work_dir: Path
    tracking_uri: str
    experiment: str
    manifest: Path
    images: int
    run_id: str
    bundle: Path
    model_name: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None
    metrics: dict[str, float]
    mlflow_ui: str
    markdown: str


class Cleaned(BaseModel):
    """The clean stage: the data to train on (a new manifest version when labels changed) and
    the review material."""

    model_config = ConfigDict(frozen=True)

    assembled: Assembled  # as assembled, with `manifest` the cleaned version
    base_manifest: Path
    predictions: Path  # the out-of-fold predictions that ranked the issues
    output_dir: Path
    changes: Path | None
    queue: Path
    contact_sheet: Path
    label_studio_tasks: Path
    label_studio_config: Path
    issues_per_tag: Path
    issues_per_source: Path
    summary: dict[str, Any]


def training_config(config: TrainConfig, data: Assembled, out_dir: Path) -> TrainConfig:
    """`config` reading the assembled manifest, cache and taxonomy, writing into `out_dir`."""
    updates = {
        "manifest": data.manifest,
        "cache_dir": data.cache_dir,
        "cache_size": data.cache_size,
        "taxonomy": data.taxonomy,
    }
    return config.model_copy(
        update={"data": config.data.model_copy(update=updates), "output_dir": out_dir}
    )
