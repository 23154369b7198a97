"""`python -m flows.<name>` on bad input: one line, exit code 2, nothing started (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# each case imports Prefect and torch (~5 s on a quiet machine): two by default, the rest slow
@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("flows.retrain", ["no/such.yaml"], "no/such.yaml: no such file"),
        pytest.param(
            "flows.demo",
            ["--config", "no/such.yaml"],
            "no/such.yaml: no such file",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "flows.assemble", ["no/such.yaml"], "no/such.yaml: no such file", marks=pytest.mark.slow
        ),
        pytest.param(
            "flows.train", ["no/such.yaml"], "no/such.yaml: no such file", marks=pytest.mark.slow
        ),
        pytest.param(
            "flows.calibrate",
            ["no/such.yaml"],
            "no/such.yaml: no such file",
            marks=pytest.mark.slow,
        ),
        ("flows.tag_album", ["no/such/album", "out.jsonl"], "input 'no/such/album' does not"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    module: str, args: list[str], expected: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert "Starting temporary server" not in done.stderr + done.stdout
