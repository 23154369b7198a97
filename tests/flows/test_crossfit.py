"""The cross-fit stage: one out-of-fold file through `task.fn`, and content caching in a flow
(reruns only when the manifest or a config changes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect import flow

import tagger.train.crossfit as crossfit_module
from flows.caching import persisted
from flows.config import parse_retrain_config
from flows.crossfit import CrossFitStage, CrossFitted, crossfit_predictions
from flows.stages import Assembled
from tagger.data.manifest import write_manifest
from tagger.train.crossfit import CrossFitConfig
from tagger.train.predictions import read_predictions
from tagger.train.training import TrainConfig
from tests.tagger.synthetic_training import SyntheticData, make_synthetic_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = TrainConfig.model_validate(
    {
        "model": {"backbone": "resnet18", "image_size": 32},
        "schedule": {"epochs": 1, "warmup_epochs": 0.0},
        "data": {"val_fold": 0, "batch_size": 4, "num_workers": 0},
        "device": "cpu",
        "progress": False,
    }
)


@pytest.fixture()
def data(tmp_path: Path) -> tuple[SyntheticData, Assembled]:
    synth = make_synthetic_data(tmp_path / "data", n_images=12, n_folds=3)
    taxonomy = tmp_path / "data" / "taxonomy.yaml"
    taxonomy.write_text(yaml.safe_dump(synth.taxonomy.to_dict(), sort_keys=False))
    assembled = Assembled(
        manifest=synth.manifest_path,
        cache_dir=synth.cache_dir,
        cache_size=synth.cache_size,
        taxonomy=taxonomy,
        report=synth.manifest_path,
        problems=synth.manifest_path,
        images=len(synth.manifest),
        problem_count=0,
    )
    return synth, assembled


@pytest.fixture()
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the models cross-fitting trains."""
    calls: list[int] = []
    real = crossfit_module.train

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(crossfit_module, "train", counting)
    return calls


def test_crossfit_task_writes_one_out_of_fold_file(
    data: tuple[SyntheticData, Assembled], tmp_path: Path, trainings: list[int]
) -> None:
    synth, assembled = data
    out = crossfit_predictions.fn(CrossFitConfig(), TRAIN, assembled, tmp_path / "work")
    assert isinstance(out, CrossFitted) and len(trainings) == 3
    assert out.folds == [0, 1, 2] and out.images == len(synth.manifest)
    assert out.models == [[1, 2], [0, 2], [0, 1]]
    assert out.predictions.parent.parent == tmp_path / "work" / "crossfit"
    pred = read_predictions(out.predictions)
    assert list(pred.image_ids) == synth.manifest["image_id"].tolist()
    for fold, m in zip(pred.folds, pred.scored_by, strict=True):
        assert fold not in pred.models[m]


@flow
def _crossfit_flow(config: CrossFitConfig, train: TrainConfig, data: Assembled, work: Path) -> Any:
    return persisted(crossfit_predictions, work)(config, train, data, work)


def test_crossfit_stage_reruns_only_when_its_inputs_change(
    data: tuple[SyntheticData, Assembled], tmp_path: Path, trainings: list[int]
) -> None:
    synth, assembled = data
    work = tmp_path / "work"
    config = CrossFitConfig(k=2)
    first = _crossfit_flow(config, TRAIN, assembled, work)
    assert len(trainings) == 2
    assert _crossfit_flow(config, TRAIN, assembled, work) == first
    assert len(trainings) == 2, "same manifest and configs: the cached result"
    cheaper = config.model_copy(update={"epochs": 2})
    assert _crossfit_flow(cheaper, TRAIN, assembled, work) != first
    assert len(trainings) == 4, "a changed cross-fit config trains again"
    relabelled = synth.manifest.copy()
    relabelled.at[0, "tags"] = [] if len(relabelled.at[0, "tags"]) else ["t0"]
    write_manifest(pd.DataFrame(relabelled), synth.manifest_path)
    moved = _crossfit_flow(config, TRAIN, assembled, work)
    assert len(trainings) == 6 and moved.predictions != first.predictions
    np.testing.assert_array_equal(
        read_predictions(moved.predictions).image_ids, read_predictions(first.predictions).image_ids
    )


def test_retrain_config_has_a_crossfit_section(tmp_path: Path) -> None:
    cfg = parse_retrain_config(
        {"work_dir": str(tmp_path), "demo": {}, "crossfit": {"enabled": True, "k": 3, "epochs": 2}}
    )
    assert isinstance(cfg.crossfit, CrossFitStage) and cfg.crossfit.enabled
    assert cfg.crossfit.library_config() == CrossFitConfig(k=3, epochs=2)
    assert not parse_retrain_config({"work_dir": str(tmp_path), "demo": {}}).crossfit.enabled


def test_calibrate_stage_reads_the_oof_file_and_checks_on_the_final_model(
    data: tuple[SyntheticData, Assembled], tmp_path: Path
) -> None:
    from flows.retrain import calibrate_thresholds
    from flows.stages import training_config
    from tagger.calibrate.thresholds import CalibrationConfig, read_thresholds
    from tagger.train.training import load_training_inputs, train

    _, assembled = data
    work = tmp_path / "work"
    oof = crossfit_predictions.fn(CrossFitConfig(), TRAIN, assembled, work)
    cfg = training_config(TRAIN, assembled, tmp_path / "final")
    manifest, taxonomy = load_training_inputs(cfg)
    final = train(cfg, manifest, taxonomy)  # validation fold 0: the held-out fold
    config = CalibrationConfig(min_positives=1, min_negatives=1, target_precision=0.5)
    calibrated = calibrate_thresholds.fn(
        config, final.best_checkpoint, assembled, 0, work, oof.predictions
    )
    method = read_thresholds(calibrated.thresholds, taxonomy).method
    assert method["scores"] == "crossfit" and method["k"] == 3
    assert method["calib_folds"] == [1, 2]  # every fold but the held-out one
    assert calibrated.summary["check"]["tags_meeting_target"] >= 0  # checked on fold 0
    check = pd.read_csv(calibrated.report.parent / "check_report.csv")
    assert (check["support_pos"] + check["support_neg"]).max() <= 4  # fold 0: 4 images
