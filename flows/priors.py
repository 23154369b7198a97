"""The retrain flow's `priors` task: prior rules applied to the held-out scores before calibration.

Reads the held-out predictions (the fused ones when fusion ran, else the checkpoint's scores on
the held-out fold), runs `tagger.priors.job.run_priors_job` (reference thresholds, per-rule
measurement, harmful rules dropped when configured, rules applied, candidates mined), and logs
the review material into the training run's MLflow artifacts under `priors/`: the per-rule
table, the per-tag table, the plots, the rules in force and the mined candidates. Calibration
then reads the post-prior predictions, and the bundle carries the rules in force.

Cached by content like every stage: the same rules, config, checkpoint and data reuse the
outputs. Off (`priors: {enabled: false}`): nothing runs; the scores it was given pass through
(none: calibration scores the fold itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict

from flows.caching import stage_dir
from flows.stages import Assembled, Trained
from flows.tracking import Tracking, mlflow_uris
from tagger.priors.job import PriorsConfig, PriorsOutputs


class PriorsApplied(BaseModel):
    """The priors stage's outputs (all None when the stage is off)."""

    model_config = ConfigDict(frozen=True)

    predictions: Path | None = None  # post-prior held-out predictions: calibration reads these
    rules: Path | None = None  # the rules in force: the bundle carries these
    effects: Path | None = None
    tags: Path | None = None
    mined: Path | None = None
    plots: dict[str, Path] = {}
    summary: dict[str, Any] = {}


@task(name="priors")
def apply_prior_rules(
    config: PriorsConfig,
    trained: Trained,
    data: Assembled,
    val_fold: int,
    tracking: Tracking,
    work_dir: Path,
    scores: Path | None = None,
) -> PriorsApplied:
    """Apply the rules to the held-out scores (`scores`, or the checkpoint's on `val_fold`),
    write the post-prior predictions and the review material, log it to the training run.

    Off: nothing runs; `scores` (when given) pass through as the predictions calibration reads.
    """
    if not config.enabled:
        return PriorsApplied(predictions=scores)
    from flows.heldout import write_heldout_predictions
    from tagger.priors.job import run_priors_job

    out = stage_dir(
        work_dir, "priors", config=config, checkpoint=trained.checkpoint, data=data,
        val_fold=val_fold, scores=scores,
    )  # fmt: skip
    if scores is None:
        scores = write_heldout_predictions(
            trained.checkpoint, data.manifest, data.cache_dir, val_fold, out / "heldout.parquet"
        )
    outputs = run_priors_job(scores, data.manifest, data.taxonomy, config, out / "applied")
    log_priors(outputs, trained.run_id, tracking)
    return PriorsApplied(
        predictions=outputs.predictions,
        rules=outputs.rules,
        effects=outputs.effects,
        tags=outputs.tags,
        mined=outputs.mined,
        plots=outputs.plots,
        summary=outputs.summary,
    )


def log_priors(outputs: PriorsOutputs, run_id: str, tracking: Tracking) -> None:
    """The review material into `run_id`: tables (also as MLflow tables), plots, rules, mined
    candidates under `priors/`, and the headline figures as `priors.*` metrics."""
    from mlflow import MlflowClient

    with mlflow_uris(tracking.tracking_uri):
        client = MlflowClient(tracking.tracking_uri)
        client.log_table(
            run_id, data=pd.read_csv(outputs.effects), artifact_file="priors/rules.json"
        )
        client.log_table(run_id, data=pd.read_csv(outputs.tags), artifact_file="priors/tags.json")
        for path in (outputs.effects, outputs.details, outputs.tags, outputs.rules, outputs.mined,
                     outputs.mined.with_suffix(".csv"), *outputs.plots.values()):  # fmt: skip
            client.log_artifact(run_id, str(path), "priors")
        for key, value in outputs.summary.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
                client.log_metric(run_id, f"priors.{key}", float(value))
