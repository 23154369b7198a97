"""Child processes that die with their parent, whatever kills it.

A worker blocked on its task pipe never sees its parent go when the parent is killed hard
(`kill -9` by a batch scheduler, the OOM killer): it holds its own copy of the pipe, so it is
re-parented to init and waits for ever with its memory. On Linux the kernel can send a signal
to a process when its parent dies (`prctl(PR_SET_PDEATHSIG)`); each worker asks for SIGKILL in
its initializer. The parent may already be gone by the time the initializer runs (the race right
after fork): then `getppid()` is no longer the pid the parent recorded, and the worker ends
itself at once.

Every process pool and DataLoader of the library starts its workers with one of these
initializers (`tagger.inference.engine.DecodePool`, `tagger.data.cache`,
`tagger.train.dataset.create_loader`). It lives here, in the lowest stage with code, so that all
three can import it. Ray's actors are Ray's to manage.

Two limits of the kernel's rule, both met by the library's pools: the "parent" is the *thread*
that started the child, so a pool must not outlive the thread that started it; and the child
must be started by the process itself (fork or spawn start methods; a forkserver's children are
the server's).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> bool:
    """In a child process: have the kernel SIGKILL this process when its parent dies.

    parent_pid: the parent's pid, read by the parent before it started this child. When the
    parent already died (this process was re-parented), the process kills itself now.
    Returns whether the kernel watches the parent (False off Linux, where orphans stay possible).
    """
    watched = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
        watched = True
    if os.getppid() != parent_pid:  # the parent died before the kernel was watching it
        os.kill(os.getpid(), signal.SIGKILL)
    return watched


def _die_with_parent_worker(parent_pid: int, worker_id: int) -> None:
    del worker_id  # DataLoader passes the worker's index
    die_with_parent(parent_pid)


def worker_initializer() -> Callable[[], bool]:
    """`ProcessPoolExecutor(initializer=worker_initializer())`: workers die with this process.

    Picklable (a partial of a module function), so it also works with the spawn start method.
    """
    return functools.partial(die_with_parent, os.getpid())


def loader_worker_init() -> Callable[[int], None]:
    """`DataLoader(worker_init_fn=loader_worker_init())`: loader workers die with this process."""
    return functools.partial(_die_with_parent_worker, os.getpid())
