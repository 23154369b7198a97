"""The cross-fit stage: out-of-fold probabilities of every labelled image, cached by content.

    stage(crossfit_predictions)(cfg.crossfit, cfg.train, data, work_dir)  # in flows/retrain.py

One Prefect task: read the manifest, call `tagger.train.crossfit.cross_fit`, write
`<work_dir>/crossfit/<key>/oof_predictions.parquet`. The key hashes the manifest's content, the
cross-fit config, the training config and the code version (`flows.caching`), so the k models
train again only when one of them changes; label cleaning and calibration both read the file.
Within a run, each finished model's scores are kept (`model_<m>.parquet`): a stopped run resumes
at the next model.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict

from flows.caching import stage_dir
from flows.stages import Assembled, training_config
from tagger.train.crossfit import CrossFitConfig
from tagger.train.training import TrainConfig

OOF_FILE = "oof_predictions.parquet"


class CrossFitStage(CrossFitConfig):
    """The retrain config's `crossfit` section: `enabled` plus `CrossFitConfig`.

    Off by default (k models cost k trainings). On: calibration reads the out-of-fold
    probabilities of every fold but the held-out one and checks its thresholds on the final
    model's held-out fold (see flows/retrain.py).
    """

    enabled: bool = False

    def library_config(self) -> CrossFitConfig:
        """The `CrossFitConfig` part."""
        return CrossFitConfig.model_validate(self.model_dump(exclude={"enabled"}))


class CrossFitted(BaseModel):
    """The out-of-fold predictions file and how it was made."""

    model_config = ConfigDict(frozen=True)

    predictions: Path
    models: list[list[int]]  # training folds of each model
    folds: list[int]  # folds scored (each by a model that never saw it)
    images: int


@task(name="crossfit")
def crossfit_predictions(
    config: CrossFitConfig, train: TrainConfig, data: Assembled, work_dir: Path
) -> CrossFitted:
    """Train one model per fold group on the other folds; score every image out of fold."""
    from tagger.train.crossfit import cross_fit
    from tagger.train.predictions import write_predictions
    from tagger.train.training import load_training_inputs

    out = stage_dir(work_dir, "crossfit", config=config, train=train, data=data)
    cfg = training_config(train, data, out)
    manifest, taxonomy = load_training_inputs(cfg)
    pred = cross_fit(manifest, taxonomy, cfg, config, out / "models")
    path = write_predictions(pred, out / OOF_FILE)
    return CrossFitted(
        predictions=path,
        models=[list(m) for m in pred.models],
        folds=sorted({int(f) for f in pred.folds}),
        images=len(pred.image_ids),
    )
