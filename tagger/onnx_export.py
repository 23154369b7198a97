"""ONNX export of a bundle's network, and an ONNX Runtime backend that gives the same tags.

The export takes float32 `images [B, 3, S, S]` (normalised, dynamic batch) to `logits
[B, num_tags]`. `OnnxBackend` does the same uint8 -> normalised float conversion as the torch
backend, so records match the PyTorch ones (scores within ~1e-5 on CPU).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tagger.bundle import Bundle, Preprocessing
from tagger.predictor import preprocessing_of

DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


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


class OnnxBackend:
    """ONNX Runtime inference: uint8 `[B, S, S, 3]` -> probs float32 `[B, num_tags]`."""

    def __init__(self, model_path: str | os.PathLike[str], prep: Preprocessing,
                 threads: int | None = None) -> None:  # fmt: skip
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or 0  # 0 = ONNX Runtime's default (all cores)
        opts.inter_op_num_threads = 1
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
    bundle: Bundle, *, threads: int | None = None, model_path: str | os.PathLike[str] | None = None
) -> OnnxBackend:
    """An ONNX Runtime backend for a bundle: from `model_path`, or exported to a temp file.

    The session holds the model in memory, so the temp file is deleted right away.
    """
    prep = preprocessing_of(bundle)
    if model_path is not None:
        return OnnxBackend(model_path, prep, threads)
    with tempfile.TemporaryDirectory(prefix="tagger-onnx-") as tmp:
        path = export_bundle_onnx(bundle, Path(tmp) / "model.onnx")
        return OnnxBackend(path, prep, threads)
