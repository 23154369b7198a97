"""Worker processes die with their parent, however the parent dies (issue 16, item 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie is dead: only its exit status is left)."""
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_for_children(proc: subprocess.Popen[str], at_least: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the parent ended before the kill (exit code {proc.returncode})")
        if len(children_of(proc.pid)) >= at_least:
            return
        time.sleep(0.05)
    pytest.fail(f"fewer than {at_least} child processes within {timeout} s")


def kill_parent_and_check_children(proc: subprocess.Popen[str], grace: float = 10) -> None:
    """SIGKILL the parent (no cleanup runs) and assert every child it started is gone."""
    children = children_of(proc.pid)
    assert children
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + grace
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = alive(children)
    for p in survivors:  # leave nothing behind, even when the test fails
        p.kill()
    assert not survivors, f"orphaned workers: {[(p.pid, p.cmdline()[:3]) for p in survivors]}"


def run_script(code: str, folder: Path) -> subprocess.Popen[str]:
    """Start `code` as a script file (spawned workers import it); its output is not piped (an
    orphan holding the pipe would block a read)."""
    script = folder / "job.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, str(script)],
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


class SlowDataset:
    """Eight items, each taking a minute: DataLoader workers stay busy (and say so in `folder`,
    once their initializer has run)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> int:
        (Path(self.folder) / f"busy-{os.getpid()}").touch()
        time.sleep(60)
        return index


SCRIPTS = {
    # tagger.data.cache: spawned pool, workers busy
    "cache": """
        import time
        from tagger.data.cache import map_in_processes
        if __name__ == "__main__":
            map_in_processes(time.sleep, [60.0] * 4, 2)
        """,
    # tagger.inference.engine: forked decode pool, workers busy
    "decode": """
        import time
        from tagger.inference.engine import DecodePool
        pool = DecodePool(time.sleep, workers=2, kind="process", on_crash=lambda x: None)
        list(pool.map([60.0] * 4))
        """,
    # tagger.train.dataset: spawned DataLoader workers busy in __getitem__ (the dataset class
    # comes from an importable module, as spawn needs)
    "loader": """
        import os
        from tagger.train.dataset import create_loader
        from tests.tagger.data.test_child_processes import SlowDataset
        if __name__ == "__main__":
            dataset = SlowDataset(os.path.dirname(os.path.abspath(__file__)))
            loader = create_loader(dataset, batch_size=1, num_workers=2, pin_memory=False)
            next(iter(loader))
        """,
}


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_workers_die_with_a_killed_parent(kind: str, tmp_path: Path) -> None:
    proc = run_script(SCRIPTS[kind], tmp_path)
    try:
        wait_for_children(proc, at_least=2)
        if kind == "loader":  # spawned: wait until both workers are past their initializer
            deadline = time.monotonic() + 120
            while len(list(tmp_path.glob("busy-*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        time.sleep(1.0)  # the workers have run their initializer and are busy
        kill_parent_and_check_children(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_child_whose_parent_is_already_gone_ends_itself() -> None:
    """The race right after fork: the parent died before the kernel was told to watch it."""
    code = "from tagger.data.child_processes import die_with_parent; die_with_parent(-5)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL


def test_the_expected_parent_lets_the_child_live() -> None:
    code = (
        "import os; from tagger.data.child_processes import die_with_parent; "
        "print(die_with_parent(os.getppid()))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "True")
