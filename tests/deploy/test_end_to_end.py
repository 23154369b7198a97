"""The deployment loop with real servers: MLflow server, Prefect server, a process worker,
`prefect deploy` of the manual retrain from deploy/prefect.yaml, `prefect deployment run`,
then the MLflow run, the `@champion` version, `tagger.predict` on `models:/tagger@champion`
and an album job through the tag-album deployment.

Everything runs on 127.0.0.1 with its state in a temporary folder and is torn down (process
groups killed) whatever happens. Takes a few minutes on two cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tagger.inference.runtime import MALLOC_ENV, OMP_ENV
from tests.servers import REPO, clean_env, mlflow_server, prefect_server, prefect_worker

POOL = "tagger-e2e"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
TINY_DEMO = {"size": 64, "coco": 20, "voc": 10, "openimages": 10, "keywords": 10,
             "internal": 10, "duplicates": 1, "truncated": 1}  # fmt: skip
TINY_RETRAIN = {
    "demo": TINY_DEMO,
    "train": {
        "model": {"backbone": "resnet18", "image_size": 32},
        "schedule": {"epochs": 1, "warmup_epochs": 0.0},
        "data": {"val_fold": 0, "batch_size": 16, "num_workers": 0},
        "device": "cpu",
        "progress": False,
    },
    "calibrate": {"min_positives": 1, "min_negatives": 1, "target_precision": 0.5},
}


def _api(api_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{api_url}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def _wait_for_flow_run(api_url: str, run_id: str, worker_log: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        state = _api(api_url, f"/flow_runs/{run_id}")["state"]["type"]
        if state in FINAL:
            return str(state)
        time.sleep(5)
    raise AssertionError(f"flow run {run_id} still {state} after {timeout:.0f}s:\n{worker_log()}")


@pytest.mark.server
@pytest.mark.timeout(1200)
def test_deployed_retrain_registers_and_promotes_a_model_that_predict_can_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    import tagger
    from flows.tracking import mlflow_uris

    env = clean_env(tmp_path / "home")
    config = tmp_path / "retrain_e2e.yaml"
    config.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "unused"), **TINY_RETRAIN}))
    work = tmp_path / "work"
    with ExitStack() as stack:
        mlflow_url = stack.enter_context(mlflow_server(tmp_path / "mlflow", env))
        api_url = stack.enter_context(prefect_server(tmp_path / "prefect", env))
        env |= {
            "PREFECT_API_URL": api_url,
            "TAGGER_WORK_POOL": POOL,
            "TAGGER_RETRAIN_CONFIG": str(config),
            "TAGGER_WORK_DIR": str(work),
            "TAGGER_MLFLOW_URI": mlflow_url,
        }
        worker = stack.enter_context(prefect_worker(tmp_path / "worker", env, POOL))

        _run(["bash", "deploy/deploy.sh", "--name", "retrain-manual", "--name", "tag-album"], env)
        for name in ("retrain/retrain-manual", "tag-album/tag-album"):  # the batch-job settings
            deployment = _api(api_url, f"/deployments/name/{name}")
            assert deployment["job_variables"]["env"] == OMP_ENV | MALLOC_ENV, deployment
        out = _run(["prefect", "deployment", "run", "retrain/retrain-manual"], env)
        match = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert match, out
        state = _wait_for_flow_run(api_url, match[1], worker.tail, timeout=900)
        assert state == "COMPLETED", f"flow run ended {state}:\n{worker.tail(120)}"

        # the deployment's parameters reached the flow: work dir in tmp, MLflow server
        run = _api(api_url, f"/flow_runs/{match[1]}")
        assert run["parameters"]["overrides"] == {
            "work_dir": str(work),
            "mlflow.tracking_uri": mlflow_url,
        }
        assert (work / "results").is_dir() and (work / "train").is_dir()

        client = MlflowClient(mlflow_url)
        champion = client.get_model_version_by_alias("tagger", "champion")
        assert str(champion.version) == "1"
        assert champion.tags["promotion.decision"] == "promoted"
        mlflow_run = client.get_run(champion.run_id)
        assert mlflow_run.info.status == "FINISHED"
        assert "best_val_map" in mlflow_run.data.metrics
        assert mlflow_run.data.params["dataset_hash"]

        artifacts = _api(
            api_url, "/artifacts/filter", {"artifacts": {"key": {"any_": ["retrain-summary"]}}}
        )
        assert any(champion.run_id in str(a["data"]) for a in artifacts)

        monkeypatch.setenv("TAGGER_MODEL_CACHE", str(tmp_path / "model_cache"))
        images = sorted((work / "demo-data").rglob("coco/images/*.jpg"))[:4]
        assert images
        with mlflow_uris(mlflow_url):
            records = list(tagger.predict(images, model="models:/tagger@champion", workers=0))
        assert len(records) == 4 and all(r.error is None for r in records)
        assert {r.path for r in records} == {str(p) for p in images}

        # an album job through the tag-album deployment, with the same @champion
        album = {"inputs": str(images[0].parent), "output": str(tmp_path / "album.jsonl"),
                 "tracking_uri": mlflow_url, "model_cache": str(tmp_path / "worker_cache"),
                 "options": {"workers": 0}}  # fmt: skip
        out = _run(["prefect", "deployment", "run", "tag-album/tag-album",
                    "--params", json.dumps({"config": album})], env)  # fmt: skip
        match = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert match, out
        state = _wait_for_flow_run(api_url, match[1], worker.tail, timeout=300)
        assert state == "COMPLETED", f"tag-album ended {state}:\n{worker.tail(120)}"
        lines = (tmp_path / "album.jsonl").read_text().splitlines()
        assert len(lines) == len(list(images[0].parent.glob("*.jpg")))
