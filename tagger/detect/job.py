"""The detect and fuse jobs of the retrain flow, without Prefect or MLflow.

detect: train the detector on the manifest's training folds (boxes mapped onto tags by
assembly), write it (safetensors + architecture JSON), run it on the held-out fold (the
images calibration scores), measure AP50 there and draw a few samples.
fuse: read the held-out predictions file and those detections, fit per-tag fusion (nested
over held-out parts, `tagger.detect.fusion`), write the fused predictions file that
calibration reads, the fusion model (JSON), a per-tag report and plot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from label_system.taxonomy import Taxonomy
from tagger.data.images import ImageError, load_rgb
from tagger.data.manifest import read_manifest
from tagger.detect.backends import train_detector
from tagger.detect.detections import DetectorConfig
from tagger.detect.evaluation import average_precision_50, draw_detections, mean_ap50
from tagger.detect.evidence import detect_paths, evidence_features
from tagger.detect.fusion import FusionModel, apply_fusion, fit_fusion, gate_mask
from tagger.detect.io import read_detections, write_detections, write_detector
from tagger.detect.targets import box_targets, detector_tags
from tagger.train.predictions import (
    Predictions,
    align_predictions,
    read_predictions,
    write_predictions,
)

SAMPLES = 6
WEIGHTS_FILE = "detector.safetensors"
ARCHITECTURE_FILE = "detector_architecture.json"


@dataclass(frozen=True)
class DetectOutputs:
    weights: Path
    architecture: Path
    detections: Path  # held-out fold, original-image pixels
    tag_ids: tuple[str, ...]
    metrics: dict[str, float]  # map50 and ap50/<tag>, train_images, steps, final_loss
    samples: list[Path] = field(default_factory=list)


def run_detect_job(
    manifest_path: Path,
    taxonomy: Taxonomy,
    heldout_fold: int,
    config: DetectorConfig,
    output_dir: Path,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> DetectOutputs:
    """Train on folds != heldout_fold, evaluate on heldout_fold; files into `output_dir`."""
    manifest = read_manifest(manifest_path)
    tags = detector_tags(manifest, taxonomy, config.tags)
    targets = box_targets(manifest, taxonomy, tags)
    heldout = manifest["fold"].to_numpy() == heldout_fold
    losses: list[float] = []

    def step(n: int, loss: float) -> None:
        losses.append(loss)
        if on_step is not None:
            on_step(n, loss)

    detector = train_detector(targets.subset(~heldout), taxonomy.tag_ids, config, on_step=step)
    output_dir.mkdir(parents=True, exist_ok=True)
    weights, arch = write_detector(
        detector, output_dir / WEIGHTS_FILE, output_dir / ARCHITECTURE_FILE
    )
    held = targets.subset(heldout)
    found = detect_paths(detector, held.paths, config.image_size, config.tiling)
    detections = write_detections(held.image_ids, found, output_dir / "heldout_detections.parquet")
    per_tag = average_precision_50(found, held, taxonomy.tag_ids)
    metrics = {"map50": mean_ap50(per_tag), **{f"ap50/{t}": v for t, v in per_tag.items()}}
    metrics |= {
        "train_images": float(targets.subset(~heldout).useful().sum()),
        "steps": float(len(losses)),
        "final_loss": losses[-1] if losses else float("nan"),
    }
    samples = _draw_samples(held.paths, found, held, taxonomy, output_dir / "samples")
    (output_dir / "detect_metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return DetectOutputs(weights, arch, detections, tags, metrics, samples)


def _draw_samples(paths, found, held, taxonomy: Taxonomy, out: Path) -> list[Path]:
    """The held-out images with the most true boxes, detections drawn (original pixels)."""
    order = np.argsort([-len(b) for b in held.boxes], kind="stable")[:SAMPLES]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in order:
        det = found[i]
        if det is None:
            continue
        try:
            image = load_rgb(paths[i], None)
        except ImageError:
            continue
        drawn = draw_detections(image, det, taxonomy.tag_ids)
        path = out / f"{held.image_ids[i].replace(':', '_').replace('/', '_')}.png"
        drawn.save(path)
        written.append(path)
    return written


@dataclass(frozen=True)
class FuseOutputs:
    predictions: Path  # fused held-out predictions (what calibrate reads)
    fusion: Path  # FusionModel JSON
    report: Path  # per tag: AP with and without fusion, mode, reason, gate, weights
    plot: Path | None
    summary: dict[str, Any]


def fuse_predictions(
    pred: Predictions,
    detections: list[Any],
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    tag_ids: tuple[str, ...],
    config: DetectorConfig,
) -> tuple[FusionModel, Predictions, np.ndarray]:
    """Fit fusion on held-out predictions + detections (same images, same order); returns the
    model, the fused predictions (taxonomy column order) and which images ran the detector."""
    probs, targets, known, folds = align_predictions(pred, manifest, taxonomy)
    columns = np.asarray(taxonomy.indices(tag_ids), dtype=np.int64)
    features = evidence_features(probs, detections, columns)
    groups = folds if len(np.unique(folds)) >= 3 else None
    model = fit_fusion(
        features,
        targets[:, columns],
        known[:, columns],
        tag_ids,
        groups=groups,
        min_positives=config.fusion_min_positives,
        gate=config.gate.mode,
        keep_gain=config.gate.keep_gain,
        seed=config.training.seed,
    )
    ran = gate_mask(model, probs, columns) & np.array([d is not None for d in detections])
    fused, _ = apply_fusion(model, probs, features, ran, columns)
    out = Predictions(pred.image_ids, pred.folds, fused, taxonomy.tag_ids, pred.train_folds)
    return model, out, ran


def run_fuse_job(
    predictions_path: Path,
    detections_path: Path,
    manifest_path: Path,
    taxonomy: Taxonomy,
    tag_ids: tuple[str, ...],
    config: DetectorConfig,
    output_dir: Path,
) -> FuseOutputs:
    """Fused predictions, fusion model, report and plot into `output_dir`."""
    pred = read_predictions(predictions_path)
    ids, found = read_detections(detections_path)
    by_id = dict(zip(ids, found, strict=True))
    missing = [i for i in pred.image_ids if i not in by_id]
    if missing:
        raise ValueError(
            f"{detections_path}: no detections for {len(missing)} predicted images, "
            f"e.g. {missing[:3]}"
        )
    detections = [by_id[i] for i in pred.image_ids]
    manifest = read_manifest(manifest_path)
    model, fused, ran = fuse_predictions(pred, detections, manifest, taxonomy, tag_ids, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions = write_predictions(fused, output_dir / "fused_predictions.parquet")
    fusion = output_dir / "fusion.json"
    fusion.write_text(json.dumps(model.to_dict(), indent=1), encoding="utf-8")
    report = model.report()
    report_path = output_dir / "fusion_report.csv"
    report.to_csv(report_path, index=False)
    summary = fusion_summary(model, ran)
    return FuseOutputs(predictions, fusion, report_path, plot_fusion(report, output_dir), summary)


def fusion_summary(model: FusionModel, ran: np.ndarray) -> dict[str, Any]:
    """Headline figures: tags fused / fallen back (and why), mean held-out AP gain over the
    fused tags, share of images the gate ran the detector on and the AP it costs."""
    fused = [t for t in model.tags if t.mode == "fused"]
    gains = [t.ap_fused - t.ap_classifier for t in fused]
    costs = [t.ap_fused - t.ap_gated for t in fused]
    return {
        "tags": len(model.tags),
        "tags_fused": len(fused),
        "fallbacks": {t.tag: t.reason for t in model.tags if t.mode != "fused"},
        "mean_ap_gain": float(np.mean(gains)) if gains else 0.0,
        "detector_run_share": float(ran.mean()) if len(ran) else 0.0,
        "gating_ap_cost": float(np.mean(costs)) if costs else 0.0,
        "gate": model.gate,
    }


def plot_fusion(report: pd.DataFrame, output_dir: Path) -> Path | None:
    """Bar chart: held-out AP per detector tag, classifier alone vs fused."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = report.dropna(subset=["ap_classifier"])
    if shown.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(shown) + 2), 3.5))
    x = np.arange(len(shown))
    ax.bar(x - 0.2, shown["ap_classifier"], 0.4, label="classifier")
    ax.bar(x + 0.2, shown["ap_fused"].fillna(shown["ap_classifier"]), 0.4, label="fused")
    ax.set_xticks(x, shown["tag"], rotation=45, ha="right")
    ax.set_ylabel("held-out AP (left-out parts)")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    path = output_dir / "fusion_ap.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
