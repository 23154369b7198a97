"""Retrain tasks of stage 4: `detect` (train the small-object detector, evaluate it on the
held-out fold) and `fuse` (per-tag fusion of its evidence with the classifier's held-out
scores; the fused predictions file is what calibration reads).

Each task loads files, calls one library job (`tagger.detect.job`), saves and logs: the
detector as its own MLflow run nested under the training run (params, loss, mAP50 on the
held-out fold, sample images with boxes), the fusion into the training run (per-tag AP with
and without fusion as a table and a plot, the fusion weights, gate share and cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from pydantic import BaseModel, ConfigDict

from flows.caching import stage_dir
from flows.heldout import load_config_taxonomy, write_heldout_predictions
from flows.stages import Assembled, Trained
from flows.tracking import Tracking, mlflow_uris
from tagger.detect.detections import DetectorConfig


class Detected(BaseModel):
    """A trained detector and its held-out detections."""

    model_config = ConfigDict(frozen=True)

    weights: Path
    architecture: Path
    detections: Path
    tag_ids: tuple[str, ...]
    metrics: dict[str, float]
    run_id: str | None


class Fused(BaseModel):
    """Fused held-out predictions (for calibration), the fusion model and its report."""

    model_config = ConfigDict(frozen=True)

    predictions: Path
    fusion: Path
    report: Path
    plot: Path | None
    summary: dict[str, Any]


@task(name="detect")
def train_small_object_detector(
    config: DetectorConfig, data: Assembled, val_fold: int, trained: Trained, tracking: Tracking,
    work_dir: Path,
) -> Detected:  # fmt: skip
    """Train the detector on the training folds' boxes, evaluate on the held-out fold; logged
    as an MLflow run nested under the training run."""
    from mlflow import MlflowClient

    from tagger.detect.job import run_detect_job

    out = stage_dir(work_dir, "detect", config=config, data=data, val_fold=val_fold)
    taxonomy = load_config_taxonomy(data.taxonomy)
    losses: list[tuple[int, float]] = []
    outputs = run_detect_job(
        data.manifest, taxonomy, val_fold, config, out, on_step=lambda s, v: losses.append((s, v))
    )
    with mlflow_uris(tracking.tracking_uri):
        client = MlflowClient(tracking.tracking_uri)
        parent = client.get_run(trained.run_id)
        run = client.create_run(
            parent.info.experiment_id,
            run_name="detector",
            tags={"mlflow.parentRunId": trained.run_id, "stage": "detect"},
        )
        run_id = run.info.run_id
        params = config.model_dump(mode="json", exclude={"training", "tiling", "gate"})
        params |= {f"training.{k}": v for k, v in config.training.model_dump().items()}
        params |= {"tags_covered": ",".join(outputs.tag_ids)}
        for key, value in params.items():
            client.log_param(run_id, key, str(value)[:500])
        for step, loss in losses:
            client.log_metric(run_id, "train_loss", loss, step=step)
        for key, value in outputs.metrics.items():
            if value == value:  # NaN metrics (a tag without held-out boxes) are not logged
                client.log_metric(run_id, key.replace("/", "."), value)
        for sample in outputs.samples:
            client.log_artifact(run_id, str(sample), "samples")
        client.log_artifact(run_id, str(outputs.architecture))
        client.set_terminated(run_id)
    return Detected(
        weights=outputs.weights,
        architecture=outputs.architecture,
        detections=outputs.detections,
        tag_ids=outputs.tag_ids,
        metrics=outputs.metrics,
        run_id=run_id,
    )


@task(name="score-heldout")
def score_heldout(checkpoint: Path, data: Assembled, val_fold: int, work_dir: Path) -> Path:
    """The classifier's predictions file on the held-out fold (what fusion learns from)."""
    out = stage_dir(work_dir, "score-heldout", checkpoint=checkpoint, data=data, val_fold=val_fold)
    return write_heldout_predictions(
        checkpoint, data.manifest, data.cache_dir, val_fold, out / "heldout_predictions.parquet"
    )


@task(name="fuse")
def fuse_detector_evidence(
    config: DetectorConfig, predictions: Path, detected: Detected, data: Assembled,
    trained: Trained, tracking: Tracking, work_dir: Path,
) -> Fused:  # fmt: skip
    """Fit per-tag fusion on the held-out predictions + detections; write fused predictions;
    log the per-tag AP table and plot, fusion weights and gate figures into the training run."""
    import pandas as pd
    from mlflow import MlflowClient

    from tagger.detect.job import run_fuse_job

    out = stage_dir(
        work_dir, "fuse", config=config, predictions=predictions, detected=detected, data=data
    )
    outputs = run_fuse_job(
        predictions,
        detected.detections,
        data.manifest,
        load_config_taxonomy(data.taxonomy),
        detected.tag_ids,
        config,
        out,
    )
    summary = outputs.summary
    with mlflow_uris(tracking.tracking_uri):
        client = MlflowClient(tracking.tracking_uri)
        run_id = trained.run_id
        report = pd.read_csv(outputs.report)
        client.log_table(run_id, report, "fusion/per_tag_ap.json")
        client.log_artifact(run_id, str(outputs.report), "fusion")
        client.log_artifact(run_id, str(outputs.fusion), "fusion")
        if outputs.plot is not None:
            client.log_artifact(run_id, str(outputs.plot), "fusion")
        for key in ("tags_fused", "mean_ap_gain", "detector_run_share", "gating_ap_cost"):
            client.log_metric(run_id, f"fusion.{key}", float(summary[key]))
        for key, value in detected.metrics.items():
            if value == value:
                client.log_metric(run_id, f"detector.{key.replace('/', '.')}", value)
    return Fused(
        predictions=outputs.predictions,
        fusion=outputs.fusion,
        report=outputs.report,
        plot=outputs.plot,
        summary=summary,
    )


def bundle_detector(
    config: DetectorConfig, detected: Detected, fused: Fused
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(detector.json settings, detector weights) for the model bundle."""
    import json

    from tagger.detect.fusion import FusionModel
    from tagger.detect.runtime import bundle_detector_settings
    from tagger.detect.weights import read_state_dict

    architecture = json.loads(detected.architecture.read_text(encoding="utf-8"))
    fusion = FusionModel.from_dict(json.loads(fused.fusion.read_text(encoding="utf-8")))
    settings = bundle_detector_settings(architecture, config, fusion)
    return settings, read_state_dict(detected.weights)
