"""The clean stage's tasks (through `.fn`) and the review-retrain flow end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.clean import clean_labels, cross_fit_for_cleaning, log_cleaning
from flows.config import CleaningStage
from flows.retrain import assemble_data, read_assembly_config, source_files
from flows.stages import Assembled
from flows.tracking import TrackingConfig, resolve_tracking
from tagger.data.demo import DemoConfig, write_demo_data
from tagger.data.manifest import read_manifest
from tagger.train.predictions import check_out_of_fold, read_predictions
from tagger.train.training import TrainConfig
from tests.flows.test_retrain import TINY_DEMO, TINY_TRAIN, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLEANING = {
    "enabled": True,
    "crossfit": {"k": 2, "epochs": 1, "image_size": 32},
    "queue": {"max_per_tag": 5, "max_items": 40},
    "export": {"thumb_size": 48},
}


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Assembled, Path]:
    sources = write_demo_data(tmp_path_factory.mktemp("data"), DemoConfig(**TINY_DEMO)).config
    work = tmp_path_factory.mktemp("work")
    assembly = read_assembly_config.fn(sources)
    return assemble_data.fn(assembly, source_files(assembly), work), work


def test_clean_stage_tasks(assembled: tuple[Assembled, Path]) -> None:
    data, work = assembled
    config = CleaningStage.model_validate(CLEANING)
    train = TrainConfig.model_validate(TINY_TRAIN)
    oof = cross_fit_for_cleaning.fn(config, train, data, work)
    pred = read_predictions(oof)
    check_out_of_fold(pred)
    assert pred.scored_by is not None and len(pred.models) == 2
    assert set(pred.image_ids) == set(read_manifest(data.manifest)["image_id"])

    cleaned = clean_labels.fn(config, data, oof, work)
    assert cleaned.predictions == oof and cleaned.base_manifest == data.manifest
    assert cleaned.assembled.cache_dir == data.cache_dir
    queue = pd.read_csv(cleaned.queue)
    assert len(queue) <= 40 and queue.groupby("tag").size().max() <= 5
    assert cleaned.contact_sheet.is_file() and cleaned.label_studio_config.is_file()

    tracking = resolve_tracking(TrackingConfig(), work)
    run_id = log_cleaning.fn(cleaned, tracking)
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.tags["stage"] == "clean" and "clean_issues" in run.data.metrics
    assert run.data.params["label_context"].startswith("on, out of")
    assert float(run.data.params["noise_prior_missing_rate"]) == 0.1
    assert float(run.data.params["noise_prior_false_positive_spread"]) == 0.0
    assert (
        run.data.params["min_flip_prob"] == "0.5"
        and "clean_issues_posterior_only" in run.data.metrics
    )
    names = {a.path for a in client.list_artifacts(run_id, "clean")}
    assert {"clean/queue.csv", "clean/contact_sheet.html", "clean/issues_per_tag.csv"} <= names


def test_clean_for_training_reuses_the_retrains_crossfit(
    assembled: tuple[Assembled, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.clean as clean_flow

    data, work = assembled
    config = CleaningStage.model_validate(CLEANING)
    train = TrainConfig.model_validate(TINY_TRAIN)
    oof = next(work.glob("crossfit-oof/*/oof_predictions.parquet"))  # from the test above
    tracking = resolve_tracking(TrackingConfig(), work)

    def refuse(*_: object) -> None:
        raise AssertionError("cross-fitted again although the retrain gave its predictions")

    monkeypatch.setattr(clean_flow.cross_fit_for_cleaning, "fn", refuse)
    out = clean_flow.clean_for_training(config, train, data, tracking, work, lambda t: t.fn, oof)
    assert out.cache_dir == data.cache_dir and out.manifest.is_file()


def test_cleaning_manifest_must_exist(assembled: tuple[Assembled, Path], tmp_path: Path) -> None:
    data, work = assembled
    config = CleaningStage.model_validate(CLEANING | {"manifest": str(tmp_path / "no.parquet")})
    with pytest.raises(FileNotFoundError, match=r"cleaning\.manifest"):
        clean_labels.fn(config, data, tmp_path / "oof.parquet", work)


@pytest.mark.slow
def test_review_retrain_flow_trains_on_the_reviewed_version(tmp_path: Path) -> None:
    from flows.retrain import retrain
    from flows.review import review_and_retrain

    demo = write_demo_data(tmp_path / "data", DemoConfig(**TINY_DEMO)).config
    cfg = tiny_config(tmp_path / "work", assemble=str(demo), cleaning=CLEANING)
    first = retrain(cfg)
    queue_csv = next((tmp_path / "work" / "clean").glob("*/queue.csv"))
    decisions = tmp_path / "decisions.csv"
    pd.read_csv(queue_csv).head(5).assign(decision="accept").to_csv(decisions, index=False)
    summary = review_and_retrain(str(decisions), str(first.manifest), cfg)
    assert summary.run_id != first.run_id  # trained again, on other labels
    reviewed = next((tmp_path / "work" / "review").glob("*/manifest/manifest.parquet"))
    kinds = {p["kind"] for prov in read_manifest(reviewed)["provenance"] for p in prov}
    assert "reviewed" in kinds
    client = MlflowClient(summary.tracking_uri)
    names = {
        r.data.tags.get("mlflow.runName")
        for r in client.search_runs(
            [client.get_experiment_by_name(summary.experiment).experiment_id]
        )
    }
    assert {"clean", "review"} <= names
