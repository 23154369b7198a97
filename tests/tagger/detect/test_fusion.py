"""Per-tag fusion: learned on held-out parts, never worse than the classifier, or it falls back."""

from __future__ import annotations

import json

import numpy as np
from sklearn.metrics import average_precision_score

from tagger.detect.fusion import FusionModel, apply_fusion, fit_fusion, gate_mask


def _data(n: int, informative: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Classifier weak (noisy), detector strong (when informative) on tag 0."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float32)
    p = 1 / (1 + np.exp(-(0.8 * y + rng.normal(0, 1.2, n))))
    conf = np.clip(0.7 * y + rng.normal(0.15, 0.15, n), 0, 1) if informative else rng.random(n)
    count = np.log1p((conf > 0.25).astype(float))
    area = np.where(conf > 0.25, rng.uniform(0.01, 0.05, n), 0)
    features = np.stack([np.log(p / (1 - p)), conf, count, area], axis=1)[:, None, :]
    return features.astype(np.float32), y[:, None]


def test_informative_detector_is_fused_and_wins_on_images_it_never_saw() -> None:
    x, y = _data(600, True, 0)
    known = np.ones_like(y, dtype=bool)
    model = fit_fusion(x, y, known, ("bottle",), gate="always")
    (t,) = model.tags
    assert t.mode == "fused" and t.ap_fused > t.ap_classifier + 0.1
    x2, y2 = _data(600, True, 1)  # fresh images
    fused, used = apply_fusion(model, 1 / (1 + np.exp(-x2[:, :, 0])), x2, np.ones(600, bool),
                               np.array([0]))  # fmt: skip
    assert used.all()
    ap_fused = average_precision_score(y2[:, 0], fused[:, 0])
    ap_cls = average_precision_score(y2[:, 0], x2[:, 0, 0])
    assert ap_fused > ap_cls + 0.1


def test_useless_detector_or_few_positives_fall_back_with_a_reason() -> None:
    x, y = _data(400, False, 2)
    known = np.ones_like(y, dtype=bool)
    model = fit_fusion(x, y, known, ("cup",))
    (t,) = model.tags
    if t.mode == "fused":  # noise may win on the left-out parts by a hair, never lose
        assert t.ap_fused > t.ap_classifier
    else:
        assert "not better" in t.reason
    few = fit_fusion(x[:30], y[:30], known[:30], ("cup",), min_positives=20)
    assert few.tags[0].mode == "classifier" and "too few" in few.tags[0].reason
    p = np.random.default_rng(0).random((30, 1)).astype(np.float32)
    out, used = apply_fusion(few, p, x[:30], np.ones(30, bool), np.array([0]))
    np.testing.assert_array_equal(out, p)
    assert not used.any()


def test_unknown_cells_are_left_out() -> None:
    x, y = _data(600, True, 3)
    known = np.ones_like(y, dtype=bool)
    known[::2] = False
    flipped = y.copy()
    flipped[::2] = 1 - flipped[::2]  # garbage where unknown: must not matter
    a = fit_fusion(x, y, known, ("bottle",)).tags[0]
    b = fit_fusion(x, flipped, known, ("bottle",)).tags[0]
    assert a.positives == b.positives and a.fused == b.fused


def test_folds_as_groups_and_gate_band() -> None:
    x, y = _data(900, True, 4)
    known = np.ones_like(y, dtype=bool)
    groups = np.arange(900) % 3
    model = fit_fusion(x, y, known, ("bottle",), groups=groups, gate="gated", keep_gain=0.9)
    t = model.tags[0]
    assert t.mode == "fused" and 0 < t.gate_share <= 1.0
    assert t.ap_gated - t.ap_classifier >= 0.9 * (t.ap_fused - t.ap_classifier) - 1e-9
    probs = 1 / (1 + np.exp(-x[:, :, 0]))
    run = gate_mask(model, probs, np.array([0]))
    assert abs(run.mean() - t.gate_share) < 1e-9
    never = FusionModel(model.tags, "never")
    always = FusionModel(model.tags, "always")
    assert not gate_mask(never, probs, np.array([0])).any()
    assert gate_mask(always, probs, np.array([0])).all()


def test_fusion_model_json_round_trip() -> None:
    x, y = _data(300, True, 5)
    model = fit_fusion(x, y, np.ones_like(y, dtype=bool), ("bottle",))
    again = FusionModel.from_dict(json.loads(json.dumps(model.to_dict(), allow_nan=False)))
    assert again == model or (again.tags[0].fused == model.tags[0].fused)
    report = model.report()
    assert {"tag", "mode", "reason", "ap_classifier", "ap_fused", "weight_max_score"} <= set(report)


def test_the_gate_band_keeps_the_gain_on_every_left_out_part() -> None:
    from sklearn.metrics import average_precision_score

    from tagger.detect.fusion import _choose_band

    rng = np.random.default_rng(0)
    narrower_on_the_union = 0
    for _ in range(8):
        n = int(rng.integers(40, 120))  # small held-out sets, where luck picks narrow bands
        y = (rng.random(n) < 0.2).astype(np.int64)
        y[:3] = 1
        p = np.clip(0.3 + 0.2 * y + rng.normal(0, 0.15, n), 0.01, 0.99)
        fused = np.clip(p + 0.4 * y * (rng.random(n) < 0.6) + rng.normal(0, 0.05, n), 0, 1)
        parts = [np.arange(n)[k::3] for k in range(3)]
        ap_c, ap_f = average_precision_score(y, p), average_precision_score(y, fused)
        if ap_f <= ap_c:
            continue
        lo, hi, share, _ = _choose_band(p, y, fused, p, ap_c, ap_f, 0.9, parts)
        gated = np.where((p >= lo) & (p <= hi), fused, p)
        for part in [np.arange(n), *parts]:
            if 0 < y[part].sum() < len(part):
                c, f = (
                    average_precision_score(y[part], p[part]),
                    average_precision_score(y[part], fused[part]),
                )
                got = average_precision_score(y[part], gated[part])
                assert got - c >= 0.9 * (f - c) - 1e-12 if f > c else got >= f - 1e-12
        union_only = _choose_band(p, y, fused, p, ap_c, ap_f, 0.9, [])
        narrower_on_the_union += union_only[2] < share
    assert narrower_on_the_union > 0  # the per-part check does widen some bands
