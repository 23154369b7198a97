"""Do per-tag thresholds hold on data not used to choose them? (issue: calibration)

    .venv/bin/python bench/heldout_thresholds.py flows/configs/train_shared_data.yaml \\
        [--epochs 8 --image-size 96 --backbone resnet18 --test-folds 8 9]

Trains on the manifest's folds other than `--test-folds` (fold `data.val_fold` validates),
predicts the validation fold and the test folds, calibrates thresholds (target precision 0.9)
on the validation fold plus the first test fold, and checks them on the remaining test fold(s):
for the tags marked as meeting the target, the precision there.

Last line: `RESULT heldout_thresholds tags_ok=<n> tags_checked=<n> median_precision=<x>
micro_precision=<x> share_within_0.05=<x>`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from tagger.calibrate.thresholds import (
    CalibrationConfig,
    calibrate_from_folds,
    check_thresholds,
    summarize_check,
)
from tagger.data.manifest import targets_from_manifest
from tagger.train.predictions import predict_manifest
from tagger.train.training import load_train_config, load_training_inputs, merge_nested, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-folds", type=int, nargs="+", default=[8, 9])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = load_train_config(args.config)
    manifest, taxonomy = load_training_inputs(base)
    test_folds = list(args.test_folds)
    val_fold = base.data.val_fold if base.data.val_fold is not None else 0
    out = Path(tempfile.mkdtemp(prefix="heldout_thresholds_"))
    cfg = base.model_validate(
        merge_nested(
            base.model_dump(),
            {
                "model": {"backbone": args.backbone, "image_size": args.image_size},
                "schedule": {"epochs": args.epochs, "early_stop_patience": None},
                "data": {"batch_size": args.batch_size, "num_workers": 1, "val_fold": val_fold},
                "output_dir": str(out),
            },
        )
    )
    train_rows = ~manifest["fold"].isin(test_folds)
    result = train(cfg, manifest[train_rows].reset_index(drop=True), taxonomy)
    assert result.model is not None

    held = manifest[manifest["fold"].isin([val_fold, *test_folds])].reset_index(drop=True)
    preprocessing = {
        "image_size": args.image_size,
        "resize": cfg.data.eval_fit,
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
    }
    probs = predict_manifest(
        result.model, held, preprocessing, cache_dir=cfg.data.cache_dir, batch_size=64
    )
    targets, known = targets_from_manifest(held, taxonomy)
    folds = held["fold"].to_numpy()
    train_folds = sorted(set(manifest.loc[train_rows, "fold"]) - {val_fold})
    calib_folds = [val_fold, test_folds[0]]
    check_rows = np.isin(folds, test_folds[1:])
    config = CalibrationConfig(policy="precision", target_precision=0.9, fallback=("disabled",))
    calibration = calibrate_from_folds(
        probs, targets, known, folds, calib_folds,
        train_folds=train_folds, taxonomy=taxonomy, config=config,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    report = check_thresholds(
        probs[check_rows], targets[check_rows], known[check_rows], calibration
    )
    print(f"trained on folds {train_folds}, validated on {val_fold}; calibrated on folds "
          f"{calib_folds} ({int((~check_rows).sum())} images), checked on {test_folds[1:]} "
          f"({int(check_rows.sum())} images)")  # fmt: skip
    meeting = report[report["meets_target"].astype(bool)]
    print(meeting.to_string(max_rows=80))
    summary = summarize_check(report)
    print(
        f"RESULT heldout_thresholds tags_ok={int(summary['tags_meeting_target'])} "
        f"tags_checked={int(summary['tags_with_predictions'])} "
        f"median_precision={summary['median_precision']:.3f} "
        f"micro_precision={summary['micro_precision']:.3f} "
        f"share_within_0.05={summary['share_within_tolerance']:.3f}"
    )


if __name__ == "__main__":
    main()
