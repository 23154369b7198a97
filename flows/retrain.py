"""Prefect flow `retrain`: assemble -> [crossfit] -> [clean] -> train -> [detect -> fuse] ->
[priors] -> calibrate -> bundle -> register -> promote.

    python -m flows.retrain flows/configs/retrain_demo.yaml [--set train.schedule.epochs=2]
    prefect deployment run 'retrain/retrain-manual'          # through deploy/prefect.yaml

One validated `RetrainConfig` (flows/config.py) drives every stage. Each stage is one task that
reads files, calls the library, writes files into `<work_dir>/<stage>/<key>/` and returns paths;
it is cached by the content of what it reads (`flows.caching`), with its result persisted under
`<work_dir>/results`, so a rerun after a failure starts at the first unfinished stage. Only the
MLflow registry calls retry (a tracking server can be briefly unreachable). `@champion` moves
only in the last stage, and only to a model that does not lose to the current one: a failed
stage anywhere leaves it where it was. Each run ends with a markdown artifact
(`retrain-summary`): data in, headline metrics, the promotion decision, what to open in MLflow.

With `crossfit.enabled` (flows/crossfit.py) the thresholds are chosen on the out-of-fold
probabilities of every fold but the held-out one (`train.data.val_fold`), and the final model
still holds that one fold out: it is the only data no part of the run has seen, so the
calibrate stage checks the thresholds there on the final model's scores (does a cross-fitted
threshold transfer to the final model?), best-checkpoint selection stays on it as before, and
promotion compares candidate and champion on it. Training the final model on every fold
would leave promotion nothing unseen to compare on.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.caching import persisted, stage_dir
from flows.clean import clean_for_training
from flows.config import RetrainConfig, load_retrain_config, with_overrides
from flows.crossfit import crossfit_predictions
from flows.detect import (
    Detected,
    Fused,
    fuse_detector_evidence,
    score_heldout,
    train_small_object_detector,
)
from flows.entry_point import existing_file
from flows.precision import check_precision, log_precision
from flows.priors import apply_prior_rules
from flows.stages import (
    Assembled,
    Calibrated,
    Promotion,
    Registered,
    RetrainSummary,
    Trained,
    training_config,
)
from flows.summary import headline_metrics, mlflow_ui_hint, summary_markdown
from flows.tracking import Tracking, ensure_experiment, mlflow_uris, resolve_tracking
from tagger.calibrate.thresholds import CalibrationConfig
from tagger.data.assembly_job import AssemblyConfig, load_assembly_config, run_assembly
from tagger.data.demo import DemoConfig
from tagger.detect.detections import DetectorConfig
from tagger.train.training import TrainConfig

DEFAULT_CONFIG = str(Path(__file__).with_name("configs") / "retrain_demo.yaml")
RETRY_DELAYS: list[float] = [2, 10, 30]  # seconds; registry and tracking calls only


# ---- stages -----------------------------------------------------------------------------------


@task(name="load-config", cache_policy=NO_CACHE)
def load_config(config: RetrainConfig | str, overrides: dict[str, Any] | None) -> RetrainConfig:
    """The validated retrain config (a YAML path with dotted overrides, or a config as is)."""
    if isinstance(config, RetrainConfig):
        return with_overrides(config, overrides or {})
    return load_retrain_config(config, overrides)


@task(name="demo-data")
def generate_demo_data(demo: DemoConfig, work_dir: Path) -> Path:
    """Draw the demo sources (COCO, VOC, Open Images, keywords, internal CSV) into the work
    folder; returns the assembly config YAML written beside them."""
    from tagger.data.demo import write_demo_data

    out = stage_dir(work_dir, "demo-data", demo=demo)
    return write_demo_data(out, demo).config


@task(name="load-assembly-config", cache_policy=NO_CACHE)
def read_assembly_config(path: Path) -> AssemblyConfig:
    """An assembly config YAML, validated."""
    return load_assembly_config(path)


def source_files(config: AssemblyConfig) -> list[Path]:
    """Every file or folder the assembly reads: reader paths, taxonomy, mapping files."""
    files: list[Path] = []
    for source in config.sources:
        if not source.enabled:
            continue
        args = source.reader_arguments(config.data_path)
        for key in source.paths:
            value = args[key]
            files += [Path(p) for p in (value if isinstance(value, list) else [value])]
        files += [config.resolve(p) for p in source.mappings.values()]
    if config.taxonomy:
        files.append(config.resolve(config.taxonomy))
    return files


@task(name="assemble")
def assemble_data(config: AssemblyConfig, sources: list[Path], work_dir: Path) -> Assembled:
    """Read and merge the sources into the manifest (dedup, known mask, cache, folds, report).

    `sources` are `source_files(config)`: they make the cache key follow the source contents.
    """
    out = stage_dir(work_dir, "assemble", config=config, sources=sources)
    cfg = config.model_copy(update={"output_dir": str(out)})
    outputs = run_assembly(cfg)
    with outputs.problems.open(newline="", encoding="utf-8") as fh:
        problems = sum(1 for _ in csv.DictReader(fh))
    return Assembled(
        manifest=outputs.manifest,
        cache_dir=cfg.cache_dir,
        cache_size=cfg.cache.size,
        taxonomy=cfg.resolve(cfg.taxonomy) if cfg.taxonomy else None,
        report=outputs.report["markdown"],
        problems=outputs.problems,
        images=outputs.images,
        problem_count=problems,
    )


@task(name="train")
def train_tagger(
    config: TrainConfig, data: Assembled, tracking: Tracking, work_dir: Path
) -> Trained:
    """Train on the manifest's training folds; params, per-epoch metrics and the manifest hash
    go to a new MLflow run (the run every later stage logs into)."""
    from flows.train import TrainInputs, log_train_result, start_mlflow_run, train_model
    from tagger.data.images import hash_file
    from tagger.train.training import load_training_inputs

    out = stage_dir(work_dir, "train", config=config, data=data, tracking=tracking)
    cfg = training_config(config, data, out)
    manifest, taxonomy = load_training_inputs(cfg)
    inputs = TrainInputs(cfg, manifest, taxonomy, hash_file(data.manifest))
    experiment_id = ensure_experiment(tracking)
    with mlflow_uris(tracking.tracking_uri):
        run_id = start_mlflow_run.fn(
            inputs, tracking.tracking_uri, tracking.experiment, tracking.artifact_location
        )
        result = train_model.fn(inputs, run_id, tracking.tracking_uri)
        log_train_result.fn(result, run_id, tracking.tracking_uri)
    best = result.best_metric
    return Trained(
        run_id=run_id,
        experiment_id=experiment_id,
        checkpoint=result.best_checkpoint,
        best_val_map=None if best is None or math.isnan(best) else float(best),
        epochs=result.epochs_completed,
    )


@task(name="calibrate")
def calibrate_thresholds(
    config: CalibrationConfig,
    checkpoint: Path,
    data: Assembled,
    val_fold: int,
    work_dir: Path,
    oof: Path | None = None,
    scores: Path | None = None,
) -> Calibrated:
    """Score the held-out fold with the best checkpoint (or read `scores`: the held-out
    predictions an earlier stage transformed, fused by `fuse` and post-prior), then choose
    per-tag thresholds on it (report, plots, summary); the model never saw these images.

    oof: cross-fitted out-of-fold predictions (flows/crossfit.py, post-prior when the priors
    stage ran): thresholds are chosen on every fold but `val_fold` instead, and checked on the
    final model's `val_fold`.
    """
    from flows.heldout import write_heldout_predictions
    from tagger.calibrate.job import CalibrateJobConfig, run_calibrate_job

    given = {} if scores is None else {"scores": scores}  # keys of runs without it unchanged
    out = stage_dir(
        work_dir, "calibrate", config=config, checkpoint=checkpoint, data=data,
        val_fold=val_fold, oof=oof, **given,
    )  # fmt: skip
    predictions = scores or write_heldout_predictions(
        checkpoint, data.manifest, data.cache_dir, val_fold, out / "heldout_predictions.parquet"
    )
    job = CalibrateJobConfig(
        predictions=predictions if oof is None else oof,
        manifest=data.manifest,
        taxonomy=data.taxonomy,
        calib_folds=(val_fold,) if oof is None else None,  # None: every fold but the check's
        check_folds=() if oof is None else (val_fold,),
        check_predictions=None if oof is None else predictions,
        output_dir=out,
        calibration=config,
    )
    outputs = run_calibrate_job(job)
    summary = json.loads(json.dumps(outputs.summary, default=str))
    return Calibrated(
        predictions=predictions,
        thresholds=outputs.thresholds,
        report=outputs.report,
        plots=outputs.plots,
        summary=summary,
    )


@task(name="bundle")
def package_bundle(
    checkpoint: Path,
    calibration: Calibrated,
    data: Assembled,
    work_dir: Path,
    demo: bool = False,
    priors: Path | None = None,
    detector: tuple[DetectorConfig, Detected, Fused] | None = None,
) -> Path:
    """The model bundle: weights, taxonomy snapshot, preprocessing, thresholds, metrics, the
    prior rules in force (`priors`, a priors YAML) when the priors stage ran, the detector with
    its fusion when the detector stage ran, and what it was trained on (`demo`: the drawn demo
    data set)."""
    from dataclasses import replace

    from flows.detect import bundle_detector
    from flows.heldout import build_bundle
    from tagger.bundle.model_bundle import save_bundle

    given = {} if priors is None else {"priors": priors}  # keys of runs without it unchanged
    if detector is not None:
        given["detector"] = detector
    out = stage_dir(
        work_dir, "bundle", checkpoint=checkpoint, calibration=calibration, data=data, demo=demo,
        **given,
    )  # fmt: skip
    bundle = build_bundle(
        checkpoint,
        calibration.thresholds,
        data.manifest,
        data.taxonomy,
        headline_metrics(calibration.summary),
        demo=demo,
        priors=priors,
    )
    if detector is not None:
        settings, weights = bundle_detector(*detector)
        bundle = replace(bundle, detector=settings, detector_weights=weights)
    return save_bundle(bundle, out / "bundle")


@task(name="evaluate", retries=3, retry_delay_seconds=RETRY_DELAYS)
def log_evaluation(
    calibration: Calibrated, trained: Trained, data: Assembled, tracking: Tracking
) -> dict[str, float]:
    """Log the review material into the training run: per-tag table, plots, thresholds file,
    dataset hash and headline metrics. Returns the headline metrics."""
    import pandas as pd
    from mlflow import MlflowClient

    from tagger.bundle.registry import log_review
    from tagger.data.images import hash_file

    metrics = headline_metrics(calibration.summary)
    if trained.best_val_map is not None:
        metrics["best_val_map"] = trained.best_val_map
    report = (
        pd.read_csv(calibration.report)
        if calibration.report.suffix == ".csv"
        else pd.read_parquet(calibration.report)
    )
    with mlflow_uris(tracking.tracking_uri):
        log_review(
            trained.run_id,
            report,
            dict(calibration.plots),
            calibration.thresholds,
            hash_file(data.manifest),
            metrics=metrics,
            client=MlflowClient(tracking.tracking_uri),
        )
    return metrics


@task(name="register", retries=3, retry_delay_seconds=RETRY_DELAYS)
def register_bundle(bundle: Path, trained: Trained, tracking: Tracking) -> Registered:
    """Log the bundle as an MLflow model in the training run, register it, alias @candidate."""
    from mlflow import MlflowClient

    from tagger.bundle.registry import log_bundle

    with mlflow_uris(tracking.tracking_uri):
        registered = log_bundle(
            bundle,
            name=tracking.model_name,
            run_id=trained.run_id,
            client=MlflowClient(tracking.tracking_uri),
        )
    return Registered(
        name=registered.name,
        version=registered.version,
        model_uri=registered.model_uri,
        run_id=registered.run_id,
    )


@task(name="promote", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=RETRY_DELAYS)
def promote_candidate(
    registered: Registered, data: Assembled, val_fold: int, tolerance: float, tracking: Tracking
) -> Promotion:
    """Move @champion to the candidate unless it loses to the current champion on the
    held-out fold (mAP, share of tags meeting their precision target)."""
    from mlflow import MlflowClient

    from flows.heldout import heldout_eval
    from tagger.bundle.registry import champion_version, promote

    data_eval, predict_fn = heldout_eval(data.manifest, data.cache_dir, data.taxonomy, val_fold)
    client = MlflowClient(tracking.tracking_uri)
    with mlflow_uris(tracking.tracking_uri):
        decision = promote(
            registered.name,
            registered.version,
            data=data_eval,
            predict_fn=predict_fn,
            tolerance=tolerance,
            client=client,
            cache_dir=Path(tracking.model_cache),
        )
        champion = champion_version(registered.name, client)
    return Promotion(
        promoted=decision.promoted,
        reason=decision.reason,
        champion_version=champion,
        compared_with=decision.champion_version,
        candidate=None if decision.candidate is None else decision.candidate.as_dict(),
        champion=None if decision.champion is None else decision.champion.as_dict(),
    )


@task(name="keep-candidate", cache_policy=NO_CACHE)
def skip_promotion(registered: Registered, tracking: Tracking) -> Promotion:
    """Promotion switched off in the config: the new version stays @candidate."""
    from mlflow import MlflowClient

    from tagger.bundle.registry import champion_version

    champion = champion_version(registered.name, MlflowClient(tracking.tracking_uri))
    return Promotion(
        promoted=False,
        reason="promotion disabled in the retrain config",
        champion_version=champion,
        compared_with=champion,
        candidate=None,
        champion=None,
    )


@task(name="summary", cache_policy=NO_CACHE)
def publish_summary(
    config: RetrainConfig,
    tracking: Tracking,
    data: Assembled,
    trained: Trained,
    metrics: dict[str, float],
    bundle: Path,
    registered: Registered,
    promotion: Promotion,
) -> RetrainSummary:
    """The run's markdown artifact (Prefect UI -> flow run -> Artifacts) and summary."""
    ui = mlflow_ui_hint(tracking)
    summary = RetrainSummary(
        work_dir=config.work_dir,
        tracking_uri=tracking.tracking_uri,
        experiment=tracking.experiment,
        manifest=data.manifest,
        images=data.images,
        run_id=trained.run_id,
        bundle=bundle,
        model_name=registered.name,
        version=registered.version,
        promoted=promotion.promoted,
        reason=promotion.reason,
        champion_version=promotion.champion_version,
        metrics=metrics,
        mlflow_ui=ui,
        markdown="",
    )
    markdown = summary_markdown(summary, data, trained, promotion, config)
    create_markdown_artifact(
        markdown,
        key="retrain-summary",
        description=f"retrain: {registered.name} v{registered.version}",
    )
    return summary.model_copy(update={"markdown": markdown})


