"""The Ray Data engine: the same predictor in a pool of model actors over a dataset of paths.

    records = tagger.predict(paths, "models:/tagger@champion", engine="ray", ray_actors=8)
    tagger predict photos/ --model bundle/ --out tags.parquet --engine ray

Each actor loads the bundle once (shipped through the object store), decodes its batch of
paths and runs the model (`tagger.inference.engine.Predictor`, the local engine's code), and returns
the records as JSON, so the records are the local engine's. Connects to the cluster named by
RAY_ADDRESS, or starts a local one (and stops it when the job ends). Records come back in
the order Ray finishes them, not input order; the driver holds the list of paths (about
100 bytes per image), never the images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from tagger.bundle.model_bundle import Bundle
from tagger.inference.options import InputItem, PredictOptions
from tagger.inference.records import PredictionRecord
from tagger.inference.runtime import MALLOC_ENV, OMP_ENV


class RayPredictor:
    """A model actor: a batch of `{image_id, path}` -> a batch of `{record}` (JSON)."""

    def __init__(self, bundle_ref: list[Any], options: dict[str, Any], threads: int) -> None:
        import ray
        import torch

        from tagger.inference.engine import Predictor

        torch.set_num_threads(threads)  # this actor's own process: its CPU share
        bundle = ray.get(bundle_ref[0])
        opts = PredictOptions(**options).model_copy(update={"workers": 0, "threads": None})
        self.predictor = Predictor(bundle, opts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            InputItem(str(i), str(p)) for i, p in zip(batch["image_id"], batch["path"], strict=True)
        ]
        decoded = [self.predictor.decode_fn(item) for item in items]
        records = self.predictor.predict_decoded(decoded)
        return {"record": np.array([json.dumps(r.to_dict()) for r in records], dtype=object)}


def predict_ray_items(
    items: Iterable[InputItem], bundle: Bundle, options: PredictOptions
) -> Iterator[PredictionRecord]:
    """Records for `items` from a pool of `RayPredictor` actors (see the module docstring)."""
    import ray

    rows = [{"image_id": item.image_id, "path": item.path} for item in items]
    if not rows:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        actors = options.ray_actors or max(1, cpus // 2)
        cpus_per_actor = max(1, cpus // actors)
        dataset = ray.data.from_items(rows).map_batches(
            RayPredictor,
            fn_constructor_kwargs={
                "bundle_ref": [ray.put(bundle)],
                "options": options.model_dump(),
                "threads": options.threads or cpus_per_actor,
            },
            batch_size=options.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
            # read at the actor's start, before torch (OpenMP) and malloc (glibc) initialise
            runtime_env={"env_vars": OMP_ENV | MALLOC_ENV},
        )
        for row in dataset.iter_rows():
            yield PredictionRecord.from_dict(json.loads(row["record"]))
    finally:
        if started:
            ray.shutdown()
