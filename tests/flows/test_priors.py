"""The retrain flow's `priors` task through `task.fn`: post-prior predictions, the rules in force,
MLflow artifacts in the training run; and its config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from flows.config import RetrainConfigError, parse_retrain_config
from flows.priors import PriorsApplied, apply_prior_rules
from flows.stages import Assembled, Trained
from flows.tracking import (
    Tracking,
    TrackingConfig,
    ensure_experiment,
    mlflow_uris,
    resolve_tracking,
)
from label_system.priors import load_priors
from label_system.taxonomy import load_taxonomy
from tagger.priors.job import PriorsConfig
from tagger.train.predictions import read_predictions
from tests.tagger.bundle_fixtures import write_calibration_inputs

RULES = {"implies": [], "excludes": [{"tags": ["dog", "cat"]}, {"tags": ["cat", "beach"]}]}


class Setup:
    files: dict[str, Path]
    rules: Path
    data: Assembled
    trained: Trained
    tracking: Tracking
    work: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("priors_task")
    s = Setup()
    s.work = root / "work"
    s.files = write_calibration_inputs(root / "data", n=400)
    s.rules = root / "priors.yaml"
    s.rules.write_text(yaml.safe_dump(RULES))
    manifest = s.files["manifest"]
    s.data = Assembled(
        manifest=manifest, cache_dir=root / "cache", cache_size=64, taxonomy=s.files["taxonomy"],
        report=root / "report.md", problems=root / "problems.csv", images=400, problem_count=0,
    )  # fmt: skip
    s.tracking = resolve_tracking(TrackingConfig(), s.work)
    experiment = ensure_experiment(s.tracking)
    with mlflow_uris(s.tracking.tracking_uri):
        run = MlflowClient(s.tracking.tracking_uri).create_run(experiment)
    s.trained = Trained(
        run_id=run.info.run_id, experiment_id=experiment, checkpoint=root / "no-checkpoint",
        best_val_map=None, epochs=1,
    )  # fmt: skip
    return s


def config(setup: Setup, **extra: object) -> PriorsConfig:
    return PriorsConfig.model_validate(
        {"enabled": True, "rules": setup.rules, "reference_precision": 0.6, **extra}
    )


def run_task(setup: Setup, cfg: PriorsConfig) -> PriorsApplied:
    return apply_prior_rules.fn(
        cfg, setup.trained, setup.data, 0, setup.tracking, setup.work, setup.files["predictions"]
    )


def test_the_task_writes_consistent_post_prior_predictions(setup: Setup) -> None:
    result = run_task(setup, config(setup))
    assert result.predictions is not None and result.rules is not None
    before, after = (
        read_predictions(setup.files["predictions"]),
        read_predictions(result.predictions),
    )
    assert (after.image_ids == before.image_ids).all() and after.tag_ids == before.tag_ids
    assert (after.folds == before.folds).all() and after.train_folds == before.train_folds
    assert (after.probs != before.probs).any(), "the rules changed some scores"
    tax = load_taxonomy(setup.files["taxonomy"])
    rules = load_priors(result.rules, tax)
    assert set(rules.excludes) == {("dog", "cat"), ("cat", "beach")}
    assert result.summary["violations_after"] == {"implies": 0, "excludes": 0}
    assert result.summary["mined_implications"] >= 0 and result.effects is not None


def test_the_review_material_is_logged_in_the_training_run(setup: Setup) -> None:
    run_task(setup, config(setup))
    client = MlflowClient(setup.tracking.tracking_uri)
    names = {a.path for a in client.list_artifacts(setup.trained.run_id, "priors")}
    assert {"priors/rule_effects.csv", "priors/tags.csv", "priors/rules.yaml",
            "priors/mined_rules.yaml", "priors/rule_effects.png", "priors/parent_ap.png",
            "priors/rules.json"} <= names  # fmt: skip
    metrics = client.get_run(setup.trained.run_id).data.metrics
    assert "priors.parent_ap_after" in metrics and "priors.decisions_changed" in metrics


def test_drop_harmful_drops_only_rules_chosen_on_other_rows(setup: Setup) -> None:
    result = run_task(setup, config(setup, drop_harmful=True, harm_tolerance=0.0))
    summary = result.summary
    assert summary["choose_rows"] + summary["report_rows"] == 400 and summary["choose_rows"] > 100
    tax = load_taxonomy(setup.files["taxonomy"])
    kept = load_priors(result.rules, tax) if result.rules else None
    assert kept is not None
    dropped = set(result.summary["dropped"])
    assert all(f"excludes: {a} / {b}" not in dropped for a, b in kept.excludes)


def test_off_does_nothing_and_passes_the_scores_on(setup: Setup) -> None:
    off = run_task(setup, PriorsConfig())
    assert off == PriorsApplied(predictions=setup.files["predictions"])
    alone = apply_prior_rules.fn(
        PriorsConfig(), setup.trained, setup.data, 0, setup.tracking, setup.work
    )
    assert alone == PriorsApplied()


def test_unknown_rule_weights_are_named(setup: Setup) -> None:
    with pytest.raises(ValueError, match="unknown rules"):
        run_task(setup, config(setup, weights={"excludes: dog / cow": 0.5}))


def test_retrain_config_takes_the_priors_stage(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    cfg = parse_retrain_config({"demo": {}, "priors": {"enabled": True, "rules": str(rules)}})
    assert cfg.priors.enabled and cfg.priors.rules == rules
    with pytest.raises(RetrainConfigError, match=r"priors.rules: no priors file"):
        parse_retrain_config({"demo": {}, "priors": {"enabled": True, "rules": "nope.yaml"}})
    with pytest.raises(RetrainConfigError, match=r"priors.drop_harmfull"):
        parse_retrain_config({"demo": {}, "priors": {"drop_harmfull": True}})
    demo = Path(__file__).parents[2] / "flows" / "configs" / "retrain_demo.yaml"
    from flows.config import load_retrain_config

    assert load_retrain_config(demo).priors.enabled
