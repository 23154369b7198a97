"""Prefect flow `train`: manifest -> trained tagger, everything logged to an MLflow run.

    python -m flows.train CONFIG.yaml [--tracking-uri sqlite:///mlflow.db] [--resume last]

Logged: the config as params, system info, the manifest's sha256 (param and tag), per-epoch
metrics (step = epoch), the best checkpoint and its per-tag validation AP as artifacts.
MLflow tracking URI: the `tracking_uri` parameter, else MLFLOW_TRACKING_URI, else MLflow's
default (a local store in the working folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.entry_point import existing_file
from label_system.taxonomy import Taxonomy
from tagger.data.images import hash_file
from tagger.train.training import (
    Callback,
    TrainConfig,
    TrainResult,
    load_train_config,
    load_training_inputs,
    train,
)

EXPERIMENT = "tagger-train"


@dataclass
class TrainInputs:
    """What the training task needs, loaded once."""

    config: TrainConfig
    manifest: pd.DataFrame
    taxonomy: Taxonomy
    manifest_sha256: str


class MlflowMetrics(Callback):
    """Training callback: per-epoch metrics (step = epoch) and step loss to one MLflow run."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def _log(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._log(metrics, epoch)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._log({f"step_{k}": v for k, v in metrics.items()}, step)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config as MLflow params: {"optimizer.lr": "0.001", ...}."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return {prefix: str(value)}


def system_info() -> dict[str, str]:
    """Versions and hardware of this process, as MLflow params."""
    cuda = torch.cuda.is_available()
    return {
        "system.python": platform.python_version(),
        "system.torch": torch.__version__,
        "system.platform": platform.platform(),
        "system.cpu_count": str(os.cpu_count()),
        "system.device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "system.cuda_devices": str(torch.cuda.device_count() if cuda else 0),
        "system.world_size": os.environ.get("WORLD_SIZE", "1"),
    }


@task
def load_train_inputs(config: str, overrides: dict[str, Any] | None = None) -> TrainInputs:
    """Read the training config (with overrides), its manifest and taxonomy; hash the manifest."""
    cfg = load_train_config(config, overrides)
    manifest, taxonomy = load_training_inputs(cfg)
    assert cfg.data.manifest is not None  # load_training_inputs checked it
    return TrainInputs(cfg, manifest, taxonomy, hash_file(cfg.data.manifest))


@task(cache_policy=NO_CACHE)
def start_mlflow_run(
    inputs: TrainInputs,
    tracking_uri: str | None,
    experiment: str = EXPERIMENT,
    artifact_location: str | None = None,
) -> str:
    """Create the MLflow run; log config params, system info and the manifest hash."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    exp_id = (
        found.experiment_id
        if found is not None
        else client.create_experiment(experiment, artifact_location=artifact_location)
    )
    tags = {
        "manifest_sha256": inputs.manifest_sha256,
        "taxonomy": inputs.taxonomy.name,
        "mlflow.runName": f"train-{inputs.config.model.backbone}",
    }
    run = client.create_run(exp_id, tags=tags)
    params = (
        flatten("", inputs.config.model_dump(mode="json"))
        | system_info()
        | {
            "manifest_sha256": inputs.manifest_sha256,
            "num_tags": str(len(inputs.taxonomy)),
            "num_images": str(len(inputs.manifest)),
        }
    )
    client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
    return str(run.info.run_id)


@task(cache_policy=NO_CACHE)
def train_model(
    inputs: TrainInputs, run_id: str, tracking_uri: str | None, resume: str | None = None
) -> TrainResult:
    """Run the training loop with metrics streamed to the MLflow run (marked FAILED on error)."""
    client = MlflowClient(tracking_uri)
    if resume == "last":
        resume = str(inputs.config.output_dir / "last")
    try:
        return train(
            inputs.config,
            inputs.manifest,
            inputs.taxonomy,
            callbacks=[MlflowMetrics(client, run_id)],
            resume=resume,
        )
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise


@task(cache_policy=NO_CACHE)
def log_train_result(result: TrainResult, run_id: str, tracking_uri: str | None) -> dict[str, Any]:
    """Log the best checkpoint and its per-tag AP as artifacts, the summary, end the run."""
    client = MlflowClient(tracking_uri)
    summary = {
        "best_val_map": result.best_metric,
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
    }
    client.log_batch(
        run_id,
        metrics=[
            Metric(k, float(v), int(time.time() * 1000), result.epochs_completed)
            for k, v in summary.items()
            if v is not None
        ],
    )
    client.log_artifacts(run_id, str(result.best_checkpoint), artifact_path="checkpoint_best")
    if result.best_val_ap is not None:
        table = pd.DataFrame({"tag": result.tag_ids, "val_ap": result.best_val_ap})
        client.log_text(run_id, table.to_csv(index=False), "best_val_ap.csv")
    client.set_terminated(run_id, "FINISHED")
    return {"run_id": run_id, "best_checkpoint": str(result.best_checkpoint), **summary}


@flow(name="train")
def train_flow(
    config: str,
    overrides: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    artifact_location: str | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """Train a tagger from a config YAML and record the run in MLflow.

    overrides: nested values merged over the YAML (e.g. {"schedule": {"epochs": 1}}).
    resume: a checkpoint directory, or "last" for `<output_dir>/last`.
    """
    inputs = load_train_inputs(config, overrides)
    run_id = start_mlflow_run(inputs, tracking_uri, experiment, artifact_location)
    result = train_model(inputs, run_id, tracking_uri, resume)
    return log_train_result(result, run_id, tracking_uri)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=existing_file, help="training config YAML")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default=EXPERIMENT)
    parser.add_argument("--resume", default=None, help='checkpoint directory or "last"')
    args = parser.parse_args(argv)
    out = train_flow(
        args.config, tracking_uri=args.tracking_uri, experiment=args.experiment, resume=args.resume
    )
    print(out)


if __name__ == "__main__":
    from flows.entry_point import run_entry_point

    run_entry_point("python -m flows.train", main)
