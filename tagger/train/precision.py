"""Reduced-precision arithmetic: what the hardware supports, and autocast for a device.

bf16 autocast on a CPU pays off only where the CPU has bf16 units (AVX-512 BF16 or AMX: oneDNN
then runs convolutions and matmuls in bf16, 2-2.6x faster than fp32 for ResNets on two cores);
elsewhere oneDNN emulates bf16 and it is slower than fp32. int8 (ONNX Runtime's quantized
kernels) is fastest with int8 dot products (VNNI, AMX-INT8, Arm's dot product), and still about
twice as fast as fp32 with AVX2's u8 x s8 multiply-add (`bench/predict_throughput.py`,
resnet50@224 on two AVX2-only AMD EPYC cores: 52-75 core-ms per image int8 against 117-135 torch
fp32). Support is read from torch's own checks
(`torch.backends.mkldnn`, `torch.cpu._is_avx512_bf16_supported`, `_is_amx_tile_supported`),
with the kernel's CPU flags (/proc/cpuinfo) as a second source.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuSupport:
    """The CPU's matrix units (True = present), and where that was read from."""

    bf16: bool  # AVX-512 BF16 or AMX-BF16 (and oneDNN in torch to use them)
    amx: bool  # AMX tiles (bf16 and int8 matrix multiply)
    int8_dot: bool  # AVX-512 VNNI, AVX-VNNI, AMX-INT8 or Arm dot product: u8 x s8 dot products
    flags: frozenset[str]
    int8_simd: bool = False  # AVX2: u8 x s8 multiply-add into int16 (ONNX Runtime's AVX2 kernels)

    @property
    def int8(self) -> bool:
        """Whether ONNX Runtime's int8 kernels beat fp32 here (dot-product units or AVX2)."""
        return self.int8_dot or self.int8_simd

    def describe(self) -> str:
        units = [name for name, on in (("bf16", self.bf16), ("amx", self.amx),
                                       ("int8 dot products", self.int8_dot),
                                       ("avx2 int8", self.int8_simd and not self.int8_dot),
                                       ) if on]  # fmt: skip
        return ", ".join(units) if units else "no bf16 units, no int8 kernels (AVX2 / VNNI)"


def cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty elsewhere)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def _torch_check(name: str) -> bool:
    check = getattr(torch.cpu, name, None)
    try:
        return bool(check()) if check is not None else False
    except Exception:  # a private helper that changed or failed: fall back on the flags
        return False


@functools.cache
def cpu_support() -> CpuSupport:
    """The CPU's bf16 / AMX / int8 units (cached for the process)."""
    flags = cpu_flags()
    amx = "amx_tile" in flags or _torch_check("_is_amx_tile_supported")
    bf16_units = (
        bool({"avx512_bf16", "amx_bf16"} & flags)
        or _torch_check("_is_avx512_bf16_supported")
        or _torch_check("_is_amx_tile_supported")
    )
    mkldnn = torch.backends.mkldnn.is_available()
    int8_dot = (
        bool({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"} & flags)
        or _torch_check("_is_vnni_supported")
        or _torch_check("_is_avx512_vnni_supported")  # the name some torch versions use
    )
    int8_simd = "avx2" in flags or _torch_check("_is_avx2_supported")
    return CpuSupport(
        bf16=bf16_units and mkldnn, amx=amx, int8_dot=int8_dot, flags=flags, int8_simd=int8_simd
    )


def bf16_supported(device: str | torch.device) -> bool:
    """Whether bf16 autocast runs on fast units on `device` (CUDA: Ampere or newer)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_support().bf16
    return False


def autocast(device: str | torch.device, precision: Precision) -> AbstractContextManager[Any]:
    """`torch.autocast` for bf16 on the device's type ("cpu" or "cuda"); fp32: no change."""
    if precision == "fp32":
        return nullcontext()
    if precision != "bf16":
        raise ValueError(f"autocast: precision {precision!r}; torch runs 'fp32' or 'bf16'")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def manifest_pixels(
    manifest: pd.DataFrame,
    preprocessing: dict[str, Any],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """The eval view of the manifest's rows as uint8 `[N, S, S, 3]` (what a prediction job
    feeds its backend), read from the cache like `tagger.train.predictions.predict_manifest`."""
    from tagger.train.predictions import eval_loader

    size = int(preprocessing["image_size"])
    if len(manifest) == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    loader = eval_loader(manifest, preprocessing, cache_dir=cache_dir, batch_size=batch_size)
    chunks = [batch[0].permute(0, 2, 3, 1).contiguous().numpy() for batch in loader]
    return np.concatenate(chunks).astype(np.uint8, copy=False)
