"""Per-tag thresholds: equality with the scikit-learn reference, properties, every fallback."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from label_system.taxonomy import Taxonomy
from tagger.calibrate.thresholds import (
    CalibrationConfig,
    PolicyOverride,
    calibrate_from_folds,
    calibrate_tag_reference,
    calibrate_thresholds,
    check_thresholds,
    load_calibration_config,
    read_thresholds,
    resolve_policies,
    summarize_check,
    write_report,
    write_thresholds,
)
from tagger.metrics import scores_at_thresholds

# the point-estimate path (bound "none"); the bounded path has its own tests below
LOOSE = {"min_positives": 1, "min_negatives": 0, "fallback": ("disabled",), "bound": "none"}


def flat_taxonomy(t: int) -> Taxonomy:
    return Taxonomy.from_dict({
        "name": "flat", "version": "1",
        "categories": [{"id": "c0", "names": {"en": "C0"}}],
        "tags": [{"id": f"t{j}", "names": {"en": f"T{j}"}, "category": "c0"} for j in range(t)],
    })  # fmt: skip


def tree_taxonomy() -> Taxonomy:
    """animal <- dog <- puppy, animal <- cat; scene <- beach (another category)."""

    def tag(i: str, cat: str, parents: list[str] | None = None) -> dict[str, object]:
        return {"id": i, "names": {"en": i}, "category": cat, "parents": parents or []}

    return Taxonomy.from_dict({
        "name": "tree", "version": "1",
        "categories": [{"id": "animals", "names": {"en": "A"}},
                       {"id": "scenes", "names": {"en": "S"}}],
        "tags": [tag("animal", "animals"), tag("dog", "animals", ["animal"]),
                 tag("puppy", "animals", ["dog"]), tag("cat", "animals", ["animal"]),
                 tag("scene", "scenes"), tag("beach", "scenes", ["scene"])],
    })  # fmt: skip


def random_data(
    rng: np.random.Generator, n: int, t: int, dtype: type = np.float32, decimals: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tags of varied difficulty and prevalence; rounded scores give many ties."""
    prevalence = rng.uniform(0.05, 0.5, t)
    signal = rng.uniform(0.0, 0.8, t)
    targets = (rng.random((n, t)) < prevalence).astype(np.float32)
    raw = rng.random((n, t)) * (1 - signal) + signal * targets
    probs = np.round(raw, decimals).astype(dtype)
    known = rng.random((n, t)) < 0.8
    return probs, targets, known


# float16 with 20,000 rows takes the histogram path; the others sort
@pytest.mark.parametrize("policy", ["precision", "recall", "f1"])
@pytest.mark.parametrize(
    ("dtype", "n"), [(np.float32, 400), (np.float64, 300), (np.float16, 300), (np.float16, 20_000)]
)
def test_thresholds_equal_sklearn_reference(policy: str, dtype: type, n: int) -> None:
    rng = np.random.default_rng(1)
    t = 12
    probs, targets, known = random_data(rng, n, t, dtype)
    cfg = CalibrationConfig(policy=policy, target_precision=0.8, target_recall=0.7, **LOOSE)
    cal = calibrate_thresholds(probs, targets, known, flat_taxonomy(t), cfg, block_cells=3 * n)
    target = {"precision": 0.8, "recall": 0.7, "f1": math.nan}[policy]
    n_ok = 0
    for j in range(t):
        m = known[:, j]
        ref = calibrate_tag_reference(probs[m, j], targets[m, j], policy, target)
        if math.isnan(ref):
            assert cal.report.status[j] == "disabled"
            assert np.isnan(cal.thresholds[j])
        else:
            n_ok += 1
            assert cal.report.status[j] == "ok"
            expected = np.float32(ref)  # float64 scores: the float32 at or just below
            if float(expected) > ref:
                expected = np.nextafter(expected, np.float32(-1))
            assert cal.thresholds[j] == expected, (j, cal.thresholds[j], ref)
    assert n_ok >= 6  # the comparison covers reachable tags, not only fallbacks


