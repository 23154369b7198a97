"""Do per-tag thresholds hold on photos nobody has seen? Old method vs cross-fitted + bound.

    .venv/bin/python bench/heldout_thresholds.py flows/configs/train_shared_data.yaml \\
        [--manifest M --cache-dir C] [--epochs 4 --image-size 64 --backbone resnet18] \\
        [--test-folds 8 9 --k 4 --work /tmp/heldout_work]

The test folds are never used by any model or any calibration: they stand for the photos
nobody has seen. The other folds are cross-fitted (`tagger.train.crossfit`, `--k` models, each
trained on the other fold groups). At equal model -- model 0 of the cross-fit, which never saw
its fold group nor the test folds -- two ways of choosing thresholds (precision target 0.9) are
checked on the test folds:

- old: the point estimate on one validation fold (the first fold of model 0's group: scored by
  model 0, as the retrain flow calibrates on the final model's validation fold), min_positives
  10;
- new: the cross-fitted out-of-fold probabilities of every non-test fold and a one-sided
  Clopper-Pearson lower bound at `--level` (`bound` in `CalibrationConfig`).

For the tags each method marks as meeting the target: how many, the share whose precision on
the test folds is within 0.05 of the target, the median and micro precision there. Predictions
are kept in `--work` (rerun with the same folder: only calibration runs again).

Last line: `RESULT heldout_thresholds tags_ok=<n> tags_checked=<n> median_precision=<x>
micro_precision=<x> share_within_0.05=<x> old_tags_ok=<n> old_share_within_0.05=<x>
old_median_precision=<x> old_micro_precision=<x> ratio_tags_ok=<x>` (unprefixed = new method).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from label_system.taxonomy import Taxonomy
from tagger.calibrate.thresholds import (
    CalibrationConfig,
    calibrate_from_folds,
    check_thresholds,
    summarize_check,
)
from tagger.train.checkpoint import read_checkpoint_weights
from tagger.train.crossfit import CrossFitConfig, cross_fit, preprocessing_of
from tagger.train.model import create_model
from tagger.train.predictions import (
    Predictions,
    align_predictions,
    predict_manifest,
    read_predictions,
    write_predictions,
)
from tagger.train.training import (
    Callback,
    TrainConfig,
    load_train_config,
    load_training_inputs,
    merge_nested,
)


class EpochLog(Callback):
    def __init__(self, name: str) -> None:
        self.name, self.start = name, time.perf_counter()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if step % 20 == 0:
            print(f"  {self.name} step {step}: {metrics['images_per_s']:.1f} images/s", flush=True)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = {k: round(v, 4) for k, v in metrics.items() if k in ("train_loss", "val_map")}
        print(f"  {self.name} epoch {epoch}: {shown} at {time.perf_counter() - self.start:.0f} s",
              flush=True)  # fmt: skip


def oof_predictions(
    cfg: TrainConfig,
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    test_folds: list[int],
    k: int,
    work: Path,
) -> Predictions:
    """Cross-fitted probabilities of every non-test fold (model checkpoints kept)."""
    path = work / "oof_predictions.parquet"
    if path.exists():
        return read_predictions(path)
    folds = tuple(sorted(int(f) for f in set(manifest["fold"]) - set(test_folds)))
    config = CrossFitConfig(folds=folds, k=k, keep_checkpoints=True)
    print(f"cross-fitting folds {list(folds)} with {k} models", flush=True)
    pred = cross_fit(manifest, taxonomy, cfg, config, work / "crossfit",
                     callbacks=[EpochLog("crossfit")])  # fmt: skip
    return read_predictions(write_predictions(pred, path))


def finished_models(work: Path) -> Predictions:
    """The out-of-fold rows of the cross-fit models that have finished (`--use-finished`: a
    partial result while the others still train)."""
    parts = []
    m = 0
    while (work / "crossfit" / f"model_{m}.parquet").exists():
        parts.append(read_predictions(work / "crossfit" / f"model_{m}.parquet"))
        m += 1
    if not parts:
        raise SystemExit(f"no finished cross-fit model in {work / 'crossfit'}")
    print(f"using the {len(parts)} finished cross-fit model(s) only", flush=True)
    return Predictions(
        image_ids=np.concatenate([p.image_ids for p in parts]),
        folds=np.concatenate([p.folds for p in parts]),
        probs=np.concatenate([p.probs for p in parts]),
        tag_ids=parts[0].tag_ids,
        scored_by=np.concatenate([np.full(len(p.image_ids), i) for i, p in enumerate(parts)]),
        models=tuple(p.train_folds for p in parts),
    )


def model0_on_test(
    cfg: TrainConfig, oof: Predictions, manifest: pd.DataFrame, taxonomy: Taxonomy,
    test_folds: list[int], work: Path,
) -> Predictions:  # fmt: skip
    """Model 0 of the cross-fit (the "final model" of the comparison) on the test folds."""
    path = work / "model0_test_predictions.parquet"
    if path.exists():
        return read_predictions(path)
    model = create_model(cfg.model.to_model_config(len(taxonomy)))
    model.load_state_dict(read_checkpoint_weights(work / "crossfit" / "model_0" / "last"))
    test = manifest[manifest["fold"].isin(test_folds)].reset_index(drop=True)
    probs = predict_manifest(
        model.eval(), test, preprocessing_of(cfg), cache_dir=cfg.data.cache_dir, batch_size=64
    )
    pred = Predictions(test["image_id"].to_numpy(), test["fold"].to_numpy(), probs,
                       taxonomy.tag_ids, train_folds=oof.models[0])  # fmt: skip
    return read_predictions(write_predictions(pred, path))


def model0_rows(oof: Predictions) -> Predictions:
    """The out-of-fold rows model 0 scored, as a one-model predictions file."""
    rows = oof.scored_by == 0
    return Predictions(oof.image_ids[rows], oof.folds[rows], oof.probs[rows], oof.tag_ids,
                       train_folds=oof.models[0])  # fmt: skip


def check(
    name: str,
    calib: Predictions,
    calib_folds: list[int],
    final: Predictions,
    test_folds: list[int],
    manifest: pd.DataFrame,
    taxonomy: Taxonomy,
    config: CalibrationConfig,
    *,
    quiet: bool = False,
) -> dict[str, float]:
    """Thresholds from `calib` on `calib_folds`, checked with `final` on the test folds."""
    probs, targets, known, folds = align_predictions(calib, manifest, taxonomy)
    calibration = calibrate_from_folds(
        probs, targets, known, folds, calib_folds, train_folds=calib.train_folds,
        taxonomy=taxonomy, config=config,
    )  # fmt: skip
    fp, ft, fk, ff = align_predictions(final, manifest, taxonomy)
    test = np.isin(ff, test_folds)
    report = check_thresholds(fp[test], ft[test], fk[test], calibration)
    summary = summarize_check(report)
    if quiet:
        return summary
    meeting = report[report["meets_target"].astype(bool)]
    cols = ["tag", "threshold", "precision_calib", "precision", "recall", "tp", "fp",
            "support_pos"]  # fmt: skip
    extra = calibration.report.set_index("tag").loc[meeting["tag"]]
    shown = meeting[cols].assign(
        calib_pos=extra["support_pos"].to_numpy(), bound=extra["precision_bound"].to_numpy()
    )
    print(f"\n== {name}: calibrated on folds {calib_folds} "
          f"({int(np.isin(folds, calib_folds).sum())} images), checked on {test_folds} "
          f"({int(test.sum())} images)")  # fmt: skip
    print(shown.to_string(max_rows=200, float_format=lambda x: f"{x:.3f}"))
    print({k: round(v, 3) for k, v in summary.items()})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-folds", type=int, nargs="+", default=[8, 9])
    parser.add_argument("--k", type=int, default=4, help="cross-fit models")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--bound", default="clopper_pearson")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--use-finished", action="store_true",
                        help="calibrate with the cross-fit models finished so far")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("/tmp/heldout_thresholds"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)

    data: dict[str, Any] = {"batch_size": args.batch_size, "num_workers": 1}
    if args.manifest:
        data["manifest"] = str(args.manifest)
    if args.cache_dir:
        data["cache_dir"] = str(args.cache_dir)
    base = load_train_config(args.config, {"data": data})
    manifest, taxonomy = load_training_inputs(base)
    test_folds = list(args.test_folds)
    cfg = base.model_validate(
        merge_nested(
            base.model_dump(),
            {
                "model": {"backbone": args.backbone, "image_size": args.image_size},
                "schedule": {"epochs": args.epochs, "early_stop_patience": None},
                "data": {"val_fold": None},
                "output_dir": str(args.work / "unused"),
                "progress": False,
            },
        )
    )
    start = time.perf_counter()
    if args.use_finished:
        oof = finished_models(args.work)
    else:
        oof = oof_predictions(cfg, manifest, taxonomy, test_folds, args.k, args.work)
    final = model0_on_test(cfg, oof, manifest, taxonomy, test_folds, args.work)
    print(f"predictions ready after {time.perf_counter() - start:.0f} s (cached ones: 0 s)")

    old_cfg = CalibrationConfig(target_precision=args.target, min_positives=10,
                                bound="none", fallback=("disabled",))  # fmt: skip
    new_cfg = old_cfg.model_copy(update={"bound": args.bound, "level": args.level})
    mine = model0_rows(oof)
    val_fold = int(min(set(mine.folds.tolist())))
    old = check(f"old: point estimate, one validation fold ({val_fold}) of model 0", mine,
                [val_fold], final, test_folds, manifest, taxonomy, old_cfg)  # fmt: skip
    oof_folds = sorted({int(f) for f in oof.folds})
    new = check(f"new: cross-fitted (k={args.k}) + {args.bound} bound at {args.level}", oof,
                oof_folds, final, test_folds, manifest, taxonomy, new_cfg)  # fmt: skip
    variants = [("cross-fitted, point estimate", {"bound": "none"})] + [
        (f"cross-fitted, {b} {lv}", {"bound": b, "level": lv})
        for b, lv in (("clopper_pearson", 0.8), ("clopper_pearson", 0.9), ("wilson", 0.95))
    ]
    rows = [("old: one fold, point estimate", old), (f"new: cross-fitted, {args.bound} "
             f"{args.level}", new)]  # fmt: skip
    for name, update in variants:
        rows.append((name, check(name, oof, oof_folds, final, test_folds, manifest, taxonomy,
                                 old_cfg.model_copy(update=update), quiet=True)))  # fmt: skip
    print("\nmethod                                   tags_ok  checked  within_0.05  median  micro")
    for name, r in rows:
        print(f"{name:40s} {int(r['tags_meeting_target']):7d}  "
              f"{int(r['tags_with_predictions']):7d}  "
              f"{r['share_within_tolerance']:11.3f}  {r['median_precision']:6.3f}  "
              f"{r['micro_precision']:5.3f}")  # fmt: skip
    ratio = new["tags_meeting_target"] / max(old["tags_meeting_target"], 1.0)
    print(
        f"RESULT heldout_thresholds tags_ok={int(new['tags_meeting_target'])} "
        f"tags_checked={int(new['tags_with_predictions'])} "
        f"median_precision={new['median_precision']:.3f} "
        f"micro_precision={new['micro_precision']:.3f} "
        f"share_within_0.05={new['share_within_tolerance']:.3f} "
        f"old_tags_ok={int(old['tags_meeting_target'])} "
        f"old_share_within_0.05={old['share_within_tolerance']:.3f} "
        f"old_median_precision={old['median_precision']:.3f} "
        f"old_micro_precision={old['micro_precision']:.3f} "
        f"ratio_tags_ok={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
