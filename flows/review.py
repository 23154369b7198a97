"""Prefect flow `review-retrain`: reviewed label decisions -> a new manifest version -> retrain.

    python -m flows.review DECISIONS --manifest REVIEWED_MANIFEST [CONFIG] [--set key=value]
    prefect deployment run 'review-retrain/review-retrain' \\
        --params '{"decisions": "export.json", "manifest": "clean/<key>/manifest.parquet"}'

DECISIONS: a Label Studio JSON export of the tasks `tagger review export` (or the clean stage)
wrote, or a CSV `image_id,tag,decision` (the queue CSV with its decision column filled).
REVIEWED_MANIFEST: the manifest version the queue was exported from; decisions made against
another one (sha256 mismatch), unknown images or unknown tags fail the run, naming the row.

Tasks: `import-review` (cached by content) writes the version with its change log into
`<work_dir>/review/<key>/`; `log-review` records the change log in an MLflow run `review`;
then the `retrain` flow runs as a subflow with `cleaning.manifest` set to the new version
(and `cleaning.enabled: true`), so the next model trains on the reviewed labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from pydantic import BaseModel, ConfigDict

from flows.caching import persisted, stage_dir
from flows.config import RetrainConfig
from flows.retrain import DEFAULT_CONFIG, load_config, parse_set, retrain
from flows.stages import RetrainSummary
from flows.tracking import Tracking, ensure_experiment, mlflow_uris, resolve_tracking


class Reviewed(BaseModel):
    """A manifest version made from reviewed decisions."""

    model_config = ConfigDict(frozen=True)

    manifest: Path
    changes: Path
    version: Path
    base_manifest: Path
    num_changes: int


@task(name="import-review")
def import_decisions(
    decisions: Path, base_manifest: Path, taxonomy: Path | None, work_dir: Path
) -> Reviewed:
    """Decisions -> a new manifest version (provenance `reviewed`) with its change log."""
    from tagger.clean.job import import_review, load_clean_taxonomy

    out = stage_dir(
        work_dir, "review", decisions=decisions, base_manifest=base_manifest, taxonomy=taxonomy
    )
    version = import_review(
        decisions, base_manifest, out / "manifest", load_clean_taxonomy(taxonomy)
    )
    return Reviewed(
        manifest=version.manifest,
        changes=version.changes,
        version=version.version,
        base_manifest=base_manifest,
        num_changes=version.num_changes,
    )


@task(name="log-review", retries=3, retry_delay_seconds=[2, 10, 30])
def log_review_import(reviewed: Reviewed, tracking: Tracking) -> str:
    """An MLflow run `review` with the change log and version record as artifacts."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    experiment_id = ensure_experiment(tracking)
    with mlflow_uris(tracking.tracking_uri):
        client = MlflowClient(tracking.tracking_uri)
        run = client.create_run(experiment_id, tags={"mlflow.runName": "review", "stage": "review"})
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric("review_changes", reviewed.num_changes, now, 0)])
        client.log_artifact(run_id, str(reviewed.changes), artifact_path="review/change_log")
        client.log_artifact(run_id, str(reviewed.version), artifact_path="review")
        client.set_terminated(run_id)
    return run_id


@flow(name="review-retrain")
def review_and_retrain(
    decisions: str,
    manifest: str,
    config: RetrainConfig | str = DEFAULT_CONFIG,
    overrides: dict[str, Any] | None = None,
    taxonomy: str | None = None,
) -> RetrainSummary:
    """Import reviewed decisions as a new manifest version, then retrain on it.

    decisions: Label Studio JSON export or CSV; manifest: the version the queue came from;
    config / overrides: the retrain config (as for `retrain`); taxonomy: a taxonomy YAML
    (None: the shipped one).
    """
    cfg = load_config(config, overrides)
    tracking = resolve_tracking(cfg.mlflow, cfg.work_dir)
    stage_taxonomy = Path(taxonomy) if taxonomy else None
    reviewed = persisted(import_decisions, cfg.work_dir)(
        Path(decisions), Path(manifest), stage_taxonomy, cfg.work_dir
    )
    persisted(log_review_import, cfg.work_dir)(reviewed, tracking)
    return retrain(cfg, {"cleaning.enabled": True, "cleaning.manifest": str(reviewed.manifest)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("decisions", help="Label Studio JSON export or decisions CSV")
    parser.add_argument("--manifest", required=True, help="the manifest version reviewed")
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="retrain config YAML")
    parser.add_argument("--taxonomy", help="taxonomy YAML (default: the shipped one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    for path in (args.decisions, args.manifest):
        if not Path(path).is_file():
            parser.error(f"{path}: no such file")
    summary = review_and_retrain(
        str(Path(args.decisions).resolve()),
        str(Path(args.manifest).resolve()),
        args.config,
        parse_set(args.set) or None,
        args.taxonomy,
    )
    print(summary.markdown)


if __name__ == "__main__":
    main()
