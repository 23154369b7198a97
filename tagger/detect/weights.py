"""Reading a detector's weights file: safetensors always, a pickle only when trusted."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class DetectorWeightsError(ValueError):
    """A weights file that cannot or must not be loaded; names the file and what is allowed."""


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors`, or from a pickle (`.pt`, `.pth` ...) with
    `trust_pickle=True` (unpickling can run arbitrary code). A pickled checkpoint holding the
    weights under "state_dict" or "model" is unwrapped."""
    path = Path(path)
    if not path.exists():
        raise DetectorWeightsError(f"{path}: detector weights file not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix not in PICKLE_SUFFIXES:
        raise DetectorWeightsError(
            f"{path}: unknown weights format {path.suffix!r}; allowed: .safetensors, or "
            f"{list(PICKLE_SUFFIXES)} with trust_pickle"
        )
    if not trust_pickle:
        raise DetectorWeightsError(
            f"{path}: weights are a pickle file ({path.suffix}); unpickling can run arbitrary "
            "code. Convert them to .safetensors, or set trust_pickle if you trust their origin."
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state:
            state = state[key]
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise DetectorWeightsError(f"{path}: no state dict inside (got {type(state).__name__})")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
