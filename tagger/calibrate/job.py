"""The calibrate job: held-out predictions + manifest -> thresholds file, per-tag report, plots.

`tagger calibrate` runs `run_calibrate_job`; the Prefect flow `flows/calibrate.py` calls the same
step functions as tasks and logs the outputs to MLflow. Relative paths in a job config resolve
against the config's folder.

Example job config (YAML)::

    predictions: work/oof_predictions.parquet   # tagger.calibrate.evaluation.write_predictions
    manifest: work/assembled/manifest.parquet
    calib_folds: [3, 4]        # omit: every fold the model did not train on (all, for OOF)
    check_folds: [2]           # optional: held-out check on folds not used for calibration
    # check_predictions: work/heldout.parquet  # ... read from another file (the final model)
    # check_split: 0.5         # ... or hold back a random share of the calibration rows
    output_dir: work/calibration
    calibration: {target_precision: 0.9, min_positives: 10, categories: {scenes: {policy: f1}}}

Outputs in `output_dir`: thresholds.json, tag_report.csv (tag, policy, threshold, precision,
recall, support, status, reason, ...), check_report.csv and check_summary.json (with check
folds), plots/*.png, summary.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from label_system.taxonomy import Taxonomy, load_default_taxonomy, load_taxonomy
from tagger.calibrate.plots import create_review_figures, write_figures
from tagger.calibrate.thresholds import (
    Calibration,
    CalibrationConfig,
    calibrate_thresholds,
    check_thresholds,
    heldout_rows,
    summarize_check,
    write_report,
    write_thresholds,
)
from tagger.data.images import hash_file
from tagger.data.manifest import read_manifest
from tagger.metrics import mean_average_precision
from tagger.train.predictions import Predictions, align_predictions, read_predictions


class CalibrateJobConfig(BaseModel):
    """Inputs, folds and outputs of a calibration run (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    predictions: Path
    manifest: Path
    taxonomy: Path | None = None  # None: the shipped album taxonomy
    calib_folds: tuple[int, ...] | None = None  # None: every held-out fold not checked on
    check_folds: tuple[int, ...] = ()
    check_split: float = Field(default=0.0, ge=0.0, lt=1.0)  # share of calib rows held back
    # check_folds read from this file instead (e.g. calibrate on cross-fitted out-of-fold
    # predictions, check on the final model's held-out fold)
    check_predictions: Path | None = None
    output_dir: Path
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    report_format: Literal["csv", "parquet"] = "csv"
    plots: bool = True
    seed: int = 0  # for check_split and the bootstrap interval

    @model_validator(mode="after")
    def _one_check(self) -> CalibrateJobConfig:
        if self.check_folds and self.check_split:
            raise ValueError("give check_folds or check_split, not both")
        if self.check_predictions is not None and not self.check_folds:
            raise ValueError("check_predictions needs check_folds (the folds to check on)")
        return self


def load_calibrate_job_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> CalibrateJobConfig:
    """Read a job config YAML (optional) and apply `overrides`; relative paths resolve against
    the config's folder (overrides: against the working folder)."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of job settings")
        data, base = loaded, path.parent
        for key in ("predictions", "manifest", "taxonomy", "output_dir", "check_predictions"):
            if data.get(key) is not None:
                data[key] = str((base / str(data[key])).expanduser())
    data |= {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return CalibrateJobConfig.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path or '<arguments>'}: invalid calibrate job config:\n{e}") from None


@dataclass
class CalibrateInputs:
    """Held-out probabilities aligned with the manifest's labels, `[N, T]` in taxonomy order."""

    probs: np.ndarray
    targets: np.ndarray
    known: np.ndarray
    folds: np.ndarray  # [N]
    train_folds: tuple[int, ...]
    taxonomy: Taxonomy
    dataset_hash: str  # sha256 of the manifest file
    scores: dict[str, Any] = field(default_factory=dict)  # how the probs were made
    check: CalibrateInputs | None = None  # from `check_predictions`


def load_calibrate_inputs(cfg: CalibrateJobConfig) -> CalibrateInputs:
    """Read predictions, manifest and taxonomy, and align them by image id and tag id."""
    taxonomy = load_taxonomy(cfg.taxonomy) if cfg.taxonomy else load_default_taxonomy()
    manifest = read_manifest(cfg.manifest)
    dataset_hash = hash_file(cfg.manifest)

    def load(path: Path) -> CalibrateInputs:
        pred = read_predictions(path)
        probs, targets, known, folds = align_predictions(pred, manifest, taxonomy)
        return CalibrateInputs(
            probs, targets, known, folds, pred.train_folds, taxonomy, dataset_hash,
            scores=describe_scores(pred),
        )  # fmt: skip

    inputs = load(cfg.predictions)
    if cfg.check_predictions is not None:
        inputs.check = load(cfg.check_predictions)
    return inputs


def describe_scores(pred: Predictions) -> dict[str, Any]:
    """How a predictions file's probabilities were made: cross-fitted (k models, each row out
    of fold) or one model with its training folds."""
    if pred.scored_by is not None:
        return {"scores": "crossfit", "k": len(pred.models),
                "models_train_folds": [list(m) for m in pred.models]}  # fmt: skip
    return {"scores": "heldout", "train_folds": list(pred.train_folds)}


def calib_folds_of(cfg: CalibrateJobConfig, inputs: CalibrateInputs) -> tuple[int, ...]:
    """The configured calibration folds, or every held-out fold not used for the check."""
    if cfg.calib_folds is not None:
        folds = cfg.calib_folds
    else:
        skip = set(cfg.check_folds) | set(inputs.train_folds)
        folds = tuple(int(f) for f in np.unique(inputs.folds) if int(f) not in skip)
    overlap = sorted(set(folds) & set(cfg.check_folds))
    if overlap:
        raise ValueError(
            f"check_folds {list(cfg.check_folds)} overlap calib_folds "
            f"{list(folds)} at {overlap}: the check must use other images"
        )
    return folds


def split_rows(
    cfg: CalibrateJobConfig, inputs: CalibrateInputs
) -> tuple[np.ndarray, np.ndarray | None]:
    """Bool masks `[N]` of the calibration rows and the check rows (None without a check).

    Both come from held-out folds only (training folds refused); `check_split` holds back a
    seeded random share of the calibration folds' rows.
    """
    calib = heldout_rows(
        inputs.folds, calib_folds_of(cfg, inputs), inputs.train_folds, role="calibration"
    )
    if cfg.check_folds:
        source = inputs.check or inputs
        check = heldout_rows(source.folds, cfg.check_folds, source.train_folds, role="check")
        return calib, check
    if cfg.check_split:
        held = np.random.default_rng(cfg.seed).random(len(calib)) < cfg.check_split
        return calib & ~held, calib & held
    return calib, None


def calibrate_inputs(cfg: CalibrateJobConfig, inputs: CalibrateInputs) -> Calibration:
    """Thresholds from the calibration rows (see `split_rows`); `method` records how."""
    rows, _ = split_rows(cfg, inputs)
    calibration = calibrate_thresholds(
        inputs.probs[rows], inputs.targets[rows], inputs.known[rows], inputs.taxonomy,
        cfg.calibration, rng=np.random.default_rng(cfg.seed),
    )  # fmt: skip
    method = {
        **inputs.scores,
        "calib_folds": [int(f) for f in calib_folds_of(cfg, inputs)],
        "calib_images": int(rows.sum()),
        "bound": cfg.calibration.bound,
        "level": cfg.calibration.level,
    }
    return replace(calibration, method=method)


@dataclass
class CheckResult:
    """Per-tag held-out precision of the thresholds on the check rows, and its summary."""

    table: pd.DataFrame  # check_thresholds
    summary: dict[str, float]


def check_inputs(
    cfg: CalibrateJobConfig, inputs: CalibrateInputs, calibration: Calibration
) -> CheckResult | None:
    """Precision of the chosen thresholds on the check rows (None when there are none)."""
    _, rows = split_rows(cfg, inputs)
    if rows is None:
        return None
    source = inputs.check if cfg.check_folds and inputs.check is not None else inputs
    table = check_thresholds(
        source.probs[rows], source.targets[rows], source.known[rows], calibration
    )
    return CheckResult(table, summarize_check(table))


@dataclass
class CalibrateOutputs:
    """Where the job wrote its files, and the headline figures."""

    thresholds: Path
    report: Path
    summary: dict[str, Any]
    plots: dict[str, Path] = field(default_factory=dict)
    check_report: Path | None = None


def summarize_calibration(calibration: Calibration, check: CheckResult | None) -> dict[str, Any]:
    """Headline figures: status counts, mAP on the calibration rows, check summary."""
    rep = calibration.report
    precision_tags = rep[rep["policy"] == "precision"]
    summary: dict[str, Any] = {
        "tags": len(rep),
        "tags_meeting_target": float(precision_tags["meets_target"].sum()),
        "tags_meeting_standard": float(rep["meets_standard"].sum()),
        "method": dict(calibration.method),
        "status": {str(k): int(v) for k, v in rep["status"].value_counts().items()},
        "calibration_map": mean_average_precision(rep["ap"].to_numpy(dtype=np.float64)),
        "share_meeting_target": float(precision_tags["meets_target"].mean())
        if len(precision_tags)
        else float("nan"),
    }
    if check is not None:
        summary["check"] = check.summary
        # flat too: the retrain summary and MLflow show top-level figures
        summary |= {f"check_{k}": float(v) for k, v in check.summary.items()}
    return summary


def write_calibrate_outputs(
    cfg: CalibrateJobConfig,
    inputs: CalibrateInputs,
    calibration: Calibration,
    check: CheckResult | None,
) -> CalibrateOutputs:
    """Thresholds file, per-tag report, plots and summary into `cfg.output_dir`."""
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    thresholds = write_thresholds(calibration, out / "thresholds.json", inputs.taxonomy)
    report = write_report(calibration.report, out / f"tag_report.{cfg.report_format}")
    outputs = CalibrateOutputs(thresholds, report, summarize_calibration(calibration, check))
    outputs.summary["dataset_hash"] = inputs.dataset_hash
    if check is not None:
        outputs.check_report = write_report(check.table, out / f"check_report.{cfg.report_format}")
    if cfg.plots:
        rows, _ = split_rows(cfg, inputs)
        figures = create_review_figures(
            inputs.probs[rows], inputs.targets[rows], inputs.known[rows], calibration.report
        )
        outputs.plots = write_figures(figures, out / "plots")
    (out / "summary.json").write_text(json.dumps(outputs.summary, indent=1, default=str))
    return outputs


def run_calibrate_job(cfg: CalibrateJobConfig) -> CalibrateOutputs:
    """Load, calibrate, check (optional), write."""
    inputs = load_calibrate_inputs(cfg)
    calibration = calibrate_inputs(cfg, inputs)
    check = check_inputs(cfg, inputs, calibration)
    return write_calibrate_outputs(cfg, inputs, calibration, check)
