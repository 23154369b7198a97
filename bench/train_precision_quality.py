"""Does bf16 training hurt? Held-out mAP of a bf16-trained and an fp32-trained model.

Both runs use the same config, seed, data and number of epochs; only `amp` differs ("off" vs
"bf16"). Training uses every fold but `--test-fold` (`--val-fold` is the training run's
validation fold, logged but not used for any choice here); the last-epoch model of each run
is scored in fp32 on `--test-fold`, which neither run saw, and the mAP over its known cells is
compared. First assemble the data (manifest + 256 px cache):

    tagger assemble flows/configs/shared_data.yaml --data-root ../shared/data \
        --output-dir /tmp/assembled_shared
    python bench/train_precision_quality.py /tmp/assembled_shared [--epochs 6 --image-size 112]

Last line: `RESULT train_precision_quality map_fp32=<m> map_bf16=<m> map_diff=<bf16 - fp32>
fp32_s=<train seconds> bf16_s=<train seconds>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from label_system.taxonomy import load_default_taxonomy
from tagger.data.manifest import read_manifest, targets_from_manifest
from tagger.metrics import average_precision, mean_average_precision
from tagger.train.predictions import predict_manifest
from tagger.train.training import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assembled", type=Path, help="assembly output dir (manifest + cache)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--val-fold", type=int, default=0)
    parser.add_argument("--test-fold", type=int, default=1)
    parser.add_argument("--subset", type=float, default=1.0, help="share of training rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--amps", nargs="+", default=["off", "bf16"], choices=["off", "bf16"],
        help="which runs (e.g. one per process, to run the two side by side)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.assembled / "manifest.parquet")
    taxonomy = load_default_taxonomy()
    test = manifest[manifest["fold"] == args.test_fold].reset_index(drop=True)
    rest = manifest[manifest["fold"] != args.test_fold]
    if args.subset < 1.0:
        rest = rest.sample(frac=args.subset, random_state=args.seed)
    rest = rest.reset_index(drop=True)
    targets, known = targets_from_manifest(test, taxonomy)
    print(
        f"{len(rest)} training rows (val fold {args.val_fold} inside), {len(test)} test rows "
        f"(fold {args.test_fold}); {args.backbone}@{args.image_size}, {args.epochs} epochs, "
        f"batch {args.batch_size}, seed {args.seed}, {args.threads} threads",
        flush=True,
    )
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="precision-quality-") as tmp:
        for amp in args.amps:
            cfg = TrainConfig.model_validate(
                {
                    "model": {"backbone": args.backbone, "image_size": args.image_size},
                    "optimizer": {"lr": args.lr},
                    "schedule": {"epochs": args.epochs, "warmup_epochs": 1},
                    "data": {
                        "cache_dir": str(args.assembled / "cache"),
                        "cache_size": 256,
                        "val_fold": args.val_fold,
                        "batch_size": args.batch_size,
                        "num_workers": args.workers,
                    },
                    "device": "cpu",
                    "amp": amp,
                    "seed": args.seed,
                    "progress": False,
                    "output_dir": str(Path(tmp) / amp),
                }
            )
            start = time.perf_counter()
            result = train(cfg, rest, taxonomy)
            seconds = time.perf_counter() - start
            assert result.model is not None
            probs = predict_manifest(
                result.model,
                test,
                {"image_size": args.image_size, "mean": cfg.model.mean, "std": cfg.model.std},
                cache_dir=args.assembled / "cache",
                batch_size=64,
            )
            test_map = mean_average_precision(average_precision(probs, targets, known))
            val = [h.get("val_map", float("nan")) for h in result.history]
            results[amp] = (test_map, seconds)
            print(
                f"amp={amp}: test mAP {test_map:.4f}, val mAP by epoch "
                f"{[round(v, 4) for v in val]}, {seconds:.0f} s",
                flush=True,
            )
    if set(results) != {"off", "bf16"}:
        return
    (m32, s32), (m16, s16) = results["off"], results["bf16"]
    print(f"bf16 - fp32 held-out mAP: {m16 - m32:+.4f} (goal: within 0.01)")
    print(
        f"RESULT train_precision_quality map_fp32={m32:.4f} map_bf16={m16:.4f} "
        f"map_diff={m16 - m32:+.4f} fp32_s={s32:.0f} bf16_s={s16:.0f}"
    )


if __name__ == "__main__":
    main()
