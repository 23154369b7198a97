"""What a prediction job is given: its options, its input items, and the names they use.

The leaf of `tagger.inference`: every other module of the stage imports these, none of them is
imported here (no torch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tagger.data.images import DEFAULT_MAX_PIXELS

DEFAULT_MODEL = "models:/tagger@champion"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".heic", ".heif", ".avif", ".gif", ".bmp",
     ".tif", ".tiff"}
)  # fmt: skip
MANIFEST_SUFFIXES = (".parquet",)
Engine = Literal["local", "ray"]
Backend = Literal["torch", "onnx"]
WorkerKind = Literal["thread", "process"]
PrecisionOption = Literal["auto", "fp32", "bf16", "int8"]

Inputs = str | os.PathLike[str] | Iterable["str | os.PathLike[str] | InputItem"]


class PredictOptions(BaseModel):
    """Options of a prediction job; defaults in one place.

    Tag selection (in the style of commercial labelling APIs):
      max_tags: keep at most this many tags per image, highest scores first (None = all).
      min_confidence: a tag needs `score >= max(threshold[tag], min_confidence)`; tags whose
        bundle threshold is NaN are disabled and never emitted.
      include_parents: also emit the ancestors of predicted tags (evidence "parent").
      include_categories: only emit tags of these category ids (None = all).
      language: display-name language (falls back to English per tag).
    Runtime:
      batch_size: images per inference step.
      workers: decode workers (None = automatic from the CPU count; 0 = decode inline).
      worker_kind: "process" (a decoder that crashes the interpreter, e.g. a codec segfault
        on a hostile file, costs that image only, not the job) or "thread" (Pillow decodes
        without the GIL and nothing is copied between processes: 2-4% more images/s on two
        cores, ~8% with 15 workers feeding a GPU; for trusted inputs).
      decode_timeout: seconds one image may take in a decode process once it is the oldest in
        flight (a hung codec); then it gets a "decode_failed" record and the workers are
        restarted (None = wait for ever; threads cannot be stopped, so they never time out).
      threads: intra-op threads of the backend (None = leave torch's setting / all cores).
      backend: "torch", or "onnx" (exported from the bundle, run by ONNX Runtime).
      precision: "fp32", "bf16" (torch autocast, CPU with bf16 units or CUDA), "int8" (ONNX
        Runtime static quantization, CPU), or "auto": the fastest the machine supports among
        those the bundle's check against fp32 passed (`tagger.inference.precision`).
      device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
      engine: "local" (this process) or "ray" (a pool of model actors on Ray Data).
      ray_actors: model actors for the Ray engine (None = one per 2 CPUs of the cluster).
      detector: when a bundle with a detector runs it: None (the bundle's gate), "gated",
        "always" or "never" (classifier only; fused tags take their classifier-only score).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tags: int | None = Field(default=None, ge=1)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    include_parents: bool = False
    include_categories: tuple[str, ...] | None = None
    language: str = "en"
    batch_size: int = Field(default=16, ge=1)
    workers: int | None = Field(default=None, ge=0)
    worker_kind: WorkerKind = "process"
    decode_timeout: float | None = Field(default=120.0, gt=0)
    threads: int | None = Field(default=None, ge=1)
    backend: Backend = "torch"
    precision: PrecisionOption = "auto"
    device: str = "auto"
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    trust_pickle: bool = False
    engine: Engine = "local"
    ray_actors: int | None = Field(default=None, ge=1)
    detector: Literal["gated", "always", "never"] | None = None


@dataclass(frozen=True)
class InputItem:
    """One input image: `image_id` (the key records and resumes use) and its file `path`."""

    image_id: str
    path: str
