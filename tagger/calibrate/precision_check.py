"""Is a reduced precision safe for this model? Its scores against fp32 on held-out images.

The check compares, on the same held-out images, the probabilities of a reduced-precision run
(bf16 autocast, int8 quantized) with those of the fp32 run:

- agreement: share of (image, tag) decisions `score >= threshold` (enabled tags) that are equal;
- margin: every decision that differs must have its fp32 score within `margin` of the tag's
  threshold (a near-tie that flipped, not a different model);
- AP: per-tag average precision on the known cells, and the difference of the mean;
- the largest absolute score difference (reported).

A precision passes when agreement >= `min_agreement`, no disagreement lies outside the margin,
and |mAP difference| <= `max_map_diff`. The record (`PrecisionReport`) is stored in the bundle
(`precision.json`) and logged to MLflow; `tagger predict --precision auto` only picks a
precision whose check passed.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tagger.metrics import average_precision, mean_average_precision

REPORT_VERSION = 1


class PrecisionRules(BaseModel):
    """When a reduced precision passes (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_agreement: float = Field(default=0.995, ge=0.0, le=1.0)
    margin: float = Field(default=0.02, ge=0.0, le=1.0)
    max_map_diff: float = Field(default=0.005, ge=0.0)


class PrecisionCheckConfig(BaseModel):
    """The retrain flow's precision stage: which precisions to check, on how many images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    precisions: tuple[Literal["bf16", "int8"], ...] = ("bf16", "int8")
    calibration_images: int = Field(
        default=48, ge=0, description="training images stored in the bundle to calibrate int8"
    )
    rules: PrecisionRules = PrecisionRules()
    seed: int = 0


class PrecisionCheck(BaseModel):
    """One precision against fp32 on the held-out images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: str
    passed: bool
    reasons: tuple[str, ...] = ()  # why it failed; empty when it passed
    images: int
    decisions: int  # images x enabled tags
    agreement: float
    disagreements: int
    outside_margin: int  # disagreements whose fp32 score is farther than `margin` from threshold
    max_score_diff: float
    mean_score_diff: float
    map_fp32: float | None
    map: float | None
    map_diff: float | None  # map - map_fp32
    max_tag_ap_diff: float | None
    tag_ap_diff: dict[str, float] = Field(default_factory=dict)  # tag id -> AP - AP_fp32


class PrecisionReport(BaseModel):
    """Every checked precision of a bundle (bundle file `precision.json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = REPORT_VERSION
    reference: str = "fp32"
    images: int
    rules: PrecisionRules = PrecisionRules()
    checks: dict[str, PrecisionCheck] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)  # precision -> why it was not checked
    details: dict[str, Any] = Field(default_factory=dict)  # e.g. the int8 calibration set

    @property
    def verified(self) -> tuple[str, ...]:
        """Precisions that passed (fp32, the reference, always counts as verified)."""
        return ("fp32", *(name for name, check in self.checks.items() if check.passed))

    def summary_metrics(self) -> dict[str, float]:
        """Flat figures for MLflow: `precision_<name>_<figure>`."""
        out: dict[str, float] = {}
        for name, check in self.checks.items():
            figures: dict[str, float | None] = {
                "passed": float(check.passed),
                "agreement": check.agreement,
                "outside_margin": float(check.outside_margin),
                "max_score_diff": check.max_score_diff,
                "map_diff": check.map_diff,
                "max_tag_ap_diff": check.max_tag_ap_diff,
            }
            out |= {
                f"precision_{name}_{key}": float(value)
                for key, value in figures.items()
                if value is not None and math.isfinite(value)
            }
        return out


def read_precision_report(data: dict[str, Any] | None) -> PrecisionReport | None:
    """The report from a bundle's `precision.json` content (None: the bundle has none)."""
    return None if data is None else PrecisionReport.model_validate(data)


def compare_precision(
    precision: str,
    reference: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    tag_ids: tuple[str, ...],
    rules: PrecisionRules | None = None,
) -> PrecisionCheck:
    """Check `probs` (a reduced precision) against `reference` (fp32) on the same images.

    reference, probs: `[N, T]` probabilities; thresholds `[T]` (NaN = disabled tag);
    targets/known `[N, T]` labels of the images (for AP).
    """
    rules = rules or PrecisionRules()
    n, t = reference.shape
    if probs.shape != reference.shape or thresholds.shape != (t,) or len(tag_ids) != t:
        raise ValueError(
            f"compare_precision({precision}): probs {probs.shape}, reference {reference.shape}, "
            f"thresholds {thresholds.shape}, {len(tag_ids)} tag ids"
        )
    if targets.shape != reference.shape or known.shape != reference.shape:
        raise ValueError(
            f"compare_precision({precision}): targets {targets.shape} / known {known.shape}, "
            f"expected {reference.shape}"
        )
    enabled = ~np.isnan(thresholds)
    ref = reference[:, enabled].astype(np.float64)
    test = probs[:, enabled].astype(np.float64)
    thr = thresholds[enabled].astype(np.float64)
    differ = (ref >= thr) != (test >= thr)
    decisions = int(differ.size)
    disagreements = int(differ.sum())
    outside = int((differ & (np.abs(ref - thr) > rules.margin)).sum())
    diff = np.abs(reference.astype(np.float64) - probs.astype(np.float64))
    ap_ref = average_precision(reference, targets, known)
    ap = average_precision(probs, targets, known)
    has_ap = ~np.isnan(ap_ref)
    map_ref = mean_average_precision(ap_ref) if has_ap.any() else None
    map_test = mean_average_precision(ap) if has_ap.any() else None
    map_diff = None if map_ref is None or map_test is None else map_test - map_ref
    tag_diff = {tag_ids[k]: float(ap[k] - ap_ref[k]) for k in np.flatnonzero(has_ap)}
    agreement = 1.0 - disagreements / decisions if decisions else 1.0
    reasons = []
    if agreement < rules.min_agreement:
        reasons.append(f"agreement {agreement:.5f} < {rules.min_agreement}")
    if outside:
        reasons.append(
            f"{outside} changed decisions with the fp32 score more than {rules.margin} "
            "from the threshold"
        )
    if map_diff is not None and abs(map_diff) > rules.max_map_diff:
        reasons.append(f"mAP differs by {map_diff:+.4f} (allowed {rules.max_map_diff})")
    if n == 0:
        reasons.append("no held-out images")
    return PrecisionCheck(
        precision=precision,
        passed=not reasons,
        reasons=tuple(reasons),
        images=n,
        decisions=decisions,
        agreement=agreement,
        disagreements=disagreements,
        outside_margin=outside,
        max_score_diff=float(diff.max()) if diff.size else 0.0,
        mean_score_diff=float(diff.mean()) if diff.size else 0.0,
        map_fp32=map_ref,
        map=map_test,
        map_diff=map_diff,
        max_tag_ap_diff=max((abs(v) for v in tag_diff.values()), default=None),
        tag_ap_diff=tag_diff,
    )
