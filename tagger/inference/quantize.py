"""int8 inference: the bundle's ONNX export, statically quantized by ONNX Runtime, cached.

`quantize_static` (QDQ format, weights int8 per output channel, activations uint8, min/max
ranges) is calibrated on a fixed set of images: the bundle's `calibration_images` (drawn from
the training folds when the bundle was built and verified, see `tagger.inference.precision`),
read through `ImageCalibrationReader` with the same uint8 -> normalised float conversion as
the backends. ONNX Runtime runs the QDQ graph on its int8 kernels (VNNI / AMX-INT8 where the
CPU has them, AVX2 elsewhere).

Two settings keep int8 close to fp32 on every CPU:

- weights in 7 bits (`reduce_range`): AVX2 multiplies u8 x s8 pairs into int16, which
  saturates with full-range weights (ONNX Runtime's quantization notes); with 7-bit weights
  (|w| <= 64, 2 x 255 x 64 < 2^15) no sum overflows, so the integer products are exact on AVX2
  as they are on VNNI / AMX, and a check made on one kind of machine speaks for the other;
- the classifier head (the last Gemm / MatMul / Conv before the output) stays fp32: it is a
  fraction of a percent of the compute, and its rounding lands directly on the scores that the
  thresholds cut.

Measured with `bench/int8_quality.py` (two resnet18@96 trained 6 epochs on the shared data,
one on clean and one on noisy labels; checked on fold 9, 231 images x 148 tags; AVX2 CPU), ONNX
Runtime's default settings against these: decision agreement with fp32 0.9972 / 0.9965 ->
0.9994 / 0.9989, mAP difference -0.016 / -0.013 -> -0.001 / -0.001; the defaults fail the
bundle check on both models, these settings pass on both, and neither setting alone passes on
both.

Quantized models are cached beside the fp32 exports (`onnx_cache_dir`): the key is the fp32
export's (weights, model config, size, opset, torch) plus "int8", the digest of the
calibration images, the quantization settings and the ONNX Runtime version, so a different
calibration set or runtime never reuses a stale model. Quantization itself is deterministic
for a given model, calibration set and runtime: the model a job runs is the model the
bundle's check verified.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tagger.bundle.model_bundle import Bundle, Preprocessing, preprocessing_of
from tagger.inference.onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    cached_export,
    export_key,
    onnx_cache_dir,
)

QUANT_SETTINGS = "qdq;per_channel;act=QUInt8;weight=QInt8;reduce_range;head=fp32;minmax;v2"
HEAD_OPS = frozenset({"Gemm", "MatMul", "Conv"})
CALIBRATION_BATCH = 8


class NoCalibrationImages(ValueError):
    """int8 needs calibration images, and the bundle has none."""


def normalize_pixels(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 `[B, S, S, 3]` -> normalised float32 `[B, 3, S, S]` (as the backends do)."""
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(1, 3, 1, 1)
    x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
    return np.asarray((x / np.float32(255.0) - mean) / std, dtype=np.float32)


