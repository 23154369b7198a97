"""The retrain flow: config validation, every task through `task.fn`, the flow end to end under
the Prefect test harness with MLflow in a temporary folder, caching on rerun, and a failing
stage that leaves `@champion` alone."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from flows.config import (
    RetrainConfig,
    RetrainConfigError,
    apply_overrides,
    load_retrain_config,
    parse_retrain_config,
)
from flows.priors import PriorsApplied, apply_prior_rules
from flows.retrain import (
    assemble_data,
    calibrate_thresholds,
    generate_demo_data,
    load_config,
    log_evaluation,
    package_bundle,
    promote_candidate,
    publish_summary,
    read_assembly_config,
    register_bundle,
    retrain,
    skip_promotion,
    source_files,
    train_tagger,
)
from flows.stages import Assembled, Calibrated, Registered, Trained
from flows.tracking import Tracking, TrackingConfig, mlflow_uris, resolve_tracking
from tagger.data.demo import DemoConfig, write_demo_data

TINY_DEMO = {"size": 64, "coco": 20, "voc": 10, "openimages": 10, "keywords": 10,
             "internal": 10, "duplicates": 1, "truncated": 1}  # fmt: skip
TINY_TRAIN = {
    "model": {"backbone": "resnet18", "image_size": 32},
    "schedule": {"epochs": 1, "warmup_epochs": 0.0},
    "data": {"val_fold": 0, "batch_size": 16, "num_workers": 0},
    "device": "cpu",
    "progress": False,
}
TINY_CALIBRATION = {"min_positives": 1, "min_negatives": 1, "target_precision": 0.5}
TINY_PRIORS = {"enabled": True, "reference_precision": 0.5}


def tiny_config(work_dir: Path, **data: Any) -> RetrainConfig:
    """A retrain config small enough for a test (seconds of training)."""
    return parse_retrain_config(
        {
            "work_dir": str(work_dir),
            "train": TINY_TRAIN,
            "calibrate": TINY_CALIBRATION,
            "priors": TINY_PRIORS,
            **data,
        }
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo data set, written once; returns its assembly config YAML."""
    return write_demo_data(tmp_path_factory.mktemp("data"), DemoConfig(**TINY_DEMO)).config


# ---- config ----------------------------------------------------------------------------------


def test_overrides_use_dotted_keys() -> None:
    data = {"train": {"schedule": {"epochs": 3, "warmup_epochs": 1}}}
    out = apply_overrides(data, {"train.schedule.epochs": 1, "mlflow.tracking_uri": "http://x"})
    assert out == {
        "train": {"schedule": {"epochs": 1, "warmup_epochs": 1}},
        "mlflow": {"tracking_uri": "http://x"},
    }
    assert data["train"]["schedule"]["epochs"] == 3, "the input must not change"


def test_yaml_paths_resolve_against_the_file_and_overrides_against_cwd(
    tmp_path: Path, demo_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copytree(demo_sources.parent, tmp_path / "data")
    path = folder / "retrain.yaml"
    path.write_text(yaml.safe_dump({"work_dir": "../work", "assemble": "../data/assemble.yaml"}))
    cfg = load_retrain_config(path)
    assert cfg.work_dir == tmp_path / "work"
    assert cfg.assemble is not None and not isinstance(cfg.assemble, Path)
    assert Path(cfg.assemble.base_dir) == tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    assert load_retrain_config(path, {"work_dir": "elsewhere"}).work_dir == tmp_path / "elsewhere"


def test_the_shipped_configs_load() -> None:
    configs = Path(__file__).parents[2] / "flows" / "configs"
    demo = load_retrain_config(configs / "retrain_demo.yaml")
    assert demo.demo is not None and demo.train.model.backbone == "resnet18"
    assert demo.mlflow.tracking_uri is None and demo.work_dir.name == "demo"
    shared = load_retrain_config(configs / "retrain_shared.yaml")
    assert shared.assemble is not None and not isinstance(shared.assemble, Path)
    assert {s.name for s in shared.assemble.sources} >= {"openimages", "voc2012"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"demo": {}, "cleaning": {"pseudo": {"top_k": 0}}}, r"cleaning.pseudo.top_k: .*given: 0"),
        ({"demo": {}, "cleaning": {"enabled": True, "queue": {"cap": 3}}}, "cleaning.queue.cap"),
        ({"demo": {}, "detector": {"architecture": "resnet50"}}, "resnet50' is not an SSD"),
        ({"demo": {}, "priors": {"enabled": "maybe"}}, r"priors.enabled: .*given: 'maybe'"),
        ({}, "exactly one of `demo`"),
        ({"demo": {}, "train": {"data": {"val_fold": None}}}, "val_fold: null is not allowed"),
        ({"demo": {}, "epochs": 3}, "epochs: Extra inputs are not permitted"),
        ({"demo": {}, "train": {"data": {"manifest": "m.parquet"}}}, "manifest: set by the"),
        ({"demo": {"size": 8}}, r"demo.size: .*given: 8"),
    ],
)
def test_bad_configs_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RetrainConfigError, match=message) as error:
        parse_retrain_config(data, "retrain.yaml")
    assert str(error.value).startswith("retrain.yaml: ")


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RetrainConfigError, match=r"nope.yaml: retrain config file not found"):
        load_retrain_config(tmp_path / "nope.yaml")


