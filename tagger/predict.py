"""Batch prediction API: `tagger.predict(inputs, model=...)` streams one record per input image.

Inputs are image paths, a folder (searched recursively for `IMAGE_EXTENSIONS`), or a manifest
(Parquet with `path` and optionally `image_id`). The model is a bundle directory, an MLflow model
URI such as "models:/tagger@champion", or a loaded `Bundle`. Every input yields exactly one
`PredictionRecord`: tags, or an error code and message (see `tagger.records`).

This module stays light to import (no torch): `import tagger` imports it to export `predict`.
The engines live in `tagger.predictor` (one machine) and `tagger.predict_ray` (Ray Data).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from label_system.taxonomy import Taxonomy
from tagger.images import DEFAULT_MAX_PIXELS
from tagger.records import (
    PredictionRecord,
    TagPrediction,
    open_writer,
    parts_dir,
    read_done_ids,
)

if TYPE_CHECKING:
    from tagger.bundle import Bundle

DEFAULT_MODEL = "models:/tagger@champion"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".heic", ".heif", ".avif", ".gif", ".bmp",
     ".tif", ".tiff"}
)  # fmt: skip
MANIFEST_SUFFIXES = (".parquet",)
Engine = Literal["local", "ray"]
Backend = Literal["torch", "onnx"]
WorkerKind = Literal["thread", "process"]

_CLASSIFIER, _PARENT = 0, 1  # evidence ranks in `TagSelector`

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
      device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
      engine: "local" (this process) or "ray" (a pool of model actors on Ray Data).
      ray_actors: model actors for the Ray engine (None = one per 2 CPUs of the cluster).
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
    device: str = "auto"
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    trust_pickle: bool = False
    engine: Engine = "local"
    ray_actors: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class InputItem:
    """One input image: `image_id` (the key records and resumes use) and its file `path`."""

    image_id: str
    path: str


# ---- inputs -----------------------------------------------------------------------------------


def iter_inputs(inputs: Inputs) -> Iterator[InputItem]:
    """The input images in a stable order, lazily (a folder or manifest is never listed whole).

    A str/Path names a folder (recursive, sorted, `IMAGE_EXTENSIONS` only), a manifest
    (`.parquet`: column `path`, optional `image_id`; relative paths are taken relative to the
    manifest's folder) or one image. Any other iterable holds image paths or `InputItem`s;
    a path's image_id is the path as given.
    """
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        if path.is_dir():
            yield from _iter_folder(path)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from _iter_manifest(path)
        else:
            yield InputItem(os.fspath(inputs), os.fspath(inputs))
        return
    for entry in inputs:
        if isinstance(entry, InputItem):
            yield entry
        elif isinstance(entry, str | os.PathLike):
            yield InputItem(os.fspath(entry), os.fspath(entry))
        else:
            raise TypeError(
                f"inputs: entry {entry!r} is a {type(entry).__name__}; expected a path or InputItem"
            )


def count_inputs(inputs: Inputs) -> int | None:
    """How many images `iter_inputs` yields, when that is cheap to know (for a progress bar)."""
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        if path.is_dir():
            return sum(1 for _ in _iter_folder(path))
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        return 1
    return len(inputs) if isinstance(inputs, Sequence) else None


def _iter_folder(folder: Path) -> Iterator[InputItem]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                path = os.path.join(root, name)
                yield InputItem(path, path)


def _iter_manifest(path: Path) -> Iterator[InputItem]:
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if "path" not in names:
        raise ValueError(f"{path}: manifest has no column 'path' (columns: {names})")
    columns = ["path"] + (["image_id"] if "image_id" in names else [])
    base = path.parent
    row = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=65536):
        data = batch.to_pydict()
        ids = data.get("image_id") or data["path"]
        for image_id, image_path in zip(ids, data["path"], strict=True):
            row += 1
            if not image_path:
                raise ValueError(f"{path}: row {row}: column 'path' is empty")
            full = image_path if os.path.isabs(image_path) else os.fspath(base / image_path)
            yield InputItem(str(image_id if image_id else image_path), full)


# ---- tag selection ----------------------------------------------------------------------------


class TagSelector:
    """Turns probabilities `[B, num_tags]` into tag predictions by thresholds and options.

    A tag is emitted when enabled (threshold not NaN), in an included category, and
    `prob >= max(threshold, min_confidence)` (float32 comparison, as calibration chose it).
    Parents (with `include_parents`) take the best score of their own and their predicted
    descendants'. Tags sort by score, highest first (a tie: the classifier's before a
    parent's, then column order); `max_tags` cuts the list.
    """

    def __init__(self, taxonomy: Taxonomy, thresholds: np.ndarray, options: PredictOptions):
        thresholds = np.asarray(thresholds, dtype=np.float32)
        if thresholds.shape != (len(taxonomy),):
            raise ValueError(
                f"thresholds have shape {thresholds.shape}; the taxonomy "
                f"{taxonomy.name!r} has {len(taxonomy)} tags"
            )
        tag_ids = taxonomy.tag_ids
        categories = [taxonomy.category_of(t) for t in tag_ids]
        allowed = np.ones(len(tag_ids), dtype=bool)
        if options.include_categories is not None:
            unknown = sorted(set(options.include_categories) - set(taxonomy.categories))
            if unknown:
                raise ValueError(
                    f"include_categories: unknown categories {unknown}; allowed: "
                    f"{sorted(taxonomy.categories)}"
                )
            allowed = np.array([c in options.include_categories for c in categories])
        self.emittable = ~np.isnan(thresholds) & allowed
        floor = np.float32(options.min_confidence)
        self.cut = np.where(self.emittable, np.maximum(thresholds, floor), np.inf)
        self.cut = self.cut.astype(np.float32)
        self.options = options
        self.tag_ids = tag_ids
        self.names = [taxonomy.display_name(t, options.language) for t in tag_ids]
        self.categories = categories
        self.ancestors = [taxonomy.ancestors(t) for t in tag_ids]
        self.ancestor_index = [np.asarray(taxonomy.indices(a), dtype=np.int64)
                               for a in self.ancestors]  # fmt: skip

    def __call__(self, probs: np.ndarray) -> list[tuple[TagPrediction, ...]]:
        """probs: float32 `[B, num_tags]` -> per image, its tags sorted by score."""
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != len(self.tag_ids):
            raise ValueError(f"probs must be [B, {len(self.tag_ids)}], got {probs.shape}")
        return [self._select(row) for row in probs]

    def _select(self, row: np.ndarray) -> tuple[TagPrediction, ...]:
        hits = np.flatnonzero(row >= self.cut)
        # tag column -> (score, evidence rank); at equal scores the classifier's tag sorts first
        chosen: dict[int, tuple[float, int]] = {int(i): (float(row[i]), _CLASSIFIER) for i in hits}
        if self.options.include_parents:
            for i in hits:
                for a in map(int, self.ancestor_index[i]):
                    if not self.emittable[a]:
                        continue  # disabled (NaN threshold) or not an included category
                    score, rank = chosen.get(a, (float(row[a]), _PARENT))
                    if rank == _PARENT:  # not predicted on its own: implied by this child
                        chosen[a] = (max(score, float(row[i])), _PARENT)
        order = sorted(chosen, key=lambda i: (-chosen[i][0], chosen[i][1], i))
        if self.options.max_tags is not None:
            order = order[: self.options.max_tags]
        return tuple(
            TagPrediction(
                id=self.tag_ids[i],
                name=self.names[i],
                score=chosen[i][0],
                category=self.categories[i],
                parents=self.ancestors[i],
                evidence="classifier" if chosen[i][1] == _CLASSIFIER else "parent",
            )
            for i in order
        )


# ---- the API ----------------------------------------------------------------------------------


def predict(
    inputs: Inputs,
    model: str | os.PathLike[str] | Bundle = DEFAULT_MODEL,
    **options: Any,
) -> Iterator[PredictionRecord]:
    """Tag images; yields one `PredictionRecord` per input, in input order, as they are ready.

    options: the fields of `PredictOptions` (max_tags, min_confidence, include_parents,
    include_categories, language, batch_size, workers, backend, engine, ...). Memory stays
    bounded: inputs are read lazily and only a few batches are in flight.

    >>> for record in predict("album/", "models:/tagger@champion", max_tags=5):  # doctest: +SKIP
    ...     print(record.image_id, [(t.name, round(t.score, 2)) for t in record.tags])
    """
    opts = PredictOptions(**options)
    bundle = load_model(model, trust_pickle=opts.trust_pickle)
    items = iter_inputs(inputs)
    if opts.engine == "ray":
        from tagger.predict_ray import predict_ray_items

        return predict_ray_items(items, bundle, opts)
    # heavy (torch) imports happen here, not when `import tagger` loads this module
    from tagger.predictor import predict_items

    return predict_items(items, bundle, opts)


def load_model(model: str | os.PathLike[str] | Bundle, *, trust_pickle: bool = False) -> Bundle:
    """A `Bundle` from a bundle directory or MLflow model URI (a `Bundle` passes through)."""
    from tagger.bundle import Bundle, load_bundle

    if isinstance(model, Bundle):
        return model
    return load_bundle(model if isinstance(model, str) else Path(model), trust_pickle=trust_pickle)


@dataclass
class PredictSummary:
    """Counts of a prediction job: images, tagged (no error), errors by code, images/s."""

    images: int = 0
    tagged: int = 0
    skipped: int = 0  # already in the output before this run (resume)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, record: PredictionRecord) -> None:
        self.images += 1
        if record.error is None:
            self.tagged += 1
        else:
            self.errors[record.error.code] = self.errors.get(record.error.code, 0) + 1

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_text(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"images {self.images}, tagged {self.tagged}, errors: {errors}, "
            f"skipped (done before) {self.skipped}; {self.seconds:.1f} s, "
            f"{self.images_per_s:.2f} images/s"
        )


def write_predictions(
    inputs: Inputs,
    model: str | os.PathLike[str] | Bundle,
    out: str | os.PathLike[str],
    *,
    mode: Literal["new", "resume", "overwrite"] = "new",
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> PredictSummary:
    """Run `predict` into an output file (.jsonl, .parquet or .csv), resumably.

    mode "resume" skips inputs whose image_id is already in `out` (a job killed hard, even
    mid-write, finishes with no duplicate and no missing record); "new" refuses an existing
    output; "overwrite" replaces it. Records reach the file batch by batch (JSONL, fsynced) or
    in parts of `chunk_size` records (Parquet, CSV), merged into `out` at the end.
    progress: called with the number of inputs just accounted for (done or skipped).
    """
    opts = PredictOptions(**options)
    bundle = load_model(model, trust_pickle=opts.trust_pickle)
    done = read_done_ids(out) if mode == "resume" else set()
    summary = PredictSummary()
    writer = open_writer(out, mode=mode, chunk_size=chunk_size)

    def todo() -> Iterator[InputItem]:
        for item in iter_inputs(inputs):
            if item.image_id in done:
                summary.skipped += 1
                if progress is not None:
                    progress(1)
                continue
            yield item

    start = time.perf_counter()
    pending: list[PredictionRecord] = []
    try:
        for record in predict(todo(), bundle, **opts.model_dump()):
            pending.append(record)
            summary.add(record)
            if progress is not None:
                progress(1)
            if len(pending) >= opts.batch_size:
                writer.write(pending)
                pending = []
        writer.write(pending)
    finally:
        summary.seconds = time.perf_counter() - start
    # on an exception the parts stay unmerged: a resume picks them up
    writer.close()
    return summary


# ---- command line -----------------------------------------------------------------------------


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `tagger predict INPUT... --model MODEL --out FILE`."""
    defaults = PredictOptions()
    parser.add_argument("inputs", nargs="+", help="a folder, a manifest (.parquet), or images")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundle directory or MLflow model URI (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="results file: .jsonl, .parquet or .csv"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted job: skip inputs already in --out",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode workers (default: from the CPU count; 0 = inline)",
    )
    parser.add_argument(
        "--worker-kind",
        choices=["process", "thread"],
        default=defaults.worker_kind,
        help="decode in processes (a crashing codec costs one image) or threads (a few "
        "percent faster, for trusted inputs)",
    )
    parser.add_argument(
        "--decode-timeout",
        type=float,
        default=defaults.decode_timeout,
        help="seconds before a hung image decode is given up (process workers; default "
        f"{defaults.decode_timeout:g})",
    )
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--engine", choices=["local", "ray"], default=defaults.engine)
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument("--backend", choices=["torch", "onnx"], default=defaults.backend)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--max-tags", type=int, default=None)
    parser.add_argument("--min-confidence", type=float, default=defaults.min_confidence)
    parser.add_argument("--include-parents", action="store_true")
    parser.add_argument("--include-categories", nargs="+", default=None, metavar="CATEGORY")
    parser.add_argument("--language", default=defaults.language)
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a bundle whose weights are a pickle (runs its code!)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=1000, help="records per Parquet/CSV part file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def prefer_passive_omp() -> None:
    """At a program's start, before torch loads: let idle OpenMP threads sleep, not spin.

    torch's OpenMP threads spin after each parallel region by default, taking the cores that
    the decode workers need; with PASSIVE they sleep. Measured on the shared 2-core machine
    (resnet50@224, 1 decode process): the model alone 4.6-4.8 -> 7.9-9.9 images/s, end to end
    3.9 -> 5.6-7.6. A no-op once torch is imported or when the user set the variable.
    Only for program entry points (the CLI, benchmarks); library code never touches os.environ.
    """
    if "torch" not in sys.modules:
        for key, value in OMP_ENV.items():
            os.environ.setdefault(key, value)


# glibc's malloc: never serve a request by mmap, never give the top of the heap back to the OS
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def prefer_heap_reuse() -> bool:
    """At a program's start: keep freed memory in the process for reuse (glibc only).

    By default glibc serves every block above 32 MB with a fresh mmap and unmaps it on free,
    so each resnet50 batch of 16 at 224 px faults in ~0.5 GB of activations anew: ~6,700 page
    faults and ~12 ms of kernel time per image, a fifth of the model step on the 2-core
    machine (the model alone: 33.8 -> 26.2 ms per image with reuse). The cost is that the
    process keeps its peak memory until it exits, which a batch job does anyway.
    Returns whether the setting was made; a no-op when the user set MALLOC_* or
    GLIBC_TUNABLES, or on a C library without mallopt. Program entry points only (the
    `tagger` console script, `python -m flows.demo`; deployments set `MALLOC_ENV` instead).
    """
    libc = _glibc()
    if libc is None or any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
        return False
    trim = int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"])
    return bool(libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1)


def release_free_memory() -> bool:
    """glibc `malloc_trim(0)`: give free heap memory back to the OS; False where unavailable."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def run_predict_command(args: argparse.Namespace) -> int:
    """Run `tagger predict`: progress bar on stderr, summary on stdout; returns the exit code."""
    from tqdm import tqdm

    prefer_passive_omp()

    # each argument is a folder, a manifest or an image, expanded in the order given
    inputs = itertools.chain.from_iterable(iter_inputs(a) for a in args.inputs)
    options = {
        "batch_size": args.batch_size,
        "workers": args.workers,
        "worker_kind": args.worker_kind,
        "decode_timeout": args.decode_timeout,
        "threads": args.threads,
        "engine": args.engine,
        "ray_actors": args.ray_actors,
        "backend": args.backend,
        "device": args.device,
        "max_tags": args.max_tags,
        "min_confidence": args.min_confidence,
        "include_parents": args.include_parents,
        "include_categories": args.include_categories,
        "language": args.language,
        "trust_pickle": args.trust_pickle,
    }
    mode: Literal["new", "resume", "overwrite"] = (
        "resume" if args.resume else "overwrite" if args.overwrite else "new"
    )
    counts = [count_inputs(a) for a in args.inputs]
    total = None if None in counts else sum(c or 0 for c in counts)
    if mode == "new" and (args.out.exists() or parts_dir(args.out).exists()):
        print(f"tagger predict: {args.out} exists; pass --resume or --overwrite", file=sys.stderr)
        return 2
    with tqdm(total=total, unit="img", file=sys.stderr, disable=args.no_progress) as bar:
        summary = write_predictions(
            inputs, args.model, args.out, mode=mode, chunk_size=args.chunk_size,
            progress=bar.update, **options,
        )  # fmt: skip
    print(f"predict: {summary.to_text()} -> {args.out}")
    return 0