def calibration_digest(pixels: np.ndarray) -> str:
    """sha256 (32 hex) of a calibration set: shape and bytes of the uint8 images."""
    h = hashlib.sha256(f"{pixels.dtype}:{tuple(pixels.shape)}".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()[:32]


def _reader_base() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


def calibration_reader(
    pixels: np.ndarray, prep: Preprocessing, batch: int = CALIBRATION_BATCH
) -> Any:
    """An ONNX Runtime `CalibrationDataReader` over uint8 images `[N, S, S, 3]`."""

    class ImageCalibrationReader(_reader_base()):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (
                pixels[i : i + batch] for i in range(0, len(pixels), batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._batches, None)
            return None if chunk is None else {INPUT_NAME: normalize_pixels(chunk, prep)}

    return ImageCalibrationReader()


def check_calibration_images(pixels: np.ndarray | None, prep: Preprocessing) -> np.ndarray:
    """The calibration images as uint8 `[N, S, S, 3]`, or a clear error."""
    if pixels is None or len(pixels) == 0:
        raise NoCalibrationImages(
            "int8 needs calibration images, and this bundle has none (bundles built before "
            "precision verification); rebuild it with the retrain flow, or use fp32 / bf16"
        )
    s = prep.image_size
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
        raise ValueError(
            f"calibration images: {pixels.dtype} {pixels.shape}, expected uint8 [N, {s}, {s}, 3]"
        )
    return pixels


def head_nodes(model: Any) -> list[str]:
    """Names of the weighted nodes (Gemm / MatMul / Conv) nearest each graph output, walking
    back through the unweighted ones (Sigmoid, Flatten, ...): the classifier head."""
    producer = {out: node for node in model.graph.node for out in node.output}
    heads: list[str] = []
    for output in model.graph.output:
        todo, seen = [output.name], set()
        while todo:
            node = producer.get(todo.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in HEAD_OPS:
                heads.append(node.name)
            else:
                todo.extend(node.input)
    return heads


def _name_nodes(path: Path) -> Any:
    """The ONNX model at `path`, every node named (quantization excludes nodes by name)."""
    import onnx

    model = onnx.load(os.fspath(path))
    if any(not node.name for node in model.graph.node):
        for k, node in enumerate(model.graph.node):
            node.name = node.name or f"{node.op_type}_{k}"
        onnx.save(model, os.fspath(path))
    return model


def quantize_onnx(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    pixels: np.ndarray,
    prep: Preprocessing,
    *,
    reduce_range: bool = True,
    fp32_head: bool = True,
) -> Path:
    """Quantize an fp32 ONNX model (static, QDQ, per-channel) calibrated on `pixels`; by
    default with 7-bit weights and the head in fp32 (the module notes; the flags exist to
    measure what each setting buys, `bench/int8_quality.py`)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="tagger-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + graph fusions first, as ONNX Runtime recommends for quantization
        quant_pre_process(os.fspath(model_path), os.fspath(prepared), skip_symbolic_shape=True)
        head = head_nodes(_name_nodes(prepared)) if fp32_head else []
        quantize_static(
            prepared,
            Path(tmp) / "int8.onnx",
            calibration_reader(pixels, prep),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=reduce_range,
            nodes_to_exclude=head,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        (Path(tmp) / "int8.onnx").replace(out_path)
    return out_path


def int8_key(bundle: Bundle, pixels: np.ndarray, opset: int = DEFAULT_OPSET) -> str:
    """A digest naming the bundle's int8 model: the fp32 export key, the calibration set, the
    quantization settings and the ONNX Runtime version."""
    import onnxruntime

    h = hashlib.sha256(export_key(bundle, opset).encode())
    h.update(f"precision=int8;calibration={calibration_digest(pixels)}".encode())
    h.update(f"settings={QUANT_SETTINGS};onnxruntime={onnxruntime.__version__}".encode())
    return h.hexdigest()[:32]


def cached_int8_export(
    bundle: Bundle,
    pixels: np.ndarray | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """The bundle's int8 ONNX model in the cache, quantized on the first use.

    pixels: calibration images uint8 `[N, S, S, 3]` (default: the bundle's own).
    """
    prep = preprocessing_of(bundle)
    pixels = check_calibration_images(bundle.calibration_images if pixels is None else pixels, prep)
    folder = onnx_cache_dir(cache_dir)
    path = folder / f"{int8_key(bundle, pixels, opset)}.int8.onnx"
    if path.is_file():
        return path
    fp32 = cached_export(bundle, cache_dir, opset=opset)
    tmp = Path(tempfile.mkdtemp(prefix="tagger-int8-", dir=folder))
    try:
        quantize_onnx(fp32, tmp / "model.onnx", pixels, prep).replace(path)
    finally:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    return path
