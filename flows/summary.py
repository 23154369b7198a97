"""The retrain run's summary: headline figures and the markdown artifact a person reads."""

from __future__ import annotations

import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from flows.config import RetrainConfig
from flows.stages import Assembled, Promotion, RetrainSummary, Trained
from flows.tracking import Tracking


def headline_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The float figures of a calibration summary (NaN dropped), for MLflow and the artifact."""
    return {k: float(v) for k, v in summary.items() if isinstance(v, float) and not math.isnan(v)}


def mlflow_ui_hint(tracking: Tracking) -> str:
    """How to open the MLflow UI on this store: a command that works as printed, also outside
    an activated environment (the `mlflow` beside this interpreter, by its absolute path)."""
    if tracking.tracking_uri.startswith(("http://", "https://")):
        return tracking.tracking_uri
    uri = shlex.quote(tracking.tracking_uri)
    return f"{mlflow_command()} ui --backend-store-uri {uri} --port 5000"


def mlflow_command() -> str:
    """The `mlflow` console script of this environment, or `<python> -m mlflow` without one."""
    script = Path(sys.executable).parent / "mlflow"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m mlflow"


def summary_markdown(
    summary: RetrainSummary,
    data: Assembled,
    trained: Trained,
    promotion: Promotion,
    config: RetrainConfig,
) -> str:
    """The retrain artifact: data in, headline metrics, promotion decision, where to look."""
    source = "demo data set (generated)" if config.demo is not None else "assembly config"
    metrics = "".join(f"| {k} | {v:.4f} |\n" for k, v in sorted(summary.metrics.items()))
    compare = ""
    if promotion.candidate is not None:
        rows = [
            f"| {k} | {v:.4f} | "
            f"{'' if promotion.champion is None else f'{promotion.champion[k]:.4f}'} |"
            for k, v in promotion.candidate.items()
        ]
        compare = "\n| figure | candidate | champion |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    base = summary.tracking_uri.rstrip("/")
    links = ""
    if base.startswith(("http://", "https://")):
        links = (
            f"- run: {base}/#/experiments/{trained.experiment_id}/runs/{summary.run_id}\n"
            f"- model: {base}/#/models/{summary.model_name}/versions/{summary.version}\n"
        )
    decision = "**promoted to @champion**" if promotion.promoted else "**not promoted**"
    return (
        f"# retrain: {summary.model_name} v{summary.version}\n\n"
        f"## Data\n- source: {source}\n- manifest: `{data.manifest}` ({data.images} images, "
        f"{data.problem_count} problems reported in `{data.problems}`)\n"
        f"- dataset report: `{data.report}`\n\n"
        f"## Training\n- epochs: {trained.epochs}; best validation mAP: "
        f"{'n/a' if trained.best_val_map is None else f'{trained.best_val_map:.4f}'}\n\n"
        f"## Headline metrics (held-out fold {config.train.data.val_fold})\n"
        f"| metric | value |\n|---|---|\n{metrics}\n"
        f"## Promotion\n{decision}: {promotion.reason}\n"
        f"- compared with: {promotion.compared_with or 'no champion'}; @champion is now "
        f"v{promotion.champion_version}\n{compare}\n"
        f"## Where to look\n- MLflow: `{summary.tracking_uri}`, experiment "
        f"`{summary.experiment}`, run `{summary.run_id}`\n"
        f"- model: `models:/{summary.model_name}/{summary.version}` "
        f"(`models:/{summary.model_name}@champion` -> v{promotion.champion_version})\n"
        f"- MLflow UI: `{summary.mlflow_ui}`\n{links}"
        f"- bundle: `{summary.bundle}`\n"
    )
