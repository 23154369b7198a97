"""The train flow: each task through `task.fn`, and the flow end to end with MLflow in tmp."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from flows.train import (
    MlflowMetrics,
    load_train_inputs,
    log_train_result,
    start_mlflow_run,
    train_flow,
    train_model,
)
from tests.tagger.synthetic_training import SyntheticData, make_synthetic_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    return make_synthetic_data(tmp_path_factory.mktemp("flow_data"), n_images=18)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts")


def _write_config(synth: SyntheticData, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    taxonomy = folder / "taxonomy.yaml"
    taxonomy.write_text(yaml.safe_dump(synth.taxonomy.to_dict()))
    path = folder / "train.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"backbone": "resnet18", "image_size": 32},
                "data": {
                    "manifest": str(synth.manifest_path),
                    "taxonomy": "taxonomy.yaml",
                    "cache_dir": str(synth.cache_dir),
                    "cache_size": synth.cache_size,
                    "batch_size": 4,
                    "num_workers": 0,
                },
                "schedule": {"epochs": 2, "warmup_epochs": 0.5},
                "output_dir": "out",
                "progress": False,
            }
        )
    )
    return path


def test_load_train_inputs_hashes_the_manifest(synth: SyntheticData, tmp_path: Path) -> None:
    config = _write_config(synth, tmp_path)
    inputs = load_train_inputs.fn(str(config), {"schedule": {"epochs": 1}})
    assert inputs.config.schedule.epochs == 1 and inputs.config.schedule.warmup_epochs == 0.5
    assert inputs.config.output_dir == tmp_path / "out"
    assert inputs.manifest_sha256 == hashlib.sha256(synth.manifest_path.read_bytes()).hexdigest()
    assert len(inputs.manifest) == 18 and inputs.taxonomy.tag_ids == synth.taxonomy.tag_ids


def test_start_run_logs_params_system_info_and_manifest_hash(
    synth: SyntheticData, tmp_path: Path, tracking: tuple[str, str]
) -> None:
    uri, artifacts = tracking
    inputs = load_train_inputs.fn(str(_write_config(synth, tmp_path)))
    run_id = start_mlflow_run.fn(inputs, uri, "unit", artifacts)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params["model.backbone"] == "resnet18"
    assert run.data.params["optimizer.lr"] == "0.001"
    assert run.data.params["system.torch"] == torch.__version__
    assert int(run.data.params["system.cpu_count"]) >= 1
    assert run.data.params["manifest_sha256"] == inputs.manifest_sha256
    assert run.data.tags["manifest_sha256"] == inputs.manifest_sha256


def test_metrics_callback_logs_per_epoch(tracking: tuple[str, str]) -> None:
    uri, artifacts = tracking
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cb") or client.get_experiment(
        client.create_experiment("cb", artifact_location=artifacts)
    )
    run_id = client.create_run(exp.experiment_id).info.run_id
    cb = MlflowMetrics(client, run_id)
    cb.on_epoch_end(1, {"val_map": 0.5})
    cb.on_epoch_end(2, {"val_map": 0.75})
    history = client.get_metric_history(run_id, "val_map")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]


def test_failed_training_marks_the_run_failed(
    synth: SyntheticData, tmp_path: Path, tracking: tuple[str, str]
) -> None:
    uri, artifacts = tracking
    inputs = load_train_inputs.fn(str(_write_config(synth, tmp_path)), {"data": {"val_fold": 9}})
    run_id = start_mlflow_run.fn(inputs, uri, "unit", artifacts)
    with pytest.raises(ValueError, match="val_fold=9"):
        train_model.fn(inputs, run_id, uri)
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"


def test_train_flow_end_to_end(
    synth: SyntheticData, tmp_path: Path, tracking: tuple[str, str]
) -> None:
    uri, artifacts = tracking
    config = _write_config(synth, tmp_path)
    out = train_flow(str(config), tracking_uri=uri, experiment="e2e", artifact_location=artifacts)
    assert out["epochs_completed"] == 2
    client = MlflowClient(uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(out["run_id"], "val_map")
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["best_val_map"] == pytest.approx(max(m.value for m in history))
    files = {f.path for f in client.list_artifacts(out["run_id"], "checkpoint_best")}
    assert "checkpoint_best/model.safetensors" in files and "checkpoint_best/meta.json" in files
    assert (tmp_path / "out" / "best" / "model.safetensors").exists()
    # a second call resumes from the last checkpoint: nothing left to train, same summary
    again = train_flow(
        str(config), tracking_uri=uri, experiment="e2e", artifact_location=artifacts, resume="last"
    )
    assert again["epochs_completed"] == 2 and again["run_id"] != out["run_id"]


def test_log_train_result_via_fn(
    synth: SyntheticData, tmp_path: Path, tracking: tuple[str, str]
) -> None:
    uri, artifacts = tracking
    inputs = load_train_inputs.fn(str(_write_config(synth, tmp_path)), {"schedule": {"epochs": 1}})
    run_id = start_mlflow_run.fn(inputs, uri, "unit", artifacts)
    result = train_model.fn(inputs, run_id, uri)
    summary = log_train_result.fn(result, run_id, uri)
    assert summary["epochs_completed"] == 1
    text = Path(MlflowClient(uri).download_artifacts(run_id, "best_val_ap.csv", str(tmp_path)))
    assert text.read_text().splitlines()[0] == "tag,val_ap"
