"""ONNX export of a bundle's network, and an ONNX Runtime backend that gives the same tags.

The export takes float32 `images [B, 3, S, S]` (normalised, dynamic batch) to `logits
[B, num_tags]`. `OnnxBackend` does the same uint8 -> normalised float conversion as the torch
backend, so records match the PyTorch ones (scores within ~1e-5 on CPU).

Exports are cached (`onnx_cache_dir`), keyed by a digest of the weights, the model config,
the image size, the opset and the torch version: a resnet50 export costs ~1.3 s and ~100 MB
of peak memory, which a job of a few hundred photos should not pay every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tagger.bundle.model_bundle import Bundle, Preprocessing, preprocessing_of

DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_CACHE = Path("~/.cache/album-tagger/onnx")
CACHE_ENV = "TAGGER_ONNX_CACHE"


def export_onnx(
    model: nn.Module, image_size: int, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET
) -> Path:
    """Write `model` (eval mode) as ONNX with a dynamic batch axis; returns the path.

    Uses the TorchScript-based exporter (`dynamo=False`): it needs no extra package and
    handles timm CNNs; the file is written to a temp name and renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    model = model.eval().cpu()
    dummy = torch.zeros(2, 3, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    tmp.replace(path)
    return path


def export_bundle_onnx(bundle: Bundle, path: str | os.PathLike[str]) -> Path:
    """Export a bundle's network at its preprocessing image size."""
    prep = preprocessing_of(bundle)
    return export_onnx(bundle.create_model(), prep.image_size, path)


def onnx_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where exports are cached: `cache_dir`, else `$TAGGER_ONNX_CACHE`, else ~/.cache/..."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def export_key(bundle: Bundle, opset: int = DEFAULT_OPSET) -> str:
    """A digest naming a bundle's export: weights, model config, image size, opset, torch."""
    h = hashlib.sha256()
    h.update(json.dumps(bundle.model_config.model_dump(mode="json"), sort_keys=True).encode())
    h.update(f"size={preprocessing_of(bundle).image_size};opset={opset}".encode())
    h.update(f"torch={torch.__version__}".encode())
    if bundle.weights_sha256:  # loaded from disk: the file's verified digest stands for it
        h.update(f"weights={bundle.weights_sha256}".encode())
        return h.hexdigest()[:32]
    for name in sorted(bundle.state_dict):
        tensor = bundle.state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def cached_export(
    bundle: Bundle, cache_dir: str | os.PathLike[str] | None = None, *, opset: int = DEFAULT_OPSET
) -> Path:
    """The bundle's ONNX file in the cache, exported on the first use (atomic rename, so
    concurrent jobs at worst export twice, never read a half-written file)."""
    path = onnx_cache_dir(cache_dir) / f"{export_key(bundle, opset)}.onnx"
    if path.is_file():
        return path
    prep = preprocessing_of(bundle)
    tmp = Path(tempfile.mkdtemp(prefix="tagger-onnx-", dir=_mkdir(path.parent)))
    try:
        export_onnx(bundle.create_model(), prep.image_size, tmp / "model.onnx", opset=opset)
        (tmp / "model.onnx").replace(path)
    finally:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    return path


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class OnnxBackend:
    """ONNX Runtime inference: uint8 `[B, S, S, 3]` -> probs float32 `[B, num_tags]`.

    spinning=False stops idle intra-op threads from busy-waiting: what a job wants when its
    decode workers share the cores (a spinning pool takes their CPU time between calls).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        prep: Preprocessing,
        threads: int | None = None,
        *,
        spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # 0 = ONNX Runtime's default: one per core of the machine, whatever the affinity
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(
            os.fspath(model_path), opts, providers=["CPUExecutionProvider"]
        )
        self.mean = np.asarray(prep.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(prep.std, dtype=np.float32).reshape(1, 3, 1, 1)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
        x = (x / np.float32(255.0) - self.mean) / self.std
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return torch.sigmoid(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy()


def create_onnx_backend(
    bundle: Bundle,
    *,
    threads: int | None = None,
    model_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    spinning: bool = True,
) -> OnnxBackend:
    """An ONNX Runtime backend for a bundle: from `model_path`, or from the export cache
    (`cached_export`; exported there on the first use)."""
    prep = preprocessing_of(bundle)
    path = model_path if model_path is not None else cached_export(bundle, cache_dir)
    return OnnxBackend(path, prep, threads, spinning=spinning)
