"""Task caching keyed by the content of a task's real inputs: files, configs and code version.

Prefect's default cache key hashes the pickled task inputs and the flow run id. Our tasks take
paths and configs, so a pickled path says nothing about the file behind it. `ContentHash`
instead hashes what the inputs *are*: a file by its bytes (sha256), a folder by its listing
(relative path, size, mtime: re-reading a million photos per run would cost more than the
stage it guards), a pydantic config by its fields, all of it together with the code version
(package version, git commit and a hash of the package sources). The same inputs give the same
key in any flow run, so a rerun after a failure picks up every stage that had finished.

`stage_dir` names a task's output folder from the same fingerprint, so two runs with different
inputs never write over each other's outputs and a cached result always points at the outputs
that produced it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

PACKAGES = ("label_system", "tagger", "flows")
SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".csv")
# Flow configs are inputs (hashed by field), not code: editing one reruns only what it feeds.
NOT_CODE = (Path("flows") / "configs",)
_CHUNK = 1 << 20
# Task parameters that name where outputs go: keyed by path, never by content.
LOCATIONS = ("work_dir", "out_dir", "output")
P = ParamSpec("P")
R = TypeVar("R")


def hash_bytes_of(path: Path) -> str:
    """sha256 hex of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _hash_file_cached(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by (path, size, mtime) so a file is read once per process, and again if it changes.
    return hash_bytes_of(Path(path))


def fingerprint_path(path: Path) -> dict[str, str]:
    """A file: its sha256. A folder: sha256 of its sorted (relative path, size, mtime_ns).

    A path that does not exist counts as written (not resolved against the current folder).
    """
    given = path
    path = path.expanduser().resolve()
    if path.is_file():
        stat = path.stat()
        return {
            "file": str(path),
            "sha256": _hash_file_cached(str(path), stat.st_size, stat.st_mtime_ns),
        }
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = item.stat()
            digest.update(
                f"{item.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
        return {"dir": str(path), "listing_sha256": digest.hexdigest()}
    return {"missing": str(given)}


def fingerprint(value: Any) -> Any:
    """A JSON-able description of `value` that changes when its content changes.

    Paths are replaced by `fingerprint_path`, pydantic models by their fields (recursively, so
    a config's path fields are content-hashed too). Anything else that is not plain data is
    refused: a cache key over pickled DataFrames or tensors is what this module avoids.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return fingerprint_path(value)
    if isinstance(value, BaseModel):
        return {"model": type(value).__qualname__, "fields": fingerprint(value.model_dump())}
    if isinstance(value, Mapping):
        return {str(k): fingerprint(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        items = [fingerprint(v) for v in value]
        return sorted(items, key=json.dumps) if isinstance(value, set | frozenset) else items
    raise TypeError(
        f"cannot build a content cache key from a {type(value).__name__}; task inputs must be "
        "paths, pydantic configs or plain data (str, numbers, lists, dicts)"
    )


def _git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "nogit"
    return out.stdout.strip() or "nogit"


@functools.cache
def code_version() -> str:
    """`<package version>+<git commit[:12]>.<sources sha256[:12]>` of the installed code.

    The sources hash covers every .py and data file of label_system, tagger and flows (the
    shipped taxonomy and mappings included, the flow configs not), so an uncommitted edit
    changes the version too.
    """
    import flows

    version = importlib.metadata.version("album-tagger")
    root = Path(flows.__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root)
            if rel.suffix not in SOURCE_SUFFIXES or "__pycache__" in rel.parts:
                continue
            if any(rel.is_relative_to(skip) for skip in NOT_CODE):
                continue
            if path.is_file():
                digest.update(str(rel).encode() + b"\0")
                digest.update(path.read_bytes())
    return f"{version}+{_git_commit(root)[:12]}.{digest.hexdigest()[:12]}"


def input_key(stage: str, inputs: Mapping[str, Any], locations: tuple[str, ...] = ()) -> str:
    """sha256 hex over the stage name, the code version and the fingerprint of `inputs`.

    Inputs named in `locations` (where outputs go, such as `work_dir`) count by their path
    string only: their content changes while the flow writes into them.
    """
    keyed = {
        name: str(Path(value).expanduser().resolve()) if name in locations and value else value
        for name, value in inputs.items()
    }
    payload = json.dumps([stage, code_version(), fingerprint(keyed)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def stage_dir(work_dir: Path, stage: str, **inputs: Any) -> Path:
    """The output folder of `stage` for these inputs: `<work_dir>/<stage>/<key[:16]>`.

    `inputs` are content-fingerprinted like a task's inputs (keep output places out of them).
    """
    return Path(work_dir) / stage / input_key(stage, inputs)[:16]


@dataclass
class ContentHash(CachePolicy):
    """Prefect cache policy: the key is `input_key(task name, task inputs, locations)`.

    Use with `persist_result=True` (the cache record lives beside the persisted result).
    Task parameters named in `locations` are output places, keyed by path, not content.
    """

    locations: tuple[str, ...] = LOCATIONS

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return input_key(task_ctx.task.name, inputs, self.locations)


CONTENT_HASH = ContentHash()


def persisted(task: Task[P, R], work_dir: Path, *, refresh: bool = False) -> Task[P, R]:
    """`task` cached by `CONTENT_HASH`, its result persisted as JSON under `<work_dir>/results`.

    refresh: recompute and overwrite the cached result even when the key matches.
    """
    return task.with_options(
        cache_policy=CONTENT_HASH,
        persist_result=True,
        result_storage=Path(work_dir).resolve() / "results",
        result_serializer="json",
        refresh_cache=refresh,
    )