def test_hand_worked_precision_target() -> None:
    # sorted scores .9+ .8+ .7- .6+ .5- .4+ : precision at each cut 1, 1, 2/3, 3/4, 3/5, 4/6
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=np.float32)[:, None]
    targets = np.array([1, 1, 0, 1, 0, 1], dtype=np.float32)[:, None]
    known = np.ones_like(probs, dtype=bool)
    tax = flat_taxonomy(1)
    for target, expected in ((0.75, 0.6), (0.7, 0.6), (0.8, 0.8), (0.6, 0.4)):
        cfg = CalibrationConfig(target_precision=target, **LOOSE)
        cal = calibrate_thresholds(probs, targets, known, tax, cfg)
        assert cal.thresholds[0] == np.float32(expected), target
    cal = calibrate_thresholds(
        probs, targets, known, tax, CalibrationConfig(policy="recall", target_recall=0.7, **LOOSE)
    )
    assert cal.thresholds[0] == np.float32(0.6)  # recall 3/4 at precision 3/4
    assert cal.report.recall[0] == pytest.approx(0.75)


@pytest.mark.parametrize("policy", ["precision", "recall"])
def test_target_holds_when_reachable(policy: str) -> None:
    rng = np.random.default_rng(2)
    t = 20
    probs, targets, known = random_data(rng, 500, t)
    cfg = CalibrationConfig(policy=policy, target_precision=0.85, target_recall=0.6, **LOOSE)
    cal = calibrate_thresholds(probs, targets, known, flat_taxonomy(t), cfg)
    s = scores_at_thresholds(probs, targets, known, cal.thresholds)
    ok = cal.report.status.to_numpy() == "ok"
    assert ok.sum() >= 5
    if policy == "precision":
        assert (s.precision[ok] >= 0.85).all()
    else:
        assert (s.recall[ok] >= 0.6).all()
    np.testing.assert_allclose(cal.report.precision[ok], s.precision[ok])
    np.testing.assert_allclose(cal.report.recall[ok], s.recall[ok])


def test_fallbacks_parent_ancestor_default_disabled() -> None:
    rng = np.random.default_rng(3)
    tax = tree_taxonomy()  # animal, dog, puppy, cat, scene, beach
    n = 400
    targets = np.zeros((n, 6), dtype=np.float32)
    targets[:200, 0] = 1  # animal: separable, calibrates
    targets[:, 1] = targets[:, 0] * (rng.random(n) < 0.5)
    targets[:3, 2] = 1  # puppy: 3 positives
    targets[:, 3] = rng.random(n) < 0.3  # cat: negatives outrank positives
    targets[:100, 5] = 1  # beach: fine, but scene is empty
    probs = rng.random((n, 6)).astype(np.float32) * 0.5 + 0.5 * targets
    probs[:, 3] = np.where(targets[:, 3] == 1, 0.2, 0.8)  # cat: precision never above 0.3
    known = np.ones((n, 6), dtype=bool)
    known[:, 1] = False  # dog: no known cells -> puppy must skip to animal
    known[:, 4] = False  # scene: no known cells, no ancestor -> default
    cfg = CalibrationConfig(
        min_positives=5,
        min_negatives=5,
        fallback=("parent", "default"),
        default_threshold=0.7,
        tags={"beach": PolicyOverride(min_negatives=1000, fallback=("disabled",))},
    )
    cal = calibrate_thresholds(probs, targets, known, tax, cfg)
    rep = cal.report.set_index("tag")
    assert rep.status["animal"] == "ok"
    animal = cal.thresholds[0]
    assert rep.status["dog"] == "fallback_parent" and cal.thresholds[1] == animal
    assert rep.status["puppy"] == "fallback_parent" and cal.thresholds[2] == animal
    assert "too few known positives (3 < min_positives 5)" in rep.reason["puppy"]
    assert "'animal'" in rep.reason["puppy"]
    assert rep.status["cat"] == "fallback_parent"
    assert "target precision 0.9 unreachable" in rep.reason["cat"]
    assert rep.status["scene"] == "fallback_default" and cal.thresholds[4] == np.float32(0.7)
    assert "no calibrated ancestor" in rep.reason["scene"]
    assert rep.status["beach"] == "disabled" and np.isnan(cal.thresholds[5])
    assert "too few known negatives" in rep.reason["beach"]
    assert not rep.meets_target[["dog", "puppy", "cat", "scene", "beach"]].any()
    # fallback rows report what their threshold does on the calibration data
    s = scores_at_thresholds(probs, targets, known, cal.thresholds)
    np.testing.assert_allclose(rep.precision.to_numpy()[:4], s.precision[:4])
    assert (rep.reason[rep.status != "ok"] != "").all()


