"""The retrain flow's precision stage: check bf16 and int8 against fp32, record it in the bundle.

    bundle (fp32) -> + int8 calibration images (training folds) -> check each precision on the
    held-out fold -> bundle with precision.json -> MLflow (metrics + precision.json)

The check itself is `tagger.inference.precision.verify_precisions` (the backends a job runs)
with the rules of `tagger.calibrate.precision_check`; `tagger predict --precision auto` only
uses a precision that passed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from prefect import task

from flows.caching import stage_dir
from flows.stages import Assembled, Trained
from flows.tracking import Tracking, mlflow_uris
from tagger.calibrate.precision_check import PrecisionCheckConfig, PrecisionReport
from tagger.data.manifest import read_manifest, targets_from_manifest

RETRY_DELAYS: list[float] = [2, 10, 30]


def add_precision_check(
    bundle_dir: Path,
    manifest: Path,
    cache_dir: Path,
    val_fold: int,
    config: PrecisionCheckConfig,
    out: Path,
) -> Path:
    """The bundle at `bundle_dir` with int8 calibration images (a seeded sample of the training
    folds) and the precision check on fold `val_fold`, saved to `out`."""
    from tagger.bundle.model_bundle import read_bundle, save_bundle
    from tagger.inference.verification import verify_precisions
    from tagger.train.precision import manifest_pixels

    bundle = read_bundle(bundle_dir)
    table = read_manifest(manifest)
    held = table[table["fold"] == val_fold].reset_index(drop=True)
    train_rows = table[table["fold"] != val_fold]
    calibration = None
    if "int8" in config.precisions and config.calibration_images > 0 and len(train_rows):
        sample = train_rows.sample(
            n=min(config.calibration_images, len(train_rows)), random_state=config.seed
        ).reset_index(drop=True)
        calibration = manifest_pixels(sample, bundle.preprocessing, cache_dir=cache_dir)
    bundle = replace(bundle, calibration_images=calibration)
    targets, known = targets_from_manifest(held, bundle.taxonomy)
    pixels = manifest_pixels(held, bundle.preprocessing, cache_dir=cache_dir)
    report = verify_precisions(
        bundle,
        pixels,
        np.asarray(targets),
        np.asarray(known),
        precisions=config.precisions,
        rules=config.rules,
        cache_dir=str(out / "onnx"),
    )
    bundle = replace(bundle, precision=report.model_dump(mode="json"))
    return save_bundle(bundle, out / "bundle")


@task(name="check-precision")
def check_precision(
    bundle: Path, data: Assembled, val_fold: int, config: PrecisionCheckConfig, work_dir: Path
) -> Path:
    """Check the bundle's reduced precisions on the held-out fold; returns the new bundle."""
    out = stage_dir(
        work_dir, "precision", bundle=bundle, data=data, val_fold=val_fold, config=config
    )
    return add_precision_check(bundle, data.manifest, data.cache_dir, val_fold, config, out)


@task(name="log-precision", retries=3, retry_delay_seconds=RETRY_DELAYS)
def log_precision(bundle: Path, trained: Trained, tracking: Tracking) -> dict[str, float]:
    """Log the check into the training run: `precision_<name>_<figure>` metrics, a
    `precision_verified` tag and precision.json. Returns the metrics."""
    from mlflow import MlflowClient

    from tagger.bundle.model_bundle import PRECISION_FILE

    path = bundle / PRECISION_FILE
    report = PrecisionReport.model_validate(json.loads(path.read_text(encoding="utf-8")))
    metrics = report.summary_metrics()
    with mlflow_uris(tracking.tracking_uri):
        client = MlflowClient(tracking.tracking_uri)
        for key, value in metrics.items():
            client.log_metric(trained.run_id, key, value)
        client.set_tag(trained.run_id, "precision_verified", ",".join(report.verified))
        client.log_artifact(trained.run_id, str(path), artifact_path="precision")
    return metrics
