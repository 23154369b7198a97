"""What each int8 quantization setting costs against fp32, on a trained model and real images.

A training checkpoint (`tagger train` output, e.g. `<run>/best`) becomes a bundle with
thresholds calibrated on fold `--calib-fold`; fold `--check-fold` is the held-out set, as in the
retrain flow's precision stage. The int8 model is quantized four ways, calibrated on the same
`--calibration-images` training images (a seeded draw from the folds used for neither the
thresholds nor the check):

- full-range weights, head quantized (ONNX Runtime's defaults for QDQ, per channel);
- 7-bit weights (`reduce_range`), head quantized;
- full-range weights, head in fp32;
- 7-bit weights, head in fp32 (what `tagger.inference.quantize` ships).

Each is compared with fp32 by the bundle check's own rules (`compare_precision`): decision
agreement, changed decisions outside the margin, score differences, mAP difference and the
verdict. The machine's int8 kernels decide the outcome (AVX2 saturates full-range weights, VNNI
and AMX do not), so the CPU is printed first.

Usage: python bench/int8_quality.py CHECKPOINT MANIFEST [--cache-dir DIR] [--calib-fold 8]
       [--check-fold 9] [--calibration-images 48]
Last line: RESULT int8_quality agreement=<shipped> map_diff=<shipped> max_score_diff=<shipped>
       passed=<0|1> agreement_default=<full-range, quantized head> map_diff_default=<x>
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from label_system.taxonomy import load_default_taxonomy
from tagger.bundle.model_bundle import create_bundle, preprocessing_of
from tagger.calibrate.precision_check import PrecisionCheck, PrecisionRules, compare_precision
from tagger.calibrate.thresholds import CalibrationConfig, calibrate_thresholds
from tagger.data.manifest import read_manifest, targets_from_manifest
from tagger.inference.engine import TorchBackend
from tagger.inference.onnx_export import OnnxBackend, cached_export
from tagger.inference.quantize import quantize_onnx
from tagger.train.checkpoint import read_checkpoint_meta, read_checkpoint_weights
from tagger.train.model import ModelConfig, create_model
from tagger.train.precision import cpu_support, manifest_pixels
from tagger.train.predictions import predict_manifest

SETTINGS = {  # name: (reduce_range, fp32_head)
    "full-range, head int8": (False, False),
    "7-bit, head int8": (True, False),
    "full-range, head fp32": (False, True),
    "7-bit, head fp32 (shipped)": (True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--cache-dir", type=Path, help="default: <manifest folder>/cache")
    parser.add_argument("--calib-fold", type=int, default=8)
    parser.add_argument("--check-fold", type=int, default=9)
    parser.add_argument("--calibration-images", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = args.cache_dir or args.manifest.parent / "cache"
    print(f"CPU: {cpu_support().describe()}")

    meta = read_checkpoint_meta(args.checkpoint)
    model_config = ModelConfig.model_validate(meta["model_config"])
    model = create_model(model_config)
    model.load_state_dict(read_checkpoint_weights(args.checkpoint))
    model.eval()
    prep = meta["preprocessing"]
    taxonomy = load_default_taxonomy()
    table = read_manifest(args.manifest)
    calib = table[table["fold"] == args.calib_fold].reset_index(drop=True)
    held = table[table["fold"] == args.check_fold].reset_index(drop=True)
    others = table[~table["fold"].isin([args.calib_fold, args.check_fold])]
    calib_targets, calib_known = targets_from_manifest(calib, taxonomy)
    calibration = calibrate_thresholds(
        predict_manifest(model, calib, prep, cache_dir=cache),
        calib_targets, calib_known, taxonomy, CalibrationConfig(),
    )  # fmt: skip
    bundle = create_bundle(model, model_config, taxonomy, calibration, preprocessing=prep)
    prep_of = preprocessing_of(bundle)
    targets, known = targets_from_manifest(held, taxonomy)
    pixels = manifest_pixels(held, prep, cache_dir=cache)
    drawn = others.sample(n=min(args.calibration_images, len(others)), random_state=0)
    calibration_pixels = manifest_pixels(drawn, prep, cache_dir=cache)
    print(
        f"{args.checkpoint}: {model_config.backbone}@{model_config.image_size}; thresholds on "
        f"fold {args.calib_fold} ({len(calib)} images), check on fold {args.check_fold} "
        f"({len(held)} images x {len(bundle.tag_ids)} tags), {len(drawn)} calibration images"
    )

    def run(backend: TorchBackend | OnnxBackend) -> np.ndarray:
        return np.concatenate([backend(pixels[i : i + 16]) for i in range(0, len(pixels), 16)])

    reference = run(TorchBackend(bundle.create_model(), prep_of, "cpu"))
    rules = PrecisionRules()
    checks: dict[str, PrecisionCheck] = {}
    with tempfile.TemporaryDirectory(prefix="int8-quality-") as tmp:
        fp32_path = cached_export(bundle, tmp)
        for name, (reduce_range, fp32_head) in SETTINGS.items():
            path = Path(tmp) / f"{reduce_range}-{fp32_head}.int8.onnx"
            quantize_onnx(
                fp32_path, path, calibration_pixels, prep_of,
                reduce_range=reduce_range, fp32_head=fp32_head,
            )  # fmt: skip
            probs = run(OnnxBackend(path, prep_of, args.threads))
            check = compare_precision(
                "int8", reference, probs, bundle.thresholds, targets, known, bundle.tag_ids, rules
            )
            checks[name] = check
            worst = sorted(check.tag_ap_diff.items(), key=lambda kv: kv[1])[:2]
            print(
                f"  {name:28s} agreement {check.agreement:.4f} ({check.disagreements} changed, "
                f"{check.outside_margin} outside the margin), score diff mean "
                f"{check.mean_score_diff:.4f} max {check.max_score_diff:.3f}, mAP "
                f"{check.map_fp32:.4f} -> {check.map:.4f} ({check.map_diff:+.4f}), "
                f"{'passed' if check.passed else 'failed: ' + '; '.join(check.reasons)}; "
                f"worst tags {', '.join(f'{t} {d:+.3f}' for t, d in worst)}",
                flush=True,
            )
    shipped, default = checks["7-bit, head fp32 (shipped)"], checks["full-range, head int8"]
    print(
        f"RESULT int8_quality agreement={shipped.agreement:.4f} map_diff={shipped.map_diff:+.4f} "
        f"max_score_diff={shipped.max_score_diff:.4f} passed={int(shipped.passed)} "
        f"agreement_default={default.agreement:.4f} map_diff_default={default.map_diff:+.4f}"
    )


if __name__ == "__main__":
    main()
