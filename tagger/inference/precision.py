"""Which arithmetic a prediction job runs, and the check that makes a bundle eligible for it.

Precisions (`PredictOptions.precision`, `tagger predict --precision`):

- fp32: the reference;
- bf16: torch autocast (CPU with AVX-512 BF16 / AMX, or CUDA), torch backend;
- int8: the ONNX export statically quantized by ONNX Runtime (`tagger.inference.quantize`),
  CPU with int8 dot-product units (VNNI / AMX-INT8 / Arm dot product) or AVX2; it runs on ONNX
  Runtime whichever backend is named;
- auto: the fastest the machine supports among those the bundle's check passed
  (`precision.json`, written when the bundle is built): on a CPU int8, then bf16 (needs bf16
  units), then fp32; on CUDA bf16, then fp32.
  A bundle without a check gets fp32.

A precision asked for by name that the machine cannot run falls back to fp32 with a warning
that says why; one that the bundle's check did not pass runs, with a warning.

`verify_precisions` is the check: it runs the very backends a job uses (fp32, bf16, int8) on
the same held-out images and compares them with `tagger.calibrate.precision_check`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tagger.bundle.model_bundle import Bundle
from tagger.calibrate.precision_check import (
    read_precision_report,
)
from tagger.inference.options import PrecisionOption
from tagger.train.precision import Precision, bf16_supported, cpu_support

log = logging.getLogger(__name__)

# fastest first (bench/predict_throughput.py, resnet50@224 on 2 cores, AMX and AVX2-only CPUs)
CPU_ORDER: tuple[Precision, ...] = ("int8", "bf16", "fp32")
CUDA_ORDER: tuple[Precision, ...] = ("bf16", "fp32")


@dataclass(frozen=True)
class PrecisionChoice:
    """What a job runs: `precision`, and `note` (why, when it is not what was asked)."""

    requested: PrecisionOption
    precision: Precision
    note: str = ""


def unsupported_reason(precision: Precision, device: str, backend: str = "torch") -> str | None:
    """Why this machine cannot run `precision` fast on `device` with `backend` (None: it can)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        if backend == "onnx":
            return "the onnx backend runs fp32 or int8; bf16 runs on the torch backend"
        if bf16_supported(device):
            return None
        if device.startswith("cuda"):
            return f"{device} has no bf16 support (needs compute capability 8.0+)"
        return f"this CPU has no bf16 units (AVX-512 BF16 / AMX): {cpu_support().describe()}"
    if device.startswith("cuda"):
        return "int8 runs on ONNX Runtime's CPU kernels, not on CUDA"
    if not cpu_support().int8:
        return (
            "this CPU has neither int8 dot-product units (VNNI / AMX) nor AVX2: "
            f"{cpu_support().describe()}"
        )
    return None


def verified_precisions(bundle: Bundle) -> tuple[str, ...]:
    """Precisions the bundle's check passed (fp32 always)."""
    report = read_precision_report(bundle.precision)
    return ("fp32",) if report is None else report.verified


def choose_precision(
    bundle: Bundle, requested: PrecisionOption, device: str, backend: str = "torch"
) -> PrecisionChoice:
    """The precision a job on `device` ("cpu", "cuda", "cuda:1") with `backend` ("torch",
    "onnx") runs (see the module notes)."""
    verified = verified_precisions(bundle)
    if requested == "auto":
        skipped: list[str] = []
        for candidate in CUDA_ORDER if device.startswith("cuda") else CPU_ORDER:
            reason = unsupported_reason(candidate, device, backend)
            if candidate not in verified:
                reason = reason or "not verified for this bundle"
            elif candidate == "int8" and bundle.calibration_images is None:
                reason = reason or "the bundle has no int8 calibration images"
            if reason is None:
                note = f"auto: {candidate}" + (f"; {'; '.join(skipped)}" if skipped else "")
                log.info(note)
                return PrecisionChoice(requested, candidate, note)
            skipped.append(f"not {candidate} ({reason})")
        raise AssertionError("fp32 is always possible")  # pragma: no cover
    precision: Precision = requested
    reason = unsupported_reason(precision, device, backend)
    if reason is not None:
        note = f"precision {precision} unavailable: {reason}; running fp32"
        log.warning(note)
        return PrecisionChoice(requested, "fp32", note)
    if precision not in verified:
        note = (
            f"precision {precision} has not passed this bundle's check against fp32 "
            "(precision.json); tags may differ from fp32"
        )
        log.warning(note)
        return PrecisionChoice(requested, precision, note)
    return PrecisionChoice(requested, precision)
