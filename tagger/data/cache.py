"""Resized image cache: one small RGB JPEG per content hash, built in parallel, idempotently.

Training reads `cache_path(cache_dir, size, content_hash)` instead of the original photo, so no
full-size photo is ever decoded twice. Each worker decodes with `load_rgb` (JPEGs at reduced DCT
scale), writes to a temporary name and renames, so a killed build leaves no half-written file
and a rerun only builds what is missing.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from tagger.data.child_processes import worker_initializer
from tagger.data.images import DEFAULT_MAX_PIXELS, ImageError, load_rgb
from tagger.data.sources import Problem

Loader = Callable[[str, int], Image.Image]
T = TypeVar("T")
R = TypeVar("R")

_HASH = re.compile(r"^[0-9a-f]{2,128}$")
# Spawned, not forked: callers (Prefect, torch) run threads, and fork with threads can deadlock.
_SPAWN = multiprocessing.get_context("spawn")
_CRASH_REASON = "decode_failed: the worker process died on this image (crash or out of memory)"


class CacheConfig(BaseModel):
    """How to build the resized cache; `build_cache(..., **cfg.model_dump())`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(default=256, ge=8, description="shorter side of cached images, px")
    workers: int = Field(default=2, ge=0, description="worker processes; 0 = in this process")
    quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of cached files")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0, description="refuse larger images")


@dataclass
class CacheResult:
    """What a build did: files written, inputs already cached (or repeated), failed images."""

    built: int
    skipped: int
    problems: list[Problem] = field(default_factory=list)


def cache_path(cache_dir: str | os.PathLike[str], size: int, content_hash: str) -> Path:
    """Where the cached image of a content hash lives: cache_dir/s{size}/{hash[:2]}/{hash}.jpg."""
    return Path(cache_dir) / f"s{size}" / content_hash[:2] / f"{content_hash}.jpg"


def build_cache(
    paths: Sequence[str | os.PathLike[str]],
    hashes: Sequence[str],
    cache_dir: str | os.PathLike[str],
    size: int = 256,
    workers: int = 2,
    *,
    quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    loader: Loader | None = None,
) -> CacheResult:
    """Write the resized copy (shorter side == size, RGB JPEG) of every image not yet cached.

    paths[i] has content hash hashes[i] (lower-case hex, e.g. sha256 from `hash_file`). Images
    that fail become `Problem`s whose reason starts with the `ImageError` code; the build goes
    on. A worker process that dies (a decoder crash) costs only the image that killed it.
    `loader(path, size)` replaces `load_rgb` (must be picklable; benchmarks and tests).
    """
    paths = list(paths)
    jobs = _plan_jobs(paths, list(hashes), cache_dir, size)
    load = loader or functools.partial(load_rgb, max_pixels=max_pixels)
    task = functools.partial(_cache_one, size=size, quality=quality, loader=load)
    if workers <= 0:
        outcomes: list[str | WorkerCrash | None] = [task(job) for job in jobs]
    else:
        outcomes = map_in_processes(task, jobs, workers)
    problems = [
        Problem(file=path, reason=outcome.reason if isinstance(outcome, WorkerCrash) else outcome)
        for (path, _), outcome in zip(jobs, outcomes, strict=True)
        if outcome is not None
    ]
    built = len(jobs) - len(problems)
    return CacheResult(built=built, skipped=len(paths) - len(jobs), problems=problems)


def _plan_jobs(
    paths: list[str | os.PathLike[str]],
    hashes: list[str],
    cache_dir: str | os.PathLike[str],
    size: int,
) -> list[tuple[str, str]]:
    """(source path, cache file) for each hash neither cached yet nor seen earlier in the list."""
    if len(paths) != len(hashes):
        raise ValueError(f"build_cache: {len(paths)} paths but {len(hashes)} hashes")
    jobs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for row, (path, content_hash) in enumerate(zip(paths, hashes, strict=True)):
        if not isinstance(content_hash, str) or not _HASH.match(content_hash):
            raise ValueError(
                f"build_cache: hashes[{row}] = {content_hash!r} for {path}: "
                "expected a lower-case hex digest"
            )
        dest = cache_path(cache_dir, size, content_hash)
        if content_hash in seen or dest.exists():
            continue
        seen.add(content_hash)
        jobs.append((os.fspath(path), os.fspath(dest)))
    return jobs


