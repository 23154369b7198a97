"""The retrain flow's `clean` stage: out-of-fold probabilities -> label issues, pseudo labels,
feedback, the review queue and its exports -> the manifest to train on.

    data = clean_for_training(cfg.cleaning, cfg.train, data, tracking, work, stage)  # retrain.py

Three tasks, each cached by content (`flows.caching`):
- `crossfit-oof`: only when the retrain has no `crossfit` stage of its own (whose file is then
  reused): k cheap models over the manifest's folds score every image with a model that never
  saw it (`tagger.train.crossfit.cross_fit`, settings `cleaning.crossfit`);
- `clean`: `tagger.clean.job.run_clean` on those probabilities; a new manifest version when
  pseudo labels were accepted or album feedback filled unknown cells;
- `log-cleaning`: an MLflow run `clean` in the experiment with the issue counts per tag and per
  source, the queue, the contact sheet, the Label Studio files and the change log as artifacts.

`cleaning.manifest` (a version written by `tagger review import` or flows/review.py) replaces
the assembled manifest as the input of the stage: that is how reviewed labels reach training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task

from flows.caching import stage_dir
from flows.config import CleaningStage
from flows.stages import Assembled, Cleaned
from flows.tracking import Tracking, ensure_experiment, mlflow_uris
from tagger.train.training import TrainConfig


def cleaning_input(config: CleaningStage, data: Assembled) -> Assembled:
    """The assembled data with the reviewed manifest version in place, when one is given."""
    if config.manifest is None:
        return data
    if not config.manifest.is_file():
        raise FileNotFoundError(f"cleaning.manifest: no such manifest version: {config.manifest}")
    return data.model_copy(update={"manifest": config.manifest})


@task(name="crossfit-oof")
def cross_fit_for_cleaning(
    config: CleaningStage, train: TrainConfig, data: Assembled, work_dir: Path
) -> Path:
    """Out-of-fold probabilities of every labelled image (one Predictions file)."""
    from tagger.train.crossfit import cross_fit
    from tagger.train.predictions import write_predictions
    from tagger.train.training import load_training_inputs

    data = cleaning_input(config, data)
    out = stage_dir(work_dir, "crossfit-oof", config=config.crossfit, train=train, data=data)
    updates = {
        "manifest": data.manifest,
        "cache_dir": data.cache_dir,
        "cache_size": data.cache_size,
        "taxonomy": data.taxonomy,
    }
    cfg = train.model_copy(
        update={"data": train.data.model_copy(update=updates), "output_dir": out / "train"}
    )
    manifest, taxonomy = load_training_inputs(cfg)
    predictions = cross_fit(manifest, taxonomy, cfg, config.crossfit, out / "models")
    return write_predictions(predictions, out / "oof_predictions.parquet")


@task(name="clean")
def clean_labels(
    config: CleaningStage, data: Assembled, predictions: Path, work_dir: Path
) -> Cleaned:
    """Issues, pseudo labels, feedback and the review queue; the manifest to train on."""
    from tagger.clean.job import load_clean_taxonomy, run_clean

    data = cleaning_input(config, data)
    out = stage_dir(work_dir, "clean", config=config, data=data, predictions=predictions)
    taxonomy = load_clean_taxonomy(data.taxonomy)
    outputs = run_clean(data.manifest, predictions, config.clean_config(), out, taxonomy)
    return Cleaned(
        assembled=data.model_copy(update={"manifest": outputs.manifest}),
        base_manifest=data.manifest,
        predictions=predictions,
        output_dir=out,
        changes=outputs.changes,
        queue=outputs.queue,
        contact_sheet=outputs.contact_sheet,
        label_studio_tasks=outputs.label_studio_tasks,
        label_studio_config=outputs.label_studio_config,
        issues_per_tag=outputs.issues_per_tag,
        issues_per_source=outputs.issues_per_source,
        summary=outputs.summary,
    )


MLFLOW_METRICS = (
    "issues",
    "missing",
    "wrong",
    "issues_posterior_only",
    "tags_checked",
    "pseudo_labels",
    "pseudo_accepted",
    "feedback_verdicts",
    "feedback_conflicts",
    "changes_applied",
    "queue",
)


@task(name="log-cleaning", retries=3, retry_delay_seconds=[2, 10, 30])
def log_cleaning(cleaned: Cleaned, tracking: Tracking) -> str:
    """An MLflow run `clean`: figures as metrics, the review material as artifacts. Returns
    the run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from tagger.data.images import hash_file

    experiment_id = ensure_experiment(tracking)
    with mlflow_uris(tracking.tracking_uri):
        client = MlflowClient(tracking.tracking_uri)
        sha = str(cleaned.summary.get("manifest_sha256", ""))
        run = client.create_run(
            experiment_id,
            tags={
                "mlflow.runName": "clean",
                "stage": "clean",
                "manifest_sha256": sha,
                "base_manifest_sha256": hash_file(cleaned.base_manifest),
            },
        )
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"clean_{k}", float(cleaned.summary[k]), now, 0)
            for k in MLFLOW_METRICS
            if k in cleaned.summary
        ]
        params = [
            Param("manifest", str(cleaned.assembled.manifest)[:6000]),
            Param("label_context", str(cleaned.summary["label_context"])),
            Param("min_flip_prob", str(cleaned.summary["min_flip_prob"])),
        ]
        for key, value in cleaned.summary["noise_priors"].items():
            params.append(Param(f"noise_prior_{key}", str(value)))
        client.log_batch(run_id, metrics=metrics, params=params)
        files = [
            cleaned.issues_per_tag,
            cleaned.issues_per_source,
            cleaned.queue,
            cleaned.contact_sheet,
            cleaned.label_studio_tasks,
            cleaned.label_studio_config,
            cleaned.output_dir / "summary.json",
        ]
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path="clean")
        if cleaned.changes is not None:
            client.log_artifact(run_id, str(cleaned.changes), artifact_path="clean/change_log")
        client.set_terminated(run_id)
    return run_id


def clean_for_training(
    config: CleaningStage,
    train: TrainConfig,
    data: Assembled,
    tracking: Tracking,
    work_dir: Path,
    stage: Callable[[Any], Any],
    predictions: Path | None = None,
) -> Assembled:
    """Run the clean stage's tasks (each wrapped by `stage`, the flow's caching) and return the
    data to train on.

    predictions: the retrain's own out-of-fold file (the `crossfit` stage, flows/crossfit.py)
    when it has one: reused, not computed again; None: `crossfit-oof` computes one with the
    `cleaning.crossfit` settings.
    """
    if predictions is None:
        predictions = stage(cross_fit_for_cleaning)(config, train, data, work_dir)
    cleaned = stage(clean_labels)(config, data, predictions, work_dir)
    stage(log_cleaning)(cleaned, tracking)
    return cleaned.assembled  # type: ignore[no-any-return]
