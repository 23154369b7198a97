"""Batch prediction API: `tagger.predict(inputs, model=...)` streams one record per input image.

Inputs are image paths, a folder (searched recursively for `IMAGE_EXTENSIONS`), or a manifest
(Parquet with `path` and optionally `image_id`). The model is a bundle directory, an MLflow model
URI such as "models:/tagger@champion", or a loaded `Bundle`. Every input yields exactly one
`PredictionRecord`: tags, or an error code and message (see `tagger.inference.records`).

This module stays light to import (no torch): `import tagger` imports it to export `predict`.
The engines live in `tagger.inference.engine` (one machine) and `tagger.inference.ray_engine`
(Ray Data); both are imported only when a job runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tagger.inference.inputs import iter_inputs
from tagger.inference.options import DEFAULT_MODEL, InputItem, Inputs, PredictOptions
from tagger.inference.records import PredictionRecord, open_writer, read_done_ids

if TYPE_CHECKING:
    from tagger.bundle.model_bundle import Bundle


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
        from tagger.inference.ray_engine import predict_ray_items

        return predict_ray_items(items, bundle, opts)
    # heavy (torch) imports happen here, not when `import tagger` loads this module
    from tagger.inference.engine import predict_items

    return predict_items(items, bundle, opts)


def load_model(model: str | os.PathLike[str] | Bundle, *, trust_pickle: bool = False) -> Bundle:
    """A `Bundle` from a bundle directory or MLflow model URI (a `Bundle` passes through)."""
    from tagger.bundle.model_bundle import Bundle
    from tagger.bundle.resolve import load_bundle

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
            f"skipped (done before) {self.skipped}; tagging {self.seconds:.1f} s, "
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


def predict_ray(
    inputs: Inputs, model: str | os.PathLike[str] | Bundle, **options: Any
) -> Iterator[PredictionRecord]:
    """`tagger.predict` on Ray Data: the same inputs, options and records.

    >>> for record in predict_ray("album/", "bundle/", ray_actors=4):  # doctest: +SKIP
    ...     print(record.image_id, [t.name for t in record.tags])
    """
    return predict(inputs, model, **{**options, "engine": "ray"})
