"""The precision check: each reduced precision (bf16, int8) against fp32 on held-out images,
through the same backends a job uses; the report goes into the bundle (`precision.json`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tagger.bundle.model_bundle import Bundle, preprocessing_of
from tagger.calibrate.precision_check import (
    PrecisionCheck,
    PrecisionReport,
    PrecisionRules,
    compare_precision,
)
from tagger.inference.engine import TorchBackend
from tagger.inference.onnx_export import OnnxBackend
from tagger.inference.quantize import cached_int8_export, calibration_digest
from tagger.train.precision import Precision, cpu_support


def verify_precisions(
    bundle: Bundle,
    pixels: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    *,
    precisions: tuple[Precision, ...] = ("bf16", "int8"),
    rules: PrecisionRules | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    threads: int | None = None,
    cache_dir: str | None = None,
) -> PrecisionReport:
    """Check each reduced precision against fp32 on held-out images.

    pixels: the held-out images as the jobs see them, uint8 `[N, S, S, 3]` (eval view);
    targets/known `[N, T]` their labels. int8 is calibrated on `bundle.calibration_images`
    (training images); without them it is skipped. Returns the report to store in the bundle.
    """
    rules = rules or PrecisionRules()
    prep = preprocessing_of(bundle)

    def run(backend: Any) -> np.ndarray:
        return np.concatenate(
            [backend(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        )

    reference = run(TorchBackend(bundle.create_model(), prep, device))
    checks: dict[str, PrecisionCheck] = {}
    skipped: dict[str, str] = {}
    details: dict[str, Any] = {}
    details["cpu"] = cpu_support().describe()
    for precision in precisions:
        if precision == "bf16":
            probs = run(TorchBackend(bundle.create_model(), prep, device, precision="bf16"))
        elif precision == "int8":
            if bundle.calibration_images is None:
                skipped["int8"] = "no calibration images in the bundle"
                continue
            path = cached_int8_export(bundle, cache_dir=cache_dir)
            probs = run(OnnxBackend(path, prep, threads))
            details["int8_calibration"] = {
                "images": len(bundle.calibration_images),
                "digest": calibration_digest(bundle.calibration_images),
            }
        else:
            raise ValueError(f"verify_precisions: unknown precision {precision!r}")
        checks[precision] = compare_precision(
            precision, reference, probs, bundle.thresholds, targets, known, bundle.tag_ids, rules
        )
    return PrecisionReport(
        images=len(pixels), rules=rules, checks=checks, skipped=skipped, details=details
    )