def test_overrides_tag_beats_category_beats_default() -> None:
    tax = tree_taxonomy()
    cfg = CalibrationConfig(
        target_precision=0.9,
        categories={"animals": PolicyOverride(policy="recall", target_recall=0.8)},
        tags={
            "dog": PolicyOverride(policy="precision", target_precision=0.95),
            "cat": PolicyOverride(target_recall=0.5),
        },
    )
    pol = resolve_policies(cfg, tax)
    assert pol.policy == ["recall", "precision", "recall", "recall", "precision", "precision"]
    np.testing.assert_allclose(pol.target, [0.8, 0.95, 0.8, 0.5, 0.9, 0.9])
    with pytest.raises(ValueError, match=r"unknown tag ids \['doge'\]"):
        resolve_policies(CalibrationConfig(tags={"doge": PolicyOverride()}), tax)
    with pytest.raises(ValueError, match="allowed: \\['animals', 'scenes'\\]"):
        resolve_policies(CalibrationConfig(categories={"food": PolicyOverride()}), tax)


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must end with 'default' or 'disabled'"):
        CalibrationConfig(fallback=("parent",))
    with pytest.raises(ValueError, match="policy"):
        CalibrationConfig(policy="accuracy")  # type: ignore[arg-type]
    path = tmp_path / "cal.yaml"
    path.write_text("target_precision: 1.5\n")
    with pytest.raises(ValueError, match=r"(?s)cal.yaml.*target_precision"):
        load_calibration_config(path)
    path.write_text("policy: f1\ncategories:\n  animals: {policy: recall}\n")
    assert load_calibration_config(path).categories["animals"].policy == "recall"


def test_calibrate_from_folds_refuses_training_folds() -> None:
    rng = np.random.default_rng(4)
    probs, targets, known = random_data(rng, 300, 4)
    folds = np.arange(300) % 5
    tax = flat_taxonomy(4)
    with pytest.raises(ValueError, match=r"trained on \[3\]"):
        calibrate_from_folds(
            probs, targets, known, folds, [3, 4], train_folds=[0, 1, 2, 3], taxonomy=tax
        )
    with pytest.raises(ValueError, match=r"folds \[7\] have no rows"):
        calibrate_from_folds(probs, targets, known, folds, [7], train_folds=[], taxonomy=tax)
    cal = calibrate_from_folds(
        probs, targets, known, folds, [3, 4], train_folds=[0, 1, 2], taxonomy=tax
    )
    rows = folds >= 3
    direct = calibrate_thresholds(probs[rows], targets[rows], known[rows], tax)
    np.testing.assert_array_equal(cal.thresholds, direct.thresholds)
    np.testing.assert_array_equal(
        cal.report.support_pos, known[rows].sum(0) - (known[rows] & (targets[rows] == 0)).sum(0)
    )


def test_bootstrap_interval_seeded_and_brackets_the_point() -> None:
    rng = np.random.default_rng(5)
    probs, targets, known = random_data(rng, 600, 6)
    cfg = CalibrationConfig(target_precision=0.8, bootstrap_samples=300, **LOOSE)
    tax = flat_taxonomy(6)
    a = calibrate_thresholds(probs, targets, known, tax, cfg, rng=np.random.default_rng(7))
    b = calibrate_thresholds(probs, targets, known, tax, cfg, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.report.precision_low, b.report.precision_low)
    ok = a.report.status == "ok"
    assert ok.sum() >= 2
    rep = a.report[ok]
    assert (rep.precision_low <= rep.precision).all() and (
        rep.precision <= rep.precision_high
    ).all()
    imperfect = rep.precision < 1
    assert imperfect.sum() >= 2
    assert (rep.precision_high - rep.precision_low > 0)[imperfect].all()
    assert a.report.precision_low[~ok].isna().all()
    with pytest.raises(ValueError, match="seeded rng"):
        calibrate_thresholds(probs, targets, known, tax, cfg)


