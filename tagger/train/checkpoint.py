"""Training checkpoints: a directory with weights as safetensors and the rest loadable safely.

Layout of a checkpoint directory:

    model.safetensors   model weights (state_dict)
    ema.safetensors     EMA weights, when EMA is on
    state.pt            optimizer, scheduler, scaler, RNG states, epoch, step; only tensors and
                        primitive containers, so `torch.load(..., weights_only=True)` reads it
    meta.json           epoch, metrics, model config, tag ids (what a model bundle needs)

Directories are written beside the target and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass
class Checkpoint:
    """In-memory checkpoint: weights, training state (tensors + primitives) and metadata."""

    model: dict[str, torch.Tensor]
    state: dict[str, Any]
    meta: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = field(default=None)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants dense, unshared tensors; channels-last weights are not contiguous
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def write_checkpoint(checkpoint: Checkpoint, directory: str | Path) -> Path:
    """Write `checkpoint` to `directory` atomically (replacing an older one there)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_contiguous(checkpoint.model), str(tmp / MODEL_FILE))
    if checkpoint.ema is not None:
        save_file(_contiguous(checkpoint.ema), str(tmp / EMA_FILE))
    torch.save(checkpoint.state, tmp / STATE_FILE)
    (tmp / META_FILE).write_text(json.dumps(checkpoint.meta, indent=2, sort_keys=True))
    _replace_dir(tmp, directory)
    return directory


def copy_checkpoint(source: str | Path, directory: str | Path) -> Path:
    """Copy a checkpoint directory (hard links where possible: files are never rewritten)."""
    source, directory = Path(source), Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)

    def link_or_copy(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            return shutil.copy2(src, dst)

    shutil.copytree(source, tmp, copy_function=link_or_copy)
    _replace_dir(tmp, directory)
    return directory


def _replace_dir(tmp: Path, directory: Path) -> None:
    old = directory.with_name(directory.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)


def read_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint directory written by `write_checkpoint` (no pickle executed)."""
    directory = Path(directory)
    if not (directory / MODEL_FILE).exists():
        raise FileNotFoundError(f"not a checkpoint directory (no {MODEL_FILE}): {directory}")
    device = str(map_location)
    ema_path = directory / EMA_FILE
    return Checkpoint(
        model=load_file(str(directory / MODEL_FILE), device=device),
        ema=load_file(str(ema_path), device=device) if ema_path.exists() else None,
        state=torch.load(directory / STATE_FILE, map_location=map_location, weights_only=True),
        meta=json.loads((directory / META_FILE).read_text()),
    )


def read_checkpoint_weights(
    directory: str | Path, prefer_ema: bool = True
) -> dict[str, torch.Tensor]:
    """Weights to deploy from a checkpoint: the EMA weights when present and preferred."""
    directory = Path(directory)
    name = EMA_FILE if prefer_ema and (directory / EMA_FILE).exists() else MODEL_FILE
    if not (directory / name).exists():
        raise FileNotFoundError(f"not a checkpoint directory (no {name}): {directory}")
    return load_file(str(directory / name))


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint (epoch, metrics, model config, tag ids)."""
    result: dict[str, Any] = json.loads((Path(directory) / META_FILE).read_text())
    return result


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU and CUDA, numpy, python) as tensors and primitives."""
    kind, keys, pos, has_gauss, gauss = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def _restore_host_rng(state: dict[str, Any]) -> None:
    n, p = state["numpy"], state["python"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNGs from `capture_rng_state()` output."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    _restore_host_rng(state)


@contextmanager
def scoped_rng(seed: int, cuda_devices: list[int] | None = None) -> Iterator[None]:
    """Seed torch, numpy and python RNGs for a block and give the caller's states back after.

    Training seeds and restores global RNGs (model init and dropout use torch's); this keeps
    that from leaking into the calling code.
    """
    saved = capture_rng_state()
    with torch.random.fork_rng(devices=cuda_devices or []):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            _restore_host_rng(saved)
