"""Ablation: baseline BCE vs + repeat-factor sampling vs + RFS + focal loss, same budget and seed.

    .venv/bin/python bench/ablation.py flows/configs/train_shared_data.yaml \\
        [--epochs 6 --image-size 64 --backbone resnet18 --batch-size 32 --threads 2]

DATA_CONFIG is a training config YAML; its data section (manifest, cache, validation fold)
and sampler threshold are used; model size, epochs and batch come from the flags, and loss and
sampler from each variant. Budget: the same number of images drawn (so of optimizer steps) for
every variant: the baseline runs `--epochs`, and since a repeat-factor epoch draws sum(r)
images, the RFS variants run round(epochs * N / sum(r)) epochs (steps are printed).

Scores: per-tag AP on the validation fold after the last epoch (no model selection on it),
over the known cells. "all": mean over tags with a known positive in validation; "rare": the
same over the third of those tags with the fewest known positives in the training folds.

Last line: `RESULT ablation map_bce=... map_rfs=... map_rfs_focal=... rare_bce=... rare_rfs=...
rare_rfs_focal=...`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tagger.train.sampling import compute_repeat_factors
from tagger.train.training import (
    TrainConfig,
    load_train_config,
    load_training_inputs,
    merge_nested,
    split_manifest,
    train,
)

VARIANTS: dict[str, dict[str, Any]] = {
    "bce": {"loss": {"name": "bce"}, "sampler": {"name": "uniform"}},
    "rfs": {"loss": {"name": "bce"}, "sampler": {"name": "repeat_factor"}},
    "rfs_focal": {"loss": {"name": "focal"}, "sampler": {"name": "repeat_factor"}},
}


def rare_third(train_positives: np.ndarray, ap: np.ndarray) -> np.ndarray:
    """Indices of the third (rounded up) of evaluable tags with the fewest training positives."""
    evaluable = np.flatnonzero(~np.isnan(ap))
    order = evaluable[np.argsort(train_positives[evaluable], kind="stable")]
    return order[: math.ceil(len(order) / 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_config", type=Path)
    parser.add_argument("--epochs", type=int, default=6, help="baseline epochs (sets the budget)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a temp folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = load_train_config(args.data_config)
    manifest, taxonomy = load_training_inputs(base)
    train_split, val_split = split_manifest(manifest, taxonomy, base.data)
    positives = ((train_split.targets > 0) & train_split.known).sum(axis=0)
    factors = compute_repeat_factors(
        train_split.targets, train_split.known, base.sampler.threshold, base.sampler.phi
    )
    n_train = len(train_split.paths)
    print(
        f"{len(manifest)} images ({n_train} train, {len(val_split.paths)} validation), "
        f"{len(taxonomy)} tags; repeat factors: mean {factors.mean():.2f}, max "
        f"{factors.max():.2f} (t={base.sampler.threshold}, {base.sampler.phi})"
    )

    out_root = args.output_dir or Path(tempfile.mkdtemp(prefix="ablation_"))
    scores: dict[str, tuple[float, float]] = {}
    for name, variant in VARIANTS.items():
        rfs = variant["sampler"]["name"] == "repeat_factor"
        epochs = max(1, round(args.epochs * n_train / factors.sum())) if rfs else args.epochs
        overrides = {
            "sampler": variant["sampler"],
            "model": {
                "backbone": args.backbone,
                "image_size": args.image_size,
                "pretrained": False,
            },
            "optimizer": {"lr": args.lr},
            "schedule": {"epochs": epochs, "early_stop_patience": None},
            "data": {"batch_size": args.batch_size, "num_workers": args.workers},
            "seed": args.seed,
            "ema_decay": None,
            "progress": False,
            "output_dir": str(out_root / name),
        }
        # the variant's loss replaces the config's (a merge would keep e.g. focal's gamma)
        raw = merge_nested(base.model_dump(), overrides) | {"loss": variant["loss"]}
        cfg = TrainConfig.model_validate(raw)
        start = time.perf_counter()
        result = train(cfg, manifest, taxonomy)
        ap = result.last_val_ap
        if ap is None:
            raise SystemExit("the config has no validation fold (data.val_fold); set one")
        rare = rare_third(positives, ap)
        scores[name] = (float(np.nanmean(ap)), float(np.nanmean(ap[rare])))
        steps = epochs * (math.ceil(factors.sum()) if rfs else n_train) // args.batch_size
        print(
            f"{name:10s} epochs {epochs:3d} (~{steps} steps) mAP {scores[name][0]:.4f} "
            f"rare-third mAP {scores[name][1]:.4f} ({len(rare)} tags) "
            f"[{time.perf_counter() - start:.0f} s]",
            flush=True,
        )

    print("\nvariant      mAP all   mAP rare third")
    for name, (all_tags, rare_tags) in scores.items():
        print(f"{name:10s}   {all_tags:.4f}    {rare_tags:.4f}")
    fields = " ".join(f"map_{k}={v[0]:.4f}" for k, v in scores.items())
    fields += " " + " ".join(f"rare_{k}={v[1]:.4f}" for k, v in scores.items())
    print(f"RESULT ablation {fields}")


if __name__ == "__main__":
    main()
