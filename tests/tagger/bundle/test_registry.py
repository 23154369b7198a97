"""Registry: log, register, aliases, promotion and loading back, against the embedded SQLite store
and against a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from tagger.bundle.model_bundle import Bundle, save_bundle
from tagger.bundle.registry import (
    CANDIDATE,
    CHAMPION,
    champion_version,
    log_bundle,
    log_review,
    promote,
    resolve_bundle,
    score_images,
)
from tagger.bundle.resolve import load_bundle, resolve_model_uri
from tagger.calibrate.evaluation import EvalData, ModelScore, decide_promotion
from tests.tagger.bundle_fixtures import make_bundle, tiny_taxonomy, write_images

NAME = "tagger-test"


def eval_data(seed: int = 0) -> EvalData:
    rng = np.random.default_rng(seed)
    targets = (rng.random((300, 4)) < 0.3).astype(np.float32)
    return EvalData(tiny_taxonomy().tag_ids, targets, np.ones((300, 4), dtype=bool))


def fake_probs(data: EvalData, quality: float, seed: int) -> np.ndarray:
    """Held-out scores whose separation of positives grows with `quality`."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.random(data.targets.shape) * (1 - quality) + quality * data.targets, 0, 1)


def run_scenario(tmp: Path, quality: dict[str, float]) -> None:
    """Versions in order ("v1" first becomes champion, "v2" is worse and rejected, "v3" is
    better and wins); then the champion loads back by alias, as a bundle and as a pyfunc."""
    client = MlflowClient()
    data = eval_data()
    probs = {h: fake_probs(data, q, seed=1) for h, q in quality.items()}

    def predict_fn(bundle: Bundle) -> np.ndarray:
        return probs[bundle.dataset_hash]

    versions, runs = {}, {}
    for i, key in enumerate(quality):
        path = save_bundle(make_bundle(seed=i, dataset_hash=key), tmp / f"bundle_{key}")
        with mlflow.start_run() as run:
            reg = log_bundle(path, name=NAME)
            assert reg.run_id == run.info.run_id
        versions[key], runs[key] = reg.version, reg.run_id
        assert str(client.get_model_version_by_alias(NAME, CANDIDATE).version) == reg.version
        decision = promote(
            NAME, reg.version, data=data, predict_fn=predict_fn, cache_dir=tmp / "cache"
        )
        tags = client.get_model_version(NAME, reg.version).tags
        assert tags["promotion.decision"] == ("rejected" if key == "v2" else "promoted")
        assert tags["dataset_hash"] == key
        assert "promotion.candidate.map" in tags
        if key == "v1":
            assert decision.promoted and decision.champion_version is None
        if key == "v2":
            assert not decision.promoted and "candidate loses" in decision.reason
            assert champion_version(NAME) == versions["v1"]
            assert "promotion.champion.map" in tags
            assert "rejected" in client.get_model_version(NAME, reg.version).description
    assert champion_version(NAME) == versions["v3"]

    champion = load_bundle(f"models:/{NAME}@{CHAMPION}", cache_dir=tmp / "cache")
    assert champion.dataset_hash == "v3"
    again = resolve_bundle(f"models:/{NAME}/{versions['v3']}", cache_dir=tmp / "cache")
    assert again == champion.path  # cached: the same directory, no second download
    uri = f"models:/{NAME}@{CHAMPION}"
    assert resolve_model_uri(uri, cache_dir=tmp / "cache") == champion.path
    assert resolve_model_uri(str(tmp / "bundle_v1")) == tmp / "bundle_v1"
    by_run = load_bundle(f"runs:/{runs['v3']}/model", cache_dir=tmp / "cache")
    assert by_run.dataset_hash == "v3" and by_run.path != champion.path
    images = [str(p) for p in write_images(tmp / "images")]
    expected = score_images(champion, champion.create_model(), images)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    got = pyfunc.predict(pd.DataFrame({"image": images}))
    assert list(got.columns) == list(champion.tag_ids)
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    bad = pyfunc.predict(pd.DataFrame({"image": [str(tmp / "missing.jpg")]}))
    assert bad.isna().all(axis=None)


@pytest.fixture
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded default: a SQLite store and ./mlruns artifacts, all in a temporary folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("registry-test")  # MLflow remembers the active experiment globally
    return tmp_path


def test_register_promote_load_local_store(local_store: Path) -> None:
    run_scenario(local_store, {"v1": 0.5, "v2": 0.1, "v3": 0.8})


def test_log_review_writes_what_a_reviewer_needs(local_store: Path) -> None:
    bundle = make_bundle()
    thresholds = local_store / "thresholds.json"
    save_bundle(bundle, local_store / "b")
    shutil.copy(local_store / "b" / "thresholds.json", thresholds)
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    with mlflow.start_run() as run:
        log_review(
            run.info.run_id,
            bundle.threshold_report,
            {"pr_curves": fig},
            thresholds,
            "abc123",
            metrics={"map": 0.5, "undefined": float("nan")},
        )
    client = MlflowClient()
    names = {a.path for a in client.list_artifacts(run.info.run_id, "review")}
    assert names == {"review/tag_report.json", "review/pr_curves.png", "review/thresholds.json"}
    got = client.get_run(run.info.run_id).data
    assert got.params["dataset_hash"] == "abc123" and got.metrics == {"map": 0.5}
    table = mlflow.load_table("review/tag_report.json", run_ids=[run.info.run_id])
    assert list(table["tag"]) == list(bundle.tag_ids)


def test_decide_promotion_rules() -> None:
    base = ModelScore(map=0.5, share_meeting_target=0.6, n_tags=4, n_target_tags=3, n_images=9)
    better = ModelScore(0.55, 0.6, 4, 3, 9)
    worse_share = ModelScore(0.6, 0.5, 4, 3, 9)
    assert decide_promotion(base, None)[0]
    assert decide_promotion(better, base)[0]
    assert decide_promotion(base, base)[0]  # a tie does not lose
    ok, why = decide_promotion(worse_share, base)
    assert not ok and "share of tags meeting their precision target 0.5000 < champion" in why
    assert decide_promotion(worse_share, base, tolerance=0.1)[0]


# ---- a real `mlflow server` -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`mlflow server` with a SQLite database and an artifact store in a temporary folder."""
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--workers",
        "1",
    ]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.chdir(tmp_path)
        mlflow.set_experiment("registry-test")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.server
def test_register_promote_load_real_server(mlflow_server: str, tmp_path: Path) -> None:
    work = tmp_path / "client"
    work.mkdir()
    run_scenario(work, {"v1": 0.5, "v3": 0.8})  # the rejection path runs on the local store
    # artifacts went through the server into its artifact store, not into the client's folder
    assert any((tmp_path / "artifacts").rglob("bundle.json"))
    assert not (work / "mlruns").exists()


def test_resolve_with_explicit_uri_leaves_the_working_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit tracking URI is all `resolve_bundle` uses: no default store in the cwd."""
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.chdir(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_experiment("resolve-test")
    save_bundle(make_bundle(), tmp_path / "b")
    registered = log_bundle(tmp_path / "b", name=NAME)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    local = resolve_bundle(
        f"models:/{NAME}@{CANDIDATE}", cache_dir=tmp_path / "cache", tracking_uri=uri
    )
    assert (local / "bundle.json").exists()
    assert load_bundle(local).taxonomy.tag_ids == make_bundle().taxonomy.tag_ids
    assert registered.version == "1"
    assert list(elsewhere.iterdir()) == []
