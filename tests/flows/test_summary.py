"""The retrain summary's hints work as printed (issue 16, item 6)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from flows.summary import mlflow_ui_hint
from flows.tracking import Tracking


def tracking(uri: str) -> Tracking:
    return Tracking(tracking_uri=uri, artifact_location=None, experiment="e", model_name="m",
                    model_cache="/tmp/models")  # fmt: skip


def test_mlflow_ui_hint_runs_outside_an_activated_environment(tmp_path: Path) -> None:
    store = tmp_path / "a folder" / "mlflow.db"
    hint = mlflow_ui_hint(tracking(f"sqlite:///{store}"))
    argv = shlex.split(hint)
    assert Path(argv[0]).is_absolute()
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{store}"
    # as a user types it in a shell with no venv on PATH: the printed program starts
    done = subprocess.run([*argv[: argv.index("ui") + 1], "--help"], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--backend-store-uri" in done.stdout


def test_a_server_hint_is_its_address() -> None:
    assert mlflow_ui_hint(tracking("http://127.0.0.1:5000")) == "http://127.0.0.1:5000"
