"""`tagger predict` and the other subcommands as a user runs them (issue 16): exit codes, what
they print, what they leave behind. Each runs the console script in a subprocess."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tagger.bundle.model_bundle import Bundle, save_bundle
from tests.tagger.bundle_fixtures import make_bundle, write_images
from tests.tagger.data.test_child_processes import kill_parent_and_check_children

ROOT = Path(__file__).resolve().parents[3]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a user without MLflow settings; this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def tagger_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from tagger.cli import console; console()", *args]


def run_tagger(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tagger_cmd(*args), capture_output=True, text=True, timeout=300, cwd=cwd,
        env=cli_env(**env),
    )  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_bundle(make_bundle(), tmp_path_factory.mktemp("cli") / "bundle")


# ---- item 0: a killed job leaves no worker behind ---------------------------------------------


def test_killed_predict_leaves_no_decode_worker(model_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    write_images(images, n=1)
    for i in range(1, 400):  # enough that the job is mid-way when it is killed
        os.link(images / "img0.png", images / f"img{i:03d}.png")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        tagger_cmd("predict", str(images), "--model", str(model_dir), "--out", str(out),
                   "--workers", "2", "--worker-kind", "process", "--batch-size", "1",
                   "--no-progress"),
        cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "predict ended before the kill"
            workers = psutil.Process(proc.pid).children(recursive=True)
            if len(workers) >= 2 and out.exists() and out.stat().st_size > 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no decode workers and records within 120 s")
        kill_parent_and_check_children(proc)  # SIGKILL, as a batch scheduler's timeout does
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- items 2 and 4: usage errors, before any model loads ---------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing input", "input 'no/such/folder' does not exist"),
        ("missing bundle", "model bundle 'no/such/bundle' does not exist"),
        ("folder that is no bundle", "not a model bundle (no bundle.json)"),
        ("bad output suffix", "unknown suffix '.txt'"),
        ("bad option value", "batch_size"),
    ],
)
def test_usage_errors_exit_2_before_loading(
    case: str, expected: str, model_dir: Path, tmp_path: Path
) -> None:
    image = write_images(tmp_path / "imgs", n=1)[0]
    args = {
        "missing input": ["no/such/folder", "--model", str(model_dir), "--out", "o.jsonl"],
        "missing bundle": [str(image), "--model", "no/such/bundle", "--out", "o.jsonl"],
        "folder that is no bundle": [str(image), "--model", str(tmp_path), "--out", "o.jsonl"],
        "bad output suffix": [str(image), "--model", str(model_dir), "--out", "o.txt"],
        "bad option value": [str(image), "--model", str(model_dir), "--out", "o.jsonl",
                             "--batch-size", "0"],
    }[case]  # fmt: skip
    done = run_tagger("predict", *args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert "loaded in" not in done.stdout and "img/s" not in done.stderr  # nothing loaded, drawn
    assert not (tmp_path / "o.jsonl").exists()


def test_exit_code_1_when_some_images_fail(model_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    write_images(images, n=2)
    (images / "broken.png").write_bytes(b"not an image")
    done = run_tagger("predict", str(images), "--model", str(model_dir), "--out", "o.jsonl",
                      "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "images 3, tagged 2, errors: not_an_image 1" in done.stdout
    good = [str(p) for p in sorted(images.glob("img*.png"))]
    ok = run_tagger("predict", *good, "--model", str(model_dir), "--out", "ok.jsonl",
                    "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


# ---- item 1: models:/ without a tracking store ----------------------------------------------


def test_models_uri_without_a_store_names_it_and_creates_nothing(tmp_path: Path) -> None:
    image = write_images(tmp_path / "imgs", n=1)[0]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run_tagger("predict", str(image), "--model", "models:/tagger@champion", "--out",
                      str(tmp_path / "o.jsonl"), cwd=cwd)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"no MLflow tracking store at {cwd / 'mlflow.db'}" in done.stderr
    assert "MLFLOW_TRACKING_URI is not set" in done.stderr and "--tracking-uri" in done.stderr
    assert list(cwd.iterdir()) == []  # no ./mlflow.db, no ./mlruns


@pytest.mark.slow  # logs a model to MLflow (~1 min on two loaded cores)
def test_tracking_uri_option_reads_that_store(tmp_path: Path) -> None:
    """--tracking-uri finds a registered model; the alias that is not there names the store."""
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    register = (
        "import sys, mlflow; from pathlib import Path\n"
        "from tagger.bundle.model_bundle import save_bundle\n"
        "from tagger.bundle.registry import log_bundle\n"
        "from tests.tagger.bundle_fixtures import make_bundle\n"
        "store = Path(sys.argv[1]); mlflow.set_tracking_uri(sys.argv[2])\n"
        "exp = mlflow.MlflowClient().create_experiment('t', (store / 'art').as_uri())\n"
        "log_bundle(save_bundle(make_bundle(), store / 'b'), name='tagger', experiment_id=exp)\n"
    )
    done = subprocess.run([sys.executable, "-c", register, str(store), uri], capture_output=True,
                          text=True, timeout=300, cwd=store, env=cli_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    image = write_images(tmp_path / "imgs", n=1)[0]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    common = ["--tracking-uri", uri, "--workers", "0"]
    ok = run_tagger("predict", str(image), "--model", "models:/tagger@candidate",
                    "--out", str(tmp_path / "o.jsonl"), *common, cwd=cwd,
                    TAGGER_MODEL_CACHE=str(tmp_path / "cache"))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "Downloading artifacts" not in ok.stderr
    missing = run_tagger("predict", str(image), "--model", "models:/tagger@champion",
                         "--out", str(tmp_path / "o2.jsonl"), *common, cwd=cwd,
                         TAGGER_MODEL_CACHE=str(tmp_path / "cache"))  # fmt: skip
    assert missing.returncode == 2
    assert f"has no alias 'champion' in the MLflow tracking store {uri}" in missing.stderr
    assert list(cwd.iterdir()) == []


# ---- item 3: model loading and tagging reported apart; the bar and the summary agree ----------


def test_summary_reports_loading_and_tagging_and_agrees_with_the_bar(
    model_dir: Path, tmp_path: Path
) -> None:
    images = tmp_path / "imgs"
    write_images(images, n=1)
    for i in range(1, 40):
        os.link(images / "img0.png", images / f"img{i:02d}.png")
    done = run_tagger("predict", str(images), "--model", str(model_dir), "--out", "o.jsonl",
                      "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = re.search(r"^model: .* loaded in ([\d.]+) s$", done.stdout, re.M)
    assert loaded, done.stdout
    summary = re.search(r"tagging ([\d.]+) s, ([\d.]+) images/s", done.stdout)
    assert summary, done.stdout
    bar_rates = re.findall(r"([\d.]+)img/s", done.stderr)
    assert bar_rates, done.stderr
    bar, told = float(bar_rates[-1]), float(summary.group(2))
    assert 0.67 < bar / told < 1.5, (done.stdout, done.stderr[-400:])


# ---- item 7: help text, defaults, MLflow, one example per subcommand --------------------------


def test_every_option_says_what_it_does_and_its_default() -> None:
    from tagger.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        text = command.format_help().split("\noptions:", 1)[1]
        for action in command._actions:
            assert action.help, f"tagger {name} {action.option_strings or action.dest}: no help"
            has_default = action.default not in (None, False, argparse.SUPPRESS)
            if action.option_strings and has_default and not action.required:
                flag = action.option_strings[-1]
                block = text.split(flag, 1)[1].split("\n  -", 1)[0]
                assert "default" in block, f"tagger {name} {flag}: default not shown"


@pytest.mark.parametrize("command", ["assemble", "demo-data", "calibrate", "train", "predict"])
def test_help_ends_with_an_example(command: str, tmp_path: Path) -> None:
    done = run_tagger(command, "--help", cwd=tmp_path)
    assert done.returncode == 0
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert any(line.strip().startswith(f"tagger {command} ") for line in lines[-3:]), lines[-3:]
    if command == "predict":
        assert "MLFLOW_TRACKING_URI" in done.stdout and "--tracking-uri" in done.stdout
        assert "exit codes: 0" in done.stdout


# ---- item 8: a demo model says so, once ---------------------------------------------------------


def demo_bundle(path: Path) -> Path:
    bundle: Bundle = make_bundle()
    bundle.training_data = {"name": "demo", "sources": ["coco"], "images": 320, "demo": True}
    return save_bundle(bundle, path)


def test_predict_warns_once_about_a_demo_model(model_dir: Path, tmp_path: Path) -> None:
    images = [str(p) for p in write_images(tmp_path / "imgs", n=3)]
    demo = demo_bundle(tmp_path / "demo_bundle")
    done = run_tagger("predict", *images, "--model", str(demo), "--out", "o.jsonl",
                      "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("trained on the demo data set (320 drawn images") == 1
    assert "-m flows.retrain flows/configs/retrain_shared.yaml" in done.stderr
    real = run_tagger("predict", *images, "--model", str(model_dir), "--out", "r.jsonl",
                      "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert "demo data set" not in real.stderr