def test_local_tracking_lives_in_the_work_dir(tmp_path: Path) -> None:
    local = resolve_tracking(TrackingConfig(), tmp_path)
    assert local.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert local.artifact_location == (tmp_path / "mlartifacts").as_uri()
    server = resolve_tracking(TrackingConfig(tracking_uri="http://127.0.0.1:5000"), tmp_path)
    assert server.artifact_location is None


# ---- every task through task.fn --------------------------------------------------------------


class Stages:
    """Outputs of the stage tasks run one after another through `.fn` (no Prefect caching)."""

    tracking: Tracking
    config: RetrainConfig
    data: Assembled
    trained: Trained
    priors: PriorsApplied
    calibrated: Calibrated
    bundle: Path
    metrics: dict[str, float]
    registered: Registered


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory, demo_sources: Path) -> Stages:
    work = tmp_path_factory.mktemp("fn_work")
    s = Stages()
    s.config = load_config.fn(tiny_config(work, assemble=str(demo_sources)), None)
    s.tracking = resolve_tracking(s.config.mlflow, work)
    assembly = read_assembly_config.fn(demo_sources)
    s.data = assemble_data.fn(assembly, source_files(assembly), work)
    s.trained = train_tagger.fn(s.config.train, s.data, s.tracking, work)
    s.priors = apply_prior_rules.fn(s.config.priors, s.trained, s.data, 0, s.tracking, work)
    s.calibrated = calibrate_thresholds.fn(
        s.config.calibrate, s.trained.checkpoint, s.data, 0, work, scores=s.priors.predictions
    )
    s.bundle = package_bundle.fn(
        s.trained.checkpoint, s.calibrated, s.data, work, priors=s.priors.rules
    )
    s.metrics = log_evaluation.fn(s.calibrated, s.trained, s.data, s.tracking)
    s.registered = register_bundle.fn(s.bundle, s.trained, s.tracking)
    return s


def test_load_config_applies_overrides(tmp_path: Path, demo_sources: Path) -> None:
    cfg = load_config.fn(
        tiny_config(tmp_path, assemble=str(demo_sources)), {"train.schedule.epochs": 2}
    )
    assert cfg.train.schedule.epochs == 2 and cfg.work_dir == tmp_path


def test_generate_demo_data_writes_sources_and_an_assembly_config(tmp_path: Path) -> None:
    path = generate_demo_data.fn(DemoConfig(**TINY_DEMO), tmp_path)
    assembly = read_assembly_config.fn(path)
    assert path.parent.parent == tmp_path / "demo-data"
    assert {s.name for s in assembly.sources} >= {"demo_coco", "demo_voc", "demo_keywords"}
    assert all(p.exists() for p in source_files(assembly))


def test_assemble_stage_writes_the_manifest_and_reports_the_broken_image(stages: Stages) -> None:
    d = stages.data
    assert d.manifest.exists() and d.report.exists() and d.cache_dir.is_dir()
    assert d.manifest.parent.parent == stages.config.work_dir / "assemble"
    assert 50 < d.images < 62 and d.problem_count == 1, "the truncated JPEG is reported"


