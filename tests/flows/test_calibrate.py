"""Flow `calibrate`: every task through `.fn`, and the flow end to end with a local MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from flows import calibrate as flow_module
from flows.tracking import TrackingConfig
from tests.tagger.bundle_fixtures import write_calibration_inputs


def _overrides(tmp_path: Path) -> dict[str, object]:
    paths = write_calibration_inputs(tmp_path / "in", train_folds=(0, 1))
    return {
        "predictions": str(paths["predictions"]),
        "manifest": str(paths["manifest"]),
        "taxonomy": str(paths["taxonomy"]),
        "output_dir": str(tmp_path / "out"),
        "calib_folds": [2, 3],
        "check_folds": [4],
        "calibration": {"target_precision": 0.8, "min_positives": 5},
    }


def test_tasks_one_by_one(tmp_path: Path) -> None:
    cfg = flow_module.load_job.fn(None, _overrides(tmp_path))
    inputs = flow_module.load_inputs.fn(cfg)
    assert inputs.probs.shape == (600, 4) and inputs.train_folds == (0, 1)
    calibration = flow_module.calibrate_task.fn(cfg, inputs)
    assert (calibration.report["support_pos"] + calibration.report["support_neg"]).max() == 240
    check = flow_module.check_task.fn(cfg, inputs, calibration)
    assert check is not None and check.table["support_pos"].max() <= 120
    outputs = flow_module.write_task.fn(cfg, inputs, calibration, check)
    assert outputs.thresholds.exists() and outputs.report.exists()
    tracking = TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="calib-test"
    )
    run_id = flow_module.log_task.fn(outputs, calibration, tracking, str(tmp_path))
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.params["dataset_hash"] == inputs.dataset_hash
    assert "calibration_map" in run.data.metrics and "check_median_precision" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run_id, "review")}
    assert {
        "review/tag_report.json",
        "review/thresholds.json",
        "review/pr_curves.png",
        "review/support.png",
        "review/f1_vs_frequency.png",
    } <= names
    # artifacts stay in the work folder, not in the current folder's ./mlruns
    assert any((tmp_path / "mlartifacts").rglob("thresholds.json"))


def test_flow_end_to_end(tmp_path: Path) -> None:
    tracking = TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="calib-flow"
    )
    result = flow_module.calibrate(None, _overrides(tmp_path), tracking)
    assert Path(result["thresholds"]).exists()
    assert result["summary"]["status"]["ok"] >= 3
    assert np.isfinite(result["summary"]["check"]["micro_precision"])
    run = MlflowClient(tracking.tracking_uri).get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