# ---- the recipe -------------------------------------------------------------------------------


@flow(name="retrain")
def retrain(
    config: RetrainConfig | str = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None
) -> RetrainSummary:
    """Retrain, calibrate, register and (when not worse) promote the tagger.

    config: a retrain YAML (flows/configs/) or a RetrainConfig. overrides: dotted keys, e.g.
    {"work_dir": "/data/work", "mlflow.tracking_uri": "http://127.0.0.1:5000"}.
    """
    cfg = load_config(config, overrides)
    work, tracking = cfg.work_dir, resolve_tracking(cfg.mlflow, cfg.work_dir)
    stage = partial(persisted, work_dir=work, refresh=not cfg.cache)  # type: ignore[arg-type]
    if cfg.demo is not None:
        assembly = read_assembly_config(stage(generate_demo_data)(cfg.demo, work))
    else:
        assert isinstance(cfg.assemble, AssemblyConfig)  # load_config read the YAML
        assembly = cfg.assemble
    data = stage(assemble_data)(assembly, source_files(assembly), work)
    oof = None
    if cfg.crossfit.enabled:
        crossfit = cfg.crossfit.library_config()
        oof = stage(crossfit_predictions)(crossfit, cfg.train, data, work).predictions
    if cfg.cleaning.enabled:  # flows/clean.py: out-of-fold issues, review queue, new manifest
        data = clean_for_training(cfg.cleaning, cfg.train, data, tracking, work, stage, oof)
    trained = stage(train_tagger)(cfg.train, data, tracking, work)
    heldout, detector = None, None
    if cfg.detector.enabled:  # flows/detect.py: detector evidence fused per tag, held-out fold
        detected = stage(train_small_object_detector)(
            cfg.detector, data, cfg.heldout_fold, trained, tracking, work
        )
        classified = stage(score_heldout)(trained.checkpoint, data, cfg.heldout_fold, work)
        fused = stage(fuse_detector_evidence)(
            cfg.detector, classified, detected, data, trained, tracking, work
        )
        heldout, detector = fused.predictions, (cfg.detector, detected, fused)
        oof = None  # fusion is learned on the held-out fold: thresholds follow the fused scores
    # priors act on the scores calibration reads: out-of-fold when cross-fitted, else held-out
    priors = stage(apply_prior_rules)(
        cfg.priors, trained, data, cfg.heldout_fold, tracking, work, oof or heldout
    )
    calibrated = stage(calibrate_thresholds)(
        cfg.calibrate, trained.checkpoint, data, cfg.heldout_fold, work,
        oof=priors.predictions if oof else None, scores=None if oof else priors.predictions,
    )  # fmt: skip
    bundle = stage(package_bundle)(
        trained.checkpoint, calibrated, data, work, demo=cfg.demo is not None,
        priors=priors.rules, detector=detector,
    )  # fmt: skip
    if cfg.precision.enabled:  # bf16 / int8 against fp32 on the held-out fold (flows/precision.py)
        bundle = stage(check_precision)(bundle, data, cfg.heldout_fold, cfg.precision, work)
    metrics = stage(log_evaluation)(calibrated, trained, data, tracking)
    if cfg.precision.enabled:
        stage(log_precision)(bundle, trained, tracking)
    registered = stage(register_bundle)(bundle, trained, tracking)
    if cfg.promotion.enabled:
        promotion = promote_candidate(
            registered, data, cfg.heldout_fold, cfg.promotion.tolerance, tracking
        )
    else:
        promotion = skip_promotion(registered, tracking)
    return publish_summary(cfg, tracking, data, trained, metrics, bundle, registered, promotion)


def parse_set(values: list[str]) -> dict[str, Any]:
    """`--set key.path=value` pairs; values are YAML (numbers, booleans, lists...)."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key.path=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG, type=existing_file)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.schedule.epochs=2",
    )
    args = parser.parse_args(argv)
    summary = retrain(args.config, parse_set(args.set) or None)
    print(summary.markdown)


if __name__ == "__main__":
    from flows.entry_point import run_entry_point

    run_entry_point("python -m flows.retrain", main)
