"""Per-tag fusion of classifier probabilities with detector evidence, learned on held-out data.

For each detector tag, a logistic regression on a fixed feature set (`evidence.FEATURES`: the
classifier's logit, the highest box confidence, the box count, the largest box's area share)
and a second one on the classifier's logit alone (the score an image gets when the gated
cascade does not run the detector on it). Both are fitted on the held-out images that
calibration uses, known cells only, and checked *nested*: fitted on some folds, scored on the
one left out (the held-out predictions' own folds when there are at least three, else
stratified splits of the held-out images). A tag whose fused score does not beat the
classifier's AP on the left-out parts, or with fewer than `min_positives` known positives (or
negatives), falls back to the classifier score, and the report says why.

The gate: per fused tag, the band [lo, hi] of classifier probabilities where the detector must
run, the narrowest (fewest held-out images inside) that keeps `keep_gain` of the tag's AP gain,
on the held-out images as a whole *and on each left-out part*: a band that only the luck of a
small sample supports (a narrow band around a handful of positives) fails on some part, so with
few held-out positives the gate stays wide and the detector runs where it is needed on new
photos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold

from tagger.detect.evidence import FEATURES

GateMode = Literal["always", "gated", "never"]
BAND_QUANTILES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
SPLITS = 3
REGULARISATION = 1.0  # sklearn's C


@dataclass(frozen=True)
class LinearScore:
    """sigmoid(((x - mean) / scale) @ coef + intercept) over the leading features of x."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        k = len(self.coef)
        z = (x[..., :k] - np.asarray(self.mean)) / np.asarray(self.scale)
        return (1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))).astype(
            np.float32
        )


@dataclass(frozen=True)
class TagFusion:
    """How one detector tag is scored: mode "fused" (with `fused` and `base` scores) or
    "classifier" (the classifier's probability as is), why, and its held-out figures."""

    tag: str
    mode: Literal["fused", "classifier"]
    reason: str
    positives: int
    negatives: int
    ap_classifier: float = float("nan")
    ap_fused: float = float("nan")
    ap_gated: float = float("nan")
    gate_lo: float = 0.0
    gate_hi: float = 1.0
    gate_share: float = 1.0
    fused: LinearScore | None = None
    base: LinearScore | None = None


@dataclass(frozen=True)
class FusionModel:
    """Per-tag fusion for the detector's tags, in their order; `gate` is the cascade mode."""

    tags: tuple[TagFusion, ...]
    gate: GateMode = "gated"
    features: tuple[str, ...] = FEATURES
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tag_ids(self) -> tuple[str, ...]:
        return tuple(t.tag for t in self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "features": list(self.features),
            "tags": [_nan_to_none(asdict(t)) for t in self.tags],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionModel:
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(
                f"fusion features {data.get('features')} differ from this version's "
                f"{list(FEATURES)}"
            )
        tags = []
        for t in data["tags"]:
            t = {
                k: (float("nan") if v is None and k.startswith("ap_") else v) for k, v in t.items()
            }
            for key in ("fused", "base"):
                if t[key] is not None:
                    raw = t[key]
                    t[key] = LinearScore(
                        tuple(raw["mean"]), tuple(raw["scale"]), tuple(raw["coef"]),
                        float(raw["intercept"]),
                    )  # fmt: skip
            tags.append(TagFusion(**t))
        return cls(
            tuple(tags), data.get("gate", "gated"), tuple(data["features"]), data.get("extra", {})
        )

    def report(self) -> pd.DataFrame:
        """One row per tag: mode, reason, support, held-out AP (classifier / fused / gated),
        gate band and share, and the fused model's weights."""
        rows = []
        for t in self.tags:
            row = {k: v for k, v in asdict(t).items() if k not in ("fused", "base")}
            for name, w in zip(FEATURES, (t.fused.coef if t.fused else [np.nan] * 4), strict=True):
                row[f"weight_{name}"] = w
            rows.append(row)
        return pd.DataFrame(rows)


def _nan_to_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in d.items()}


def _fit_score(x: np.ndarray, y: np.ndarray) -> LinearScore:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    lr = LogisticRegression(C=REGULARISATION, max_iter=1000)
    lr.fit((x - mean) / scale, y)
    return LinearScore(
        tuple(map(float, mean)), tuple(map(float, scale)), tuple(map(float, lr.coef_[0])),
        float(lr.intercept_[0]),
    )  # fmt: skip


def _splits(y: np.ndarray, groups: np.ndarray | None, seed: int) -> list[np.ndarray]:
    """Left-out index sets: by group (fold) when >= 3 groups hold positives, else stratified."""
    if groups is not None:
        with_pos = np.unique(groups[y == 1])
        if len(with_pos) >= SPLITS:
            return [np.flatnonzero(groups == g) for g in np.unique(groups)]
    k = int(min(SPLITS, y.sum(), (1 - y).sum()))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in folds.split(np.zeros(len(y)), y)]


