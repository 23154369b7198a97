"""What registering and resolving a model prints (issue 16, items 1 and 5), run in a fresh
interpreter so that nothing MLflow printed or cached earlier in the session hides it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import sys
from pathlib import Path
import mlflow
from tagger.bundle.model_bundle import save_bundle
from tagger.bundle.registry import log_bundle, resolve_bundle
from tests.tagger.bundle_fixtures import make_bundle

work = Path(sys.argv[1])
uri = f"sqlite:///{work / 'mlflow.db'}"
mlflow.set_tracking_uri(uri)
experiment = mlflow.MlflowClient().create_experiment(
    "quiet", artifact_location=(work / "artifacts").as_uri()
)
save_bundle(make_bundle(), work / "bundle")
log_bundle(work / "bundle", name="quiet", experiment_id=experiment)
print("LOGGED", flush=True)
local = resolve_bundle("models:/quiet@candidate", cache_dir=work / "cache", tracking_uri=uri)
print("RESOLVED", (local / "bundle.json").exists())
"""


def test_logging_and_resolving_a_local_model_is_quiet(tmp_path: Path) -> None:
    """No "Add type hints" warning (the pyfunc has them) and no "Downloading artifacts" bar
    (the artifacts are copied, not downloaded; MLflow's read-back at logging has no bar)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "RESOLVED True" in done.stdout
    assert "Add type hints" not in done.stderr
    assert "Downloading artifacts" not in done.stderr
