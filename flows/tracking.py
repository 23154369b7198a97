"""Where flows log to MLflow: always an explicit tracking URI, never MLflow's cwd defaults.

Without a server the store is `sqlite:///<work_dir>/mlflow.db` with artifacts in
`<work_dir>/mlartifacts`; with a server, its URL (the server picks the artifact store).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class TrackingConfig(BaseModel):
    """MLflow settings of a flow.

    tracking_uri: None = the local SQLite store in the work folder; else "http://host:port"
      of an `mlflow server`, or any MLflow URI.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = None
    experiment: str = "tagger"
    model_name: str = Field(default="tagger", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Tracking(BaseModel):
    """Resolved MLflow locations (absolute paths; what tasks receive)."""

    model_config = ConfigDict(frozen=True)

    tracking_uri: str
    artifact_location: str | None  # for the experiment when the store is local
    experiment: str
    model_name: str
    model_cache: str  # where registered bundles are downloaded (a str: a place, not an input)


def resolve_tracking(config: TrackingConfig, work_dir: Path) -> Tracking:
    """Fill in the work-folder defaults: SQLite store, artifact folder, model download cache."""
    work_dir = Path(work_dir).expanduser().resolve()
    uri = config.tracking_uri or f"sqlite:///{work_dir / 'mlflow.db'}"
    local = uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri
    artifacts = (work_dir / "mlartifacts").as_uri() if local else None
    return Tracking(
        tracking_uri=uri,
        artifact_location=artifacts,
        experiment=config.experiment,
        model_name=config.model_name,
        model_cache=str(work_dir / "models"),
    )


@contextmanager
def mlflow_uris(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at `tracking_uri` for a block.

    MLflow's fluent API and `models:/` downloads read these globals (MLflow also mirrors them
    into MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI); the previous values come back on exit.
    """
    import mlflow

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_experiment(tracking: Tracking) -> str:
    """The experiment id, creating it (with the work-folder artifact location) when missing."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri)
    found = client.get_experiment_by_name(tracking.experiment)
    if found is not None:
        return str(found.experiment_id)
    return str(
        client.create_experiment(tracking.experiment, artifact_location=tracking.artifact_location)
    )