def test_train_stage_logs_an_mlflow_run_with_the_manifest_hash(stages: Stages) -> None:
    assert (stages.trained.checkpoint / "model.safetensors").exists()
    run = MlflowClient(stages.tracking.tracking_uri).get_run(stages.trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["manifest_sha256"] == run.data.params["manifest_sha256"]
    assert run.data.params["model.backbone"] == "resnet18" and run.data.metrics
    experiment = MlflowClient(stages.tracking.tracking_uri).get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith(
        (stages.config.work_dir / "mlartifacts").as_uri()
    )


def test_calibrate_stage_uses_the_heldout_fold(stages: Stages) -> None:
    import pyarrow.parquet as pq

    c = stages.calibrated
    assert c.thresholds.exists() and c.report.exists() and c.plots
    folds = set(pq.read_table(c.predictions).column("fold").to_pylist())
    assert folds == {0}


def test_priors_stage_feeds_calibration_and_the_bundle(stages: Stages) -> None:
    from tagger.bundle.resolve import load_bundle

    assert stages.priors.predictions is not None and stages.priors.rules is not None
    assert stages.calibrated.predictions == stages.priors.predictions, "post-prior scores"
    bundle = load_bundle(stages.bundle)
    assert bundle.priors is not None and ("forest", "tree") in bundle.priors.implies
    artifacts = MlflowClient(stages.tracking.tracking_uri).list_artifacts(
        stages.trained.run_id, "priors"
    )
    assert "priors/rule_effects.csv" in {a.path for a in artifacts}


def test_bundle_stage_and_evaluation(stages: Stages) -> None:
    from tagger.bundle.resolve import load_bundle

    bundle = load_bundle(stages.bundle)
    assert bundle.model_config.backbone == "resnet18" and bundle.dataset_hash
    assert "calibration_map" in stages.metrics
    run = MlflowClient(stages.tracking.tracking_uri).get_run(stages.trained.run_id)
    assert run.data.params["dataset_hash"] == bundle.dataset_hash
    assert "calibration_map" in run.data.metrics


@pytest.mark.filterwarnings("ignore:Artifact creation outside:FutureWarning")
def test_register_promote_and_keep_candidate(stages: Stages) -> None:
    client = MlflowClient(stages.tracking.tracking_uri)
    reg = stages.registered
    assert str(client.get_model_version_by_alias(reg.name, "candidate").version) == reg.version
    assert reg.run_id == stages.trained.run_id, "the model is logged into the training run"
    kept = skip_promotion.fn(reg, stages.tracking)
    assert not kept.promoted and kept.champion_version is None
    decision = promote_candidate.fn(reg, stages.data, 0, 0.0, stages.tracking)
    assert decision.promoted and decision.champion_version == reg.version
    assert str(client.get_model_version_by_alias(reg.name, "champion").version) == reg.version
    summary = publish_summary.fn(
        stages.config,
        stages.tracking,
        stages.data,
        stages.trained,
        stages.metrics,
        stages.bundle,
        reg,
        decision,
    )
    assert f"models:/{reg.name}/{reg.version}" in summary.markdown
    assert stages.trained.run_id in summary.markdown and "promoted" in summary.markdown


# ---- the flow end to end ---------------------------------------------------------------------


def _champion(tracking_uri: str) -> str:
    return str(MlflowClient(tracking_uri).get_model_version_by_alias("tagger", "champion").version)


def _versions(tracking_uri: str) -> int:
    return len(MlflowClient(tracking_uri).search_model_versions("name='tagger'"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, demo_sources: Path) -> Any:
    """One retrain run, from an empty working folder (checked afterwards: MLflow stays out)."""
    work, cwd = tmp_path_factory.mktemp("flow_work"), tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        summary = retrain(tiny_config(work, assemble=str(demo_sources)))
    assert not any(cwd.iterdir()), f"the run wrote into the working folder: {list(cwd.iterdir())}"
    return summary


def test_retrain_flow_registers_and_promotes(
    first_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tagger

    s = first_run
    assert s.version == "1" and s.promoted and s.champion_version == "1"
    assert _champion(s.tracking_uri) == "1"
    run = MlflowClient(s.tracking_uri).get_run(s.run_id)
    assert run.data.params["dataset_hash"] and "best_val_map" in run.data.metrics
    monkeypatch.setenv("TAGGER_MODEL_CACHE", str(tmp_path / "models"))
    album = s.manifest.parent / "cache"
    images = sorted(p for p in album.rglob("*.jpg"))[:3]
    with mlflow_uris(s.tracking_uri):
        records = list(tagger.predict(images, model="models:/tagger@champion", workers=0))
    assert len(records) == 3 and all(r.error is None for r in records)


def test_retrain_flow_checks_reduced_precisions(first_run: Any) -> None:
    """The bundle carries the bf16 / int8 check against fp32 on the held-out fold (issue 15),
    and the training run has its figures."""
    from tagger.bundle.model_bundle import read_bundle
    from tagger.calibrate.precision_check import PrecisionReport

    bundle = read_bundle(first_run.bundle)
    report = PrecisionReport.model_validate(bundle.precision)
    assert set(report.checks) == {"bf16", "int8"} and report.images > 0
    assert bundle.calibration_images is not None and len(bundle.calibration_images) > 0
    run = MlflowClient(first_run.tracking_uri).get_run(first_run.run_id)
    assert "precision_bf16_agreement" in run.data.metrics
    assert run.data.tags["precision_verified"] == ",".join(report.verified)


def test_retrain_flow_publishes_the_summary_artifact(first_run: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retrain-summary"]))
        )
    assert any(first_run.run_id in str(a.data) for a in artifacts)
    assert "## Promotion" in first_run.markdown and "## Data" in first_run.markdown


def test_rerun_resumes_from_cached_stages(first_run: Any, demo_sources: Path) -> None:
    s = first_run
    runs_before = len(MlflowClient(s.tracking_uri).search_runs([_experiment_id(s)]))
    again = retrain(tiny_config(s.work_dir, assemble=str(demo_sources)))
    assert again.run_id == s.run_id, "training came from the cache, not a new run"
    assert again.version == s.version and again.champion_version == s.version
    assert len(MlflowClient(s.tracking_uri).search_runs([_experiment_id(s)])) == runs_before


def test_a_changed_stage_config_reruns_only_what_follows(
    first_run: Any, demo_sources: Path
) -> None:
    s = first_run
    cfg = tiny_config(s.work_dir, assemble=str(demo_sources))
    changed = load_config.fn(cfg, {"calibrate.target_precision": 0.6})
    again = retrain(changed)
    assert again.run_id == s.run_id, "assembly and training came from the cache"
    assert again.bundle != s.bundle and again.version == "2"
    assert again.reason != "already champion", "the new version was compared with v1"


def test_a_failed_run_resumes_at_the_stage_that_failed(
    first_run: Any, demo_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.heldout
    import tagger.calibrate.job

    calls: list[str] = []
    calibrate = tagger.calibrate.job.run_calibrate_job

    def counting_calibrate(job: Any) -> Any:
        calls.append(str(job.output_dir))
        return calibrate(job)

    def broken_bundle(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(tagger.calibrate.job, "run_calibrate_job", counting_calibrate)
    monkeypatch.setattr(flows.heldout, "build_bundle", broken_bundle)
    cfg = load_config.fn(tiny_config(first_run.work_dir, assemble=str(demo_sources)),
                         {"calibrate.target_precision": 0.55})  # fmt: skip
    champion = _champion(first_run.tracking_uri)
    with pytest.raises(OSError, match="disk full"):
        retrain(cfg)
    assert len(calls) == 1 and _champion(first_run.tracking_uri) == champion
    monkeypatch.undo()
    monkeypatch.setattr(tagger.calibrate.job, "run_calibrate_job", counting_calibrate)
    resumed = retrain(cfg)
    assert len(calls) == 1, "calibration came from the cache"
    assert resumed.run_id == first_run.run_id and resumed.bundle.exists()


def test_a_corrupt_source_fails_the_run_and_keeps_the_champion(
    first_run: Any, demo_sources: Path, tmp_path: Path
) -> None:
    s = first_run
    bad = tmp_path / "bad"
    shutil.copytree(demo_sources.parent, bad)
    coco = bad / "coco" / "instances.json"
    coco.write_text(coco.read_text()[:100])
    versions, champion = _versions(s.tracking_uri), _champion(s.tracking_uri)
    with pytest.raises(ValueError, match=r"coco/instances.json: line 1: not valid JSON"):
        retrain(tiny_config(s.work_dir, assemble=str(bad / "assemble.yaml")))
    assert _champion(s.tracking_uri) == champion
    assert _versions(s.tracking_uri) == versions, "nothing was registered"


def _experiment_id(summary: Any) -> str:
    return str(MlflowClient(summary.tracking_uri).get_experiment_by_name("tagger").experiment_id)