def test_thresholds_file_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    tax = tree_taxonomy()
    probs, targets, known = random_data(rng, 200, 6)
    cal = calibrate_thresholds(probs, targets, known, tax, CalibrationConfig(min_positives=40))
    assert (cal.report.status != "ok").any()  # NaN and fallbacks survive the file
    path = write_thresholds(cal, tmp_path / "thresholds.json", tax)
    back = read_thresholds(path, tax)
    np.testing.assert_array_equal(back.thresholds, cal.thresholds)
    assert back.config == cal.config
    assert back.report.equals(cal.report)
    with pytest.raises(ValueError, match="tags differ from taxonomy"):
        read_thresholds(path, flat_taxonomy(6))
    write_report(cal.report, tmp_path / "report.csv")
    write_report(cal.report, tmp_path / "report.parquet")
    with pytest.raises(ValueError, match=r"allowed: \.csv, \.parquet"):
        write_report(cal.report, tmp_path / "report.xlsx")


def test_heldout_precision_lands_near_target() -> None:
    """Calibrate on one half, check on the other: tags meeting 0.9 stay near 0.9."""
    rng = np.random.default_rng(8)
    t, n = 30, 8000
    probs, targets, known = random_data(rng, n, t, decimals=3)
    folds = np.arange(n) % 2
    tax = flat_taxonomy(t)
    cal = calibrate_from_folds(
        probs,
        targets,
        known,
        folds,
        [0],
        train_folds=[],
        taxonomy=tax,
        config=CalibrationConfig(min_positives=50),
    )
    rows = folds == 1
    check = check_thresholds(probs[rows], targets[rows], known[rows], cal)
    summary = summarize_check(check)
    assert summary["tags_meeting_target"] >= 10
    assert summary["share_within_tolerance"] >= 0.9
    assert 0.85 <= summary["median_precision"] <= 0.95


def test_no_known_cells_at_all() -> None:
    probs = np.zeros((5, 2), dtype=np.float32)
    cal = calibrate_thresholds(
        probs,
        probs,
        np.zeros((5, 2), dtype=bool),
        flat_taxonomy(2),
        CalibrationConfig(fallback=("disabled",)),
    )
    assert (cal.report.status == "disabled").all() and np.isnan(cal.thresholds).all()
    assert cal.report.reason[0].startswith("too few known positives (0")


# ---- decisions with a confidence bound -------------------------------------------------------


@pytest.mark.parametrize("bound", ["clopper_pearson", "wilson"])
@pytest.mark.parametrize(("dtype", "n"), [(np.float32, 2000), (np.float16, 20_000)])
def test_bounded_thresholds_equal_the_reference(bound: str, dtype: type, n: int) -> None:
    rng = np.random.default_rng(3)
    t = 10
    probs, targets, known = random_data(rng, n, t, dtype, decimals=3)
    cfg = CalibrationConfig(target_precision=0.8, level=0.95, **(LOOSE | {"bound": bound}))
    cal = calibrate_thresholds(probs, targets, known, flat_taxonomy(t), cfg, block_cells=3 * n)
    n_ok = 0
    for j in range(t):
        m = known[:, j]
        ref = calibrate_tag_reference(probs[m, j], targets[m, j], "precision", 0.8, bound=bound)
        if math.isnan(ref):
            assert cal.report.status[j] == "disabled", j
            continue
        n_ok += 1
        expected = np.float32(ref)
        if float(expected) > ref:
            expected = np.nextafter(expected, np.float32(-1))
        assert cal.thresholds[j] == expected, (j, cal.thresholds[j], ref)
        assert cal.report.precision_bound[j] >= 0.8
    assert n_ok > 0
    point = calibrate_thresholds(probs, targets, known, flat_taxonomy(t), CalibrationConfig(
        target_precision=0.8, **LOOSE))  # fmt: skip
    differ = ~np.isclose(cal.thresholds, point.thresholds, equal_nan=True)
    assert differ.any()  # the bound moved some thresholds (up: never below the point's)
    assert (np.nan_to_num(cal.thresholds, nan=2.0) >= point.thresholds).all()


