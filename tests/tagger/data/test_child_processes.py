"""Worker processes die with their parent, however the parent dies (issue 16, item 0)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

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


def run_script(code: str) -> subprocess.Popen[str]:
    """Start `code`; its output is not piped (an orphan holding the pipe would block a read)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
    # tagger.train.dataset: DataLoader workers busy in __getitem__
    "loader": """
        import time
        import torch
        from tagger.train.dataset import create_loader
        class Slow(torch.utils.data.Dataset):
            def __len__(self): return 8
            def __getitem__(self, i):
                time.sleep(60)
                return torch.zeros(1)
        next(iter(create_loader(Slow(), batch_size=1, num_workers=2, pin_memory=False)))
        """,
}


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_workers_die_with_a_killed_parent(kind: str) -> None:
    proc = run_script(SCRIPTS[kind])
    try:
        wait_for_children(proc, at_least=2)
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