def _cross_scores(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Out-of-part fused and base scores (each part scored by models fitted on the others)."""
    fused, base = np.zeros(len(y), np.float32), np.zeros(len(y), np.float32)
    for test in parts:
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(np.unique(y[train])) < 2:
            fused[test], base[test] = x[test, 0], x[test, 0]  # logit: same order as the classifier
            continue
        fused[test] = _fit_score(x[train], y[train])(x[test])
        base[test] = _fit_score(x[train, :1], y[train])(x[test])
    return fused, base


def _choose_band(
    p: np.ndarray, y: np.ndarray, fused: np.ndarray, base: np.ndarray, ap_cls: float,
    ap_fused: float, keep_gain: float, parts: list[np.ndarray],
) -> tuple[float, float, float, float]:  # fmt: skip
    """(lo, hi, share inside, gated AP): the band with the fewest images keeping the gain, on
    all of `p` and on each left-out part that holds both classes."""
    best = (0.0, 1.0, 1.0, ap_fused)
    checks = [(np.arange(len(y)), ap_cls, ap_fused)] + [
        (part, float(average_precision_score(y[part], p[part])),
         float(average_precision_score(y[part], fused[part])))
        for part in parts if 0 < y[part].sum() < len(part)
    ]  # fmt: skip
    qs = np.quantile(p, BAND_QUANTILES)
    qs[0], qs[-1] = 0.0, 1.0
    for i, lo in enumerate(qs):
        for hi in qs[i + 1 :]:
            inside = (p >= lo) & (p <= hi)
            share = float(inside.mean())
            if share >= best[2]:
                continue
            gated = np.where(inside, fused, base)
            aps = [float(average_precision_score(y[r], gated[r])) for r, _, _ in checks]
            if all(_keeps(ap, c, f, keep_gain) for ap, (_, c, f) in zip(aps, checks, strict=True)):
                best = (float(lo), float(hi), share, aps[0])
    return best


def _keeps(gated: float, classifier: float, fused: float, keep_gain: float) -> bool:
    """The gated AP keeps `keep_gain` of fusion's gain, or (where fusion gains nothing) is no
    worse than running the detector always."""
    if fused > classifier:
        return gated - classifier >= keep_gain * (fused - classifier)
    return gated >= fused


def fit_fusion(
    features: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    tag_ids: tuple[str, ...],
    *,
    groups: np.ndarray | None = None,
    min_positives: int = 10,
    gate: GateMode = "gated",
    keep_gain: float = 0.95,
    seed: int = 0,
) -> FusionModel:
    """Fit per-tag fusion on held-out data.

    features: float32 `[N, C, 4]` (`evidence.evidence_features`, C detector tags); targets,
    known: `[N, C]` for the same tags; groups: `[N]` fold of each image (None: stratified
    splits). A fused tag's held-out AP (left-out parts) is higher than the classifier's, or
    the tag falls back.
    """
    n, c, _ = features.shape
    if targets.shape != (n, c) or known.shape != (n, c) or len(tag_ids) != c:
        raise ValueError(
            f"fit_fusion: features {features.shape}, targets {targets.shape}, known "
            f"{known.shape}, {len(tag_ids)} tag ids"
        )
    out = []
    for j, tag in enumerate(tag_ids):
        rows = known[:, j].astype(bool)
        y = (targets[rows, j] > 0).astype(np.int64)
        x = features[rows, j, :].astype(np.float64)
        pos, neg = int(y.sum()), int(len(y) - y.sum())
        if min(pos, neg) < min_positives:
            out.append(TagFusion(tag, "classifier", f"too few held-out positives or negatives "
                                 f"({pos} / {neg}, need {min_positives})", pos, neg))  # fmt: skip
            continue
        p = 1.0 / (1.0 + np.exp(-x[:, 0]))
        parts = _splits(y, None if groups is None else groups[rows], seed)
        fused_cv, base_cv = _cross_scores(x, y, parts)
        ap_cls = float(average_precision_score(y, p))
        ap_fused = float(average_precision_score(y, fused_cv))
        if not ap_fused > ap_cls:
            out.append(TagFusion(tag, "classifier", f"fusion not better on left-out held-out "
                                 f"data (AP {ap_fused:.4f} vs classifier {ap_cls:.4f})", pos, neg,
                                 ap_cls, ap_fused))  # fmt: skip
            continue
        lo, hi, share, ap_gated = (0.0, 1.0, 1.0, ap_fused)
        if gate == "gated":
            lo, hi, share, ap_gated = _choose_band(
                p, y, fused_cv, base_cv, ap_cls, ap_fused, keep_gain, parts
            )
        out.append(TagFusion(tag, "fused", "fusion beats the classifier on left-out held-out data",
                             pos, neg, ap_cls, ap_fused, ap_gated, lo, hi, share,
                             _fit_score(x, y), _fit_score(x[:, :1], y)))  # fmt: skip
    return FusionModel(tuple(out), gate)


def gate_mask(model: FusionModel, probs: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """bool `[N]`: images the detector must run on (any fused tag's classifier prob inside its
    band; all for "always", none for "never"). probs `[N, num_tags]`, columns: the fused
    model's tags as taxonomy columns."""
    n = len(probs)
    if model.gate != "gated":
        return np.full(n, model.gate == "always")
    run = np.zeros(n, dtype=bool)
    for t, col in zip(model.tags, columns, strict=True):
        if t.mode == "fused":
            p = probs[:, col]
            run |= (p >= t.gate_lo) & (p <= t.gate_hi)
    return run


def apply_fusion(
    model: FusionModel,
    probs: np.ndarray,
    features: np.ndarray,
    ran: np.ndarray,
    columns: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused probs `[N, num_tags]` and a bool `[N, num_tags]` mask of cells scored with
    detector evidence. features `[N, C, 4]` for the model's tags (`columns` in the taxonomy);
    ran `[N]`: whether the detector ran on the image (else the tag's base score applies)."""
    out = np.array(probs, dtype=np.float32, copy=True)
    used = np.zeros(probs.shape, dtype=bool)
    for j, (t, col) in enumerate(zip(model.tags, columns, strict=True)):
        if t.mode != "fused" or t.fused is None or t.base is None:
            continue
        x = features[:, j, :].astype(np.float64)
        out[:, col] = np.where(ran, t.fused(x), t.base(x))
        used[:, col] = ran
    return out, used
