"""Prefect flow `calibrate`: held-out predictions -> per-tag thresholds, report, MLflow run.

    python -m flows.calibrate JOB.yaml [--check-folds 2] [--tracking-uri http://127.0.0.1:5000]

The steps of `tagger calibrate` (`tagger.calibrate.job`), one task each, then one MLflow run
with the per-tag table (`log_table`), the plots, the thresholds file and the dataset hash
(`tagger.bundle.registry.log_review`). No retries: every step reads local files; the MLflow task
retries once (a server may be briefly unreachable).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.entry_point import existing_file
from flows.tracking import TrackingConfig, ensure_experiment, mlflow_uris, resolve_tracking
from tagger.calibrate.job import (
    CalibrateInputs,
    CalibrateJobConfig,
    CalibrateOutputs,
    CheckResult,
    calibrate_inputs,
    check_inputs,
    load_calibrate_inputs,
    load_calibrate_job_config,
    write_calibrate_outputs,
)
from tagger.calibrate.thresholds import Calibration

EXPERIMENT = "tagger-calibrate"


@task(name="load-job", cache_policy=NO_CACHE)
def load_job(config: str | None, overrides: dict[str, Any] | None = None) -> CalibrateJobConfig:
    return load_calibrate_job_config(config, overrides)


@task(name="load-inputs", cache_policy=NO_CACHE)
def load_inputs(cfg: CalibrateJobConfig) -> CalibrateInputs:
    return load_calibrate_inputs(cfg)


@task(name="calibrate", cache_policy=NO_CACHE)
def calibrate_task(cfg: CalibrateJobConfig, inputs: CalibrateInputs) -> Calibration:
    return calibrate_inputs(cfg, inputs)


@task(name="check-heldout", cache_policy=NO_CACHE)
def check_task(
    cfg: CalibrateJobConfig, inputs: CalibrateInputs, calibration: Calibration
) -> CheckResult | None:
    return check_inputs(cfg, inputs, calibration)


@task(name="write-outputs", cache_policy=NO_CACHE)
def write_task(
    cfg: CalibrateJobConfig,
    inputs: CalibrateInputs,
    calibration: Calibration,
    check: CheckResult | None,
) -> CalibrateOutputs:
    return write_calibrate_outputs(cfg, inputs, calibration, check)


@task(name="log-mlflow", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def log_task(
    outputs: CalibrateOutputs, calibration: Calibration, tracking: TrackingConfig, work_dir: str
) -> str:
    """One MLflow run with the review material; returns its run id."""
    from mlflow import MlflowClient

    from tagger.bundle.registry import log_review

    where = resolve_tracking(tracking, Path(work_dir))
    with mlflow_uris(where.tracking_uri):
        client = MlflowClient(where.tracking_uri)
        run = client.create_run(ensure_experiment(where), tags={"mlflow.runName": "calibrate"})
        metrics = {k: v for k, v in outputs.summary.items() if isinstance(v, float)}
        metrics |= {f"check_{k}": v for k, v in outputs.summary.get("check", {}).items()}
        log_review(
            run.info.run_id,
            calibration.report,
            outputs.plots,
            outputs.thresholds,
            outputs.summary["dataset_hash"],
            metrics=metrics,
            client=client,
        )
        client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


@flow(name="calibrate")
def calibrate(
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    tracking: TrackingConfig | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """Calibrate thresholds on held-out predictions; returns where the outputs are."""
    cfg = load_job(config, overrides)
    inputs = load_inputs(cfg)
    calibration = calibrate_task(cfg, inputs)
    check = check_task(cfg, inputs, calibration)
    outputs = write_task(cfg, inputs, calibration, check)
    run_id = None
    if log_to_mlflow:
        tracking = tracking or TrackingConfig(experiment=EXPERIMENT)
        run_id = log_task(outputs, calibration, tracking, str(cfg.output_dir))
    return {
        "thresholds": str(outputs.thresholds),
        "report": str(outputs.report),
        "summary": outputs.summary,
        "mlflow_run_id": run_id,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=existing_file, nargs="?")
    parser.add_argument("--check-folds", type=int, nargs="+")
    parser.add_argument("--check-split", type=float)
    parser.add_argument("--tracking-uri")
    args = parser.parse_args()
    overrides = {"check_folds": args.check_folds, "check_split": args.check_split}
    config = str(Path(args.config).resolve()) if args.config else None
    print(
        calibrate(
            config, overrides, TrackingConfig(tracking_uri=args.tracking_uri, experiment=EXPERIMENT)
        )
    )


if __name__ == "__main__":
    from flows.entry_point import run_entry_point

    run_entry_point("python -m flows.calibrate", main)
