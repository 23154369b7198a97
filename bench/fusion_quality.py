"""Fusion quality on the shared data: per small-object tag, held-out AP of the classifier alone
vs fused with detector evidence, for each detector backend, blind-style.

    .venv/bin/python bench/fusion_quality.py [--data-root ../shared/data] [--work /tmp/fq]
        [--backends yolo,ssd] [--steps 120] [--det-size 256] [--epochs 4]

Data: the box sources of the shared data (coco_mini, coco_tiny300, voc2012; Open Images has no
boxes there) assembled with the shipped taxonomy and mappings, 10 folds. The classifier
(resnet18, 64 px) and the detector train on folds 0-5; folds 6-9 are held out. Fusion is
fitted on held-out folds {6, 7} and scored on {8, 9}, then the other way round (each image is
scored by a fusion that never saw it; the fallback check inside runs on the fitting folds
only). Reported: every detector tag with >= 10 held-out known positives, AP (known cells) of
the classifier alone and of the fused score. CPU settings that finish in minutes.

Each backend prints its table and `RESULT fusion_quality backend=<b> tags=<n> tags_lower=<n>
mean_ap_gain=<x>`; the last line is the default backend's (ssd).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from label_system.taxonomy import load_default_taxonomy
from tagger.data.assembly_job import load_assembly_config, run_assembly
from tagger.data.manifest import read_manifest, targets_from_manifest
from tagger.detect.backends import train_detector
from tagger.detect.detections import DetectorConfig, DetectorTraining
from tagger.detect.evaluation import average_precision_50
from tagger.detect.evidence import detect_paths, evidence_features
from tagger.detect.fusion import apply_fusion, fit_fusion
from tagger.detect.targets import box_targets, detector_tags
from tagger.metrics import average_precision
from tagger.train.predictions import predict_manifest
from tagger.train.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
BOX_SOURCES = ("coco_mini", "coco_tiny300", "voc2012")
TRAIN_FOLDS = (0, 1, 2, 3, 4, 5)
HALVES = ((6, 7), (8, 9))
MIN_HELD_POSITIVES = 10


def assemble(data_root: Path, work: Path) -> Path:
    manifest = work / "assembled" / "manifest.parquet"
    if manifest.exists():
        return manifest
    config = load_assembly_config(ROOT / "flows/configs/shared_data.yaml")
    sources = [s for s in config.sources if s.name in BOX_SOURCES]
    config = config.model_copy(update={"sources": sources, "data_root": str(data_root),
                                       "output_dir": str(work / "assembled")})  # fmt: skip
    return run_assembly(config).manifest


def classifier_probs(manifest, taxonomy, held, work: Path, epochs: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    cache = work / "classifier_probs.npy"
    if cache.exists():
        return np.load(cache)
    train_rows = manifest[manifest["fold"].isin(TRAIN_FOLDS)].reset_index(drop=True)
    cfg = TrainConfig.model_validate({
        "model": {"backbone": "resnet18", "image_size": 64, "pretrained": False},
        "schedule": {"epochs": epochs, "warmup_epochs": 0.5, "early_stop_patience": None},
        "optimizer": {"lr": 3e-3}, "data": {"val_fold": None, "batch_size": 32, "num_workers": 0},
        "progress": False, "ema_decay": None, "output_dir": str(work / "classifier"),
    })  # fmt: skip
    result = train(cfg, train_rows, taxonomy)
    assert result.model is not None
    prep = {"image_size": 64, "mean": cfg.model.mean, "std": cfg.model.std}
    probs = predict_manifest(result.model, held, prep, batch_size=32)
    np.save(cache, probs)
    return probs


def run_backend(backend: str, manifest, taxonomy, held, probs, args) -> str:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    tags = detector_tags(manifest, taxonomy)
    targets = box_targets(manifest, taxonomy, tags)
    in_train = manifest["fold"].isin(TRAIN_FOLDS).to_numpy()
    config = DetectorConfig(
        backend=backend, architecture="ssd_tiny", image_size=args.det_size,
        training=DetectorTraining(epochs=1000, max_steps=args.steps, batch_size=8, lr=3e-3),
    )  # fmt: skip
    detector = train_detector(targets.subset(in_train), taxonomy.tag_ids, config)
    held_targets = targets.subset(~in_train)
    found = detect_paths(detector, held_targets.paths, args.det_size, config.tiling)
    ap50 = average_precision_50(found, held_targets, taxonomy.tag_ids)
    cols = np.asarray(taxonomy.indices(tags))
    features = evidence_features(probs, found, cols)
    y, known = targets_from_manifest(held, taxonomy)
    folds = held["fold"].to_numpy()
    fused = probs.copy()
    for fit_half, score_half in (HALVES, HALVES[::-1]):
        fit = np.isin(folds, fit_half)
        score = np.isin(folds, score_half)
        model = fit_fusion(features[fit], y[fit][:, cols], known[fit][:, cols], tags,
                           groups=folds[fit], min_positives=5, gate="always")  # fmt: skip
        out, _ = apply_fusion(
            model, probs[score], features[score], np.ones(score.sum(), bool), cols
        )
        fused[score] = out
    ap_cls = average_precision(probs[:, cols], y[:, cols], known[:, cols])
    ap_fused = average_precision(fused[:, cols], y[:, cols], known[:, cols])
    positives = ((y[:, cols] > 0) & known[:, cols]).sum(axis=0)
    print(f"\nbackend {backend}: detector trained {args.steps} steps at {args.det_size} px, "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    print(
        f"{'tag':16s} {'held pos':>8s} {'AP50 det':>8s} {'AP cls':>7s} {'AP fused':>8s} "
        f"{'gain':>7s}"
    )
    gains, lower = [], 0
    for j, tag in enumerate(tags):
        if positives[j] < MIN_HELD_POSITIVES:
            continue
        gain = ap_fused[j] - ap_cls[j]
        gains.append(gain)
        lower += int(gain < -1e-9)
        print(f"{tag:16s} {positives[j]:8d} {ap50[tag]:8.3f} {ap_cls[j]:7.3f} {ap_fused[j]:8.3f} "
              f"{gain:+7.3f}")  # fmt: skip
    mean_gain = float(np.mean(gains)) if gains else 0.0
    return (f"RESULT fusion_quality backend={backend} tags={len(gains)} tags_lower={lower} "
            f"mean_ap_gain={mean_gain:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fusion_quality"))
    parser.add_argument("--backends", default="yolo,ssd", help="comma-separated; ssd last")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--det-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4, help="classifier epochs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    taxonomy = load_default_taxonomy()
    manifest = read_manifest(assemble(args.data_root, args.work))
    held = manifest[~manifest["fold"].isin(TRAIN_FOLDS)].reset_index(drop=True)
    print(f"{len(manifest)} images, {len(held)} held out (folds 6-9)", flush=True)
    probs = classifier_probs(manifest, taxonomy, held, args.work, args.epochs)
    lines = [
        run_backend(b, manifest, taxonomy, held, probs, args) for b in args.backends.split(",")
    ]
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