def test_few_positives_never_meet_a_high_target() -> None:
    # perfectly separated tags with 1..40 positives; min_positives out of the way
    sizes = np.arange(1, 41)
    n = 200
    probs = np.zeros((n, sizes.size), dtype=np.float32)
    targets = np.zeros((n, sizes.size), dtype=np.float32)
    for j, k in enumerate(sizes):
        targets[:k, j] = 1
        probs[:, j] = np.where(targets[:, j] > 0, 0.9, 0.1)
    known = np.ones_like(targets, dtype=bool)
    tax = flat_taxonomy(sizes.size)
    cal = calibrate_thresholds(
        probs,
        targets,
        known,
        tax,
        CalibrationConfig(target_precision=0.9, **(LOOSE | {"bound": "clopper_pearson"})),
    )
    meets = cal.report.meets_target.to_numpy()
    np.testing.assert_array_equal(meets, sizes >= 29)  # 0.05 ** (1 / 29) = 0.902
    assert "lower bound" in cal.report.reason[0]
    assert not cal.report.target_reachable[27] and cal.report.target_reachable[28]
    # the point estimate (precision 1.0 on each) would have called every one of them good
    point = calibrate_thresholds(
        probs, targets, known, tax, CalibrationConfig(target_precision=0.9, **LOOSE)
    )
    assert point.report.meets_target.all()
    # the report still shows the bound beside the point estimate
    assert point.report.precision_bound[4] == pytest.approx(0.05**0.2)
    assert point.report.precision[4] == 1.0


def test_meets_standard_view_is_reported_per_tag() -> None:
    # tag 0: 40 positives, 30 ranked first without error, then 10 mixed with 40 negatives
    # tag 1: precision 1.0 only for 10 of 40 positives (recall 0.25 < 0.5)
    n = 200
    probs = np.zeros((n, 2), dtype=np.float32)
    targets = np.zeros((n, 2), dtype=np.float32)
    targets[:40, :] = 1
    probs[:30, 0], probs[30:40, 0], probs[40:80, 0], probs[80:, 0] = 0.9, 0.4, 0.4, 0.1
    probs[:10, 1], probs[10:40, 1], probs[40:, 1] = 0.9, 0.3, 0.3
    known = np.ones_like(targets, dtype=bool)
    cfg = CalibrationConfig(
        policy="f1", standard={"precision": 0.85, "recall": 0.5}, min_positives=10
    )
    rep = calibrate_thresholds(probs, targets, known, flat_taxonomy(2), cfg).report
    assert rep.standard_recall[0] == pytest.approx(0.75)  # 30 of 40 at bound(30/30) = 0.905
    assert rep.meets_standard[0]
    assert rep.standard_recall[1] == 0.0  # bound(10/10) = 0.74 < 0.85: no threshold qualifies
    assert not rep.meets_standard[1]
    assert not rep.target_reachable.any()  # f1 has no target


def test_old_thresholds_files_read_as_point_estimates(tmp_path: Path) -> None:
    import json

    rng = np.random.default_rng(0)
    probs, targets, known = random_data(rng, 300, 3)
    tax = flat_taxonomy(3)
    cal = calibrate_thresholds(probs, targets, known, tax, CalibrationConfig(**LOOSE))
    path = write_thresholds(cal, tmp_path / "thresholds.json", tax)
    doc = json.loads(path.read_text())
    del doc["config"]["bound"], doc["config"]["level"], doc["config"]["standard"]
    for row in doc["tags"]:
        for col in ("precision_bound", "target_reachable", "standard_recall", "meets_standard"):
            del row[col]
    path.write_text(json.dumps(doc))
    back = read_thresholds(path, tax)
    assert back.config.bound == "none"
    assert back.report.precision_bound.isna().all() and not back.report.meets_standard.any()
    np.testing.assert_array_equal(back.thresholds, cal.thresholds)
