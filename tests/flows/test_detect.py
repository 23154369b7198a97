"""The detect and fuse tasks through `task.fn`: files written, MLflow runs logged (the detector
as a run nested under the training run), and what the bundle gets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from flows.detect import bundle_detector, fuse_detector_evidence, train_small_object_detector
from flows.stages import Assembled, Trained
from flows.tracking import TrackingConfig, ensure_experiment, mlflow_uris, resolve_tracking
from tagger.data.manifest import write_manifest
from tagger.detect.detections import DetectorConfig, DetectorTraining
from tagger.train.predictions import Predictions, read_predictions, write_predictions
from tests.tagger.bundle_fixtures import tiny_taxonomy
from tests.tagger.detect.fixtures import write_detection_manifest


@pytest.mark.slow  # ~90 s on two busy cores (MLflow store, detector training)
def test_detect_and_fuse_tasks(tmp_path: Path) -> None:
    import yaml

    tax = tiny_taxonomy()
    tax_path = tmp_path / "taxonomy.yaml"
    tax_path.write_text(yaml.safe_dump(tax.to_dict()), encoding="utf-8")
    manifest = write_detection_manifest(tmp_path / "data", n=24)
    data = Assembled(
        manifest=write_manifest(manifest, tmp_path / "manifest.parquet"),
        cache_dir=tmp_path / "cache", cache_size=64, taxonomy=tax_path,
        report=tmp_path / "r.md", problems=tmp_path / "p.csv", images=24, problem_count=0,
    )  # fmt: skip
    tracking = resolve_tracking(TrackingConfig(), tmp_path / "work")
    experiment = ensure_experiment(tracking)
    client = MlflowClient(tracking.tracking_uri)
    with mlflow_uris(tracking.tracking_uri):
        run_id = client.create_run(experiment).info.run_id
    trained = Trained(run_id=run_id, experiment_id=experiment, checkpoint=tmp_path / "ckpt",
                      best_val_map=None, epochs=1)  # fmt: skip
    config = DetectorConfig(enabled=True, architecture="ssd_tiny", image_size=64, tags=("dog",),
                            fusion_min_positives=3,
                            training=DetectorTraining(max_steps=2, batch_size=4))  # fmt: skip
    work = tmp_path / "work"
    detected = train_small_object_detector.fn(config, data, 0, trained, tracking, work)
    assert detected.weights.exists() and detected.tag_ids == ("dog",)
    child = client.get_run(detected.run_id)  # type: ignore[arg-type]
    assert child.data.tags["mlflow.parentRunId"] == run_id
    assert "map50" in child.data.metrics and "train_loss" in child.data.metrics
    assert any(a.path == "samples" for a in client.list_artifacts(child.info.run_id))

    held = manifest[manifest["fold"] == 0]
    probs = np.random.default_rng(0).random((len(held), len(tax))).astype(np.float32)
    heldout = write_predictions(
        Predictions(held["image_id"].to_numpy(), held["fold"].to_numpy(), probs, tax.tag_ids),
        tmp_path / "heldout.parquet",
    )
    fused = fuse_detector_evidence.fn(config, heldout, detected, data, trained, tracking, work)
    assert read_predictions(fused.predictions).probs.shape == probs.shape
    logged = client.get_run(run_id).data.metrics
    assert "fusion.mean_ap_gain" in logged and "detector.map50" in logged
    names = {a.path for a in client.list_artifacts(run_id, "fusion")}
    assert "fusion/fusion.json" in names and "fusion/fusion_report.csv" in names
    settings, weights = bundle_detector(config, detected, fused)
    assert settings["architecture"]["tag_ids"] == ["dog"] and weights
    assert not (Path.cwd() / "mlflow.db").exists() or pytest.fail("mlflow.db in the cwd")
