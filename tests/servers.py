"""Start and stop real servers for end-to-end tests: Prefect server, worker, MLflow server.

Each service is started through its script in `deploy/` (so the tests exercise the scripts
people use), in its own process group, with its state in a temporary folder and its output
in a log file there. `stop()` kills the whole group: servers spawn children (uvicorn workers,
flow-run subprocesses) that must not outlive the test.

    with ExitStack() as stack:
        mlflow_url = stack.enter_context(mlflow_server(tmp / "mlflow", env))
        api_url = stack.enter_context(prefect_server(tmp / "prefect", env))
        env = {**env, "PREFECT_API_URL": api_url}
        stack.enter_context(prefect_worker(tmp / "worker", env, pool="tagger-process"))
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def clean_env(home: Path) -> dict[str, str]:
    """The current environment without Prefect/MLflow settings, the venv first on PATH.

    `home` becomes PREFECT_HOME so no client or server touches ~/.prefect.
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "TAGGER_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"
    env["MLFLOW_ENABLE_TELEMETRY"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Service:
    """One started process group and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 60) -> str:
        """The last lines of the service's output."""
        if not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; children of the group may still run.
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return


def start_service(
    name: str, cmd: list[str], env: Mapping[str, str], log_dir: Path, cwd: Path = REPO
) -> Service:
    """Start `cmd` in a new session (its own process group), output to `log_dir/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Service(name, proc, log)


def wait_for_http(service: Service, url: str, timeout: float = 120.0) -> None:
    """Poll `url` until it answers 200; fail early, with the log, if the service exits."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(
                f"{service.name} exited with {service.proc.returncode} before {url} answered:\n"
                f"{service.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = str(exc)
        time.sleep(0.5)
    raise TimeoutError(
        f"{service.name}: {url} did not answer within {timeout:.0f}s ({last_error}):\n"
        f"{service.tail()}"
    )


def wait_for_log(service: Service, text: str, timeout: float = 120.0) -> None:
    """Wait until `text` appears in the service's log; fail early if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in service.log.read_text(errors="replace"):
            return
        if not service.alive():
            raise RuntimeError(f"{service.name} exited early:\n{service.tail()}")
        time.sleep(0.5)
    raise TimeoutError(
        f"{service.name}: {text!r} not logged within {timeout:.0f}s:\n{service.tail()}"
    )


@contextmanager
def mlflow_server(state_dir: Path, env: Mapping[str, str]) -> Iterator[str]:
    """`deploy/start_mlflow.sh` with SQLite + artifacts in `state_dir`; yields the server URL."""
    port = free_port()
    env = {
        **env,
        "TAGGER_SERVER_DIR": str(state_dir),
        "MLFLOW_HOST": LOOPBACK,
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    service = start_service("mlflow", ["bash", str(DEPLOY / "start_mlflow.sh")], env, state_dir)
    try:
        url = f"http://{LOOPBACK}:{port}"
        wait_for_http(service, f"{url}/health")
        yield url
    finally:
        service.stop()


@contextmanager
def prefect_server(state_dir: Path, env: Mapping[str, str]) -> Iterator[str]:
    """`deploy/start_prefect.sh` with its SQLite database in `state_dir`; yields the API URL."""
    port = free_port()
    env = {
        **env,
        "PREFECT_HOME": str(state_dir / "home"),
        "PREFECT_SERVER_API_HOST": LOOPBACK,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{state_dir}/prefect.db",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    service = start_service(
        "prefect-server", ["bash", str(DEPLOY / "start_prefect.sh")], env, state_dir
    )
    try:
        api_url = f"http://{LOOPBACK}:{port}/api"
        wait_for_http(service, f"{api_url}/health", timeout=180)
        yield api_url
    finally:
        service.stop()


def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process whose environment holds `TAGGER_TEST_MARKER=<marker>`.

    Flow runs of a process worker may run in their own session, out of reach of the worker's
    process group; they inherit the worker's environment, so the marker finds them (Linux).
    """
    needle = f"TAGGER_TEST_MARKER={marker}".encode()
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            with suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed


@contextmanager
def prefect_worker(log_dir: Path, env: Mapping[str, str], pool: str) -> Iterator[Service]:
    """`deploy/start_worker.sh` on the process pool `pool` (env must hold PREFECT_API_URL).

    On exit the worker's group is stopped and any flow run it started is killed.
    """
    marker = f"worker-{os.getpid()}-{free_port()}"
    env = {**env, "TAGGER_WORK_POOL": pool, "TAGGER_TEST_MARKER": marker}
    service = start_service(
        "prefect-worker", ["bash", str(DEPLOY / "start_worker.sh")], env, log_dir
    )
    try:
        wait_for_log(service, "started", timeout=120)
        yield service
    finally:
        service.stop()
        kill_marked(marker)