def write_cached_image(
    path: str, dest: str, size: int, quality: int = 90, loader: Loader | None = None
) -> None:
    """Decode `path` with its shorter side at `size` and write it atomically as JPEG to `dest`.

    Raises `ImageError` for a bad image; errors writing `dest` (disk full) propagate.
    """
    image = (loader or load_rgb)(path, size)
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, "JPEG", quality=quality)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _cache_one(job: tuple[str, str], size: int, quality: int, loader: Loader) -> str | None:
    """Worker: build one cache file; None on success, else the problem's reason."""
    path, dest = job
    try:
        write_cached_image(path, dest, size, quality, loader)
    except ImageError as err:
        return f"{err.code}: {err.message}"
    return None


@dataclass(frozen=True)
class WorkerCrash:
    """The outcome of an item whose worker process died (segfault, out of memory, os._exit)."""

    reason: str = _CRASH_REASON


def map_in_processes(
    fn: Callable[[T], R], items: Sequence[T], workers: int
) -> list[R | WorkerCrash]:
    """`[fn(x) for x in items]` on `workers` spawned processes, surviving worker crashes.

    At most 2 * workers items are in flight. When a worker dies the pool breaks and every
    in-flight item is a suspect: the suspects are rerun one at a time in a one-process pool, so
    the item that really crashes gets `WorkerCrash` and the innocent ones their result.
    Exceptions raised by `fn` propagate. Output order is input order; `fn` and the items must
    pickle.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    outcomes: dict[int, R | WorkerCrash] = {}
    queue = deque(range(len(items)))
    while queue:
        suspects = _run_until_crash(fn, items, queue, workers, outcomes)
        if suspects and not outcomes and isinstance(_run_alone(_echo, 0), WorkerCrash):
            raise RuntimeError(
                "worker processes die at start-up; a script that calls this must guard its "
                "entry point with `if __name__ == '__main__':` (spawned workers import it)"
            )
        _run_one_by_one(fn, items, deque(suspects), outcomes)
    return [outcomes[i] for i in range(len(items))]


def _run_until_crash(
    fn: Callable[[T], R],
    items: Sequence[T],
    queue: deque[int],
    workers: int,
    outcomes: dict[int, R | WorkerCrash],
) -> list[int]:
    """Drain `queue` through one pool; on a crash return the in-flight indexes (suspects)."""
    pool = ProcessPoolExecutor(workers, mp_context=_SPAWN, initializer=worker_initializer())
    in_flight: dict[Future[R], int] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < 2 * workers:
                index = queue.popleft()
                in_flight[pool.submit(fn, items[index])] = index
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                if isinstance(future.exception(), BrokenProcessPool):
                    return _suspects_after_crash(in_flight, outcomes)
                outcomes[in_flight.pop(future)] = future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return []


def _suspects_after_crash(
    in_flight: dict[Future[R], int], outcomes: dict[int, R | WorkerCrash]
) -> list[int]:
    """Keep the results that finished before the crash; the other in-flight items are suspects."""
    suspects = []
    for future, index in in_flight.items():
        if future.done() and future.exception() is None:
            outcomes[index] = future.result()
        else:
            suspects.append(index)
    return sorted(suspects)


def _run_one_by_one(
    fn: Callable[[T], R],
    items: Sequence[T],
    queue: deque[int],
    outcomes: dict[int, R | WorkerCrash],
) -> None:
    """Run each queued item alone in a one-process pool; a death marks exactly that item."""
    while queue:
        with ProcessPoolExecutor(1, mp_context=_SPAWN, initializer=worker_initializer()) as pool:
            while queue:
                index = queue.popleft()
                try:
                    outcomes[index] = pool.submit(fn, items[index]).result()
                except BrokenProcessPool:
                    outcomes[index] = WorkerCrash()
                    break  # this pool is dead; the rest get a fresh one


def _run_alone(fn: Callable[[T], R], item: T) -> R | WorkerCrash:
    outcome: dict[int, R | WorkerCrash] = {}
    _run_one_by_one(fn, [item], deque([0]), outcome)
    return outcome[0]


def _echo(x: int) -> int:
    return x
