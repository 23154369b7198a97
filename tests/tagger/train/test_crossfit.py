"""Cross-fitting: every row scored by a model that never saw it; the file proves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tagger.train.crossfit as crossfit_module
from tagger.train.crossfit import CrossFitConfig, cross_fit, crossfit_train_config, fold_groups
from tagger.train.predictions import (
    Predictions,
    check_out_of_fold,
    read_predictions,
    write_predictions,
)
from tagger.train.training import TrainConfig
from tests.tagger.synthetic_training import SyntheticData, make_synthetic_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    return make_synthetic_data(tmp_path_factory.mktemp("crossfit_data"), n_images=16, n_folds=4)


def _train_config(synth: SyntheticData, out: Path) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"backbone": "resnet18", "image_size": 32},
            "data": {
                "cache_dir": str(synth.cache_dir),
                "cache_size": synth.cache_size,
                "batch_size": 8,
                "num_workers": 0,
                "val_fold": 0,
            },
            "schedule": {"epochs": 1, "early_stop_patience": 2},
            "output_dir": str(out),
            "progress": False,
            "device": "cpu",
        }
    )


def test_fold_groups_deal_folds_round_robin() -> None:
    assert fold_groups([0, 1, 2, 3], CrossFitConfig()) == [(0,), (1,), (2,), (3,)]
    assert fold_groups([3, 0, 1, 2, 4], CrossFitConfig(k=2)) == [(0, 2, 4), (1, 3)]
    assert fold_groups(range(10), CrossFitConfig(folds=(1, 2, 3), k=3)) == [(1,), (2,), (3,)]
    with pytest.raises(ValueError, match=r"folds \[7\] have no rows"):
        fold_groups([0, 1, 2], CrossFitConfig(folds=(1, 7)))
    with pytest.raises(ValueError, match="k=3 models but only 2 folds"):
        CrossFitConfig(folds=(0, 1), k=3)


def test_crossfit_models_are_cheaper_and_have_no_validation(tmp_path: Path) -> None:
    base = TrainConfig.model_validate({"model": {"backbone": "resnet50", "image_size": 224}})
    cfg = crossfit_train_config(
        base, CrossFitConfig(epochs=2, image_size=96, backbone="resnet18"), tmp_path
    )
    assert (cfg.model.backbone, cfg.model.image_size, cfg.schedule.epochs) == ("resnet18", 96, 2)
    assert cfg.data.val_fold is None and cfg.schedule.early_stop_patience is None
    assert cfg.output_dir == tmp_path
    assert crossfit_train_config(base, CrossFitConfig(), tmp_path).model == base.model


def test_crossfit_never_scores_an_image_with_a_model_that_saw_it(
    data: SyntheticData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[set[str]] = []
    real_train = crossfit_module.train

    def recording_train(cfg: TrainConfig, manifest: pd.DataFrame, *a: Any, **kw: Any) -> Any:
        seen.append(set(manifest["image_id"]))
        return real_train(cfg, manifest, *a, **kw)

    monkeypatch.setattr(crossfit_module, "train", recording_train)
    config = CrossFitConfig(folds=(0, 1, 2), k=3)  # fold 3 stays blind: never trained on
    pred = cross_fit(data.manifest, data.taxonomy, _train_config(data, tmp_path), config, tmp_path)

    chosen = data.manifest[data.manifest["fold"] != 3]
    assert list(pred.image_ids) == chosen["image_id"].tolist()  # manifest order, fold 3 absent
    assert pred.probs.shape == (len(chosen), len(data.taxonomy))
    assert np.isfinite(pred.probs).all() and pred.train_folds == ()
    assert len(seen) == 3
    blind = set(data.manifest.loc[data.manifest["fold"] == 3, "image_id"])
    for image_id, fold, m in zip(pred.image_ids, pred.folds, pred.scored_by, strict=True):
        assert image_id not in seen[m]  # the model that scored it never trained on it
        assert fold not in pred.models[m]
    assert all(not (s & blind) for s in seen)
    assert pred.row_train_folds()[0] == pred.models[int(pred.scored_by[0])]

    path = write_predictions(pred, tmp_path / "oof.parquet")
    back = read_predictions(path)
    assert back.models == ((1, 2), (0, 2), (0, 1))
    np.testing.assert_array_equal(back.scored_by, pred.scored_by)
    np.testing.assert_array_equal(back.probs, pred.probs)

    # a rerun into the same folder reuses each model's scores: nothing is trained again
    again = cross_fit(data.manifest, data.taxonomy, _train_config(data, tmp_path), config, tmp_path)
    assert len(seen) == 3
    np.testing.assert_array_equal(again.probs, pred.probs)
    # ... unless the recipe changed
    cross_fit(
        data.manifest, data.taxonomy, _train_config(data, tmp_path),
        config.model_copy(update={"image_size": 16}), tmp_path,
    )  # fmt: skip
    assert len(seen) == 6


def test_a_file_scored_in_fold_is_refused(tmp_path: Path) -> None:
    bad = Predictions(
        image_ids=np.array(["a", "b"], dtype=object),
        folds=np.array([0, 1]),
        probs=np.zeros((2, 1), dtype=np.float32),
        tag_ids=("t0",),
        scored_by=np.array([0, 0]),
        models=((1,),),  # model 0 trained on fold 1 and scored image b of fold 1
    )
    with pytest.raises(ValueError, match=r"row 1 \(image 'b', fold 1\).*not out-of-fold"):
        check_out_of_fold(bad)
    with pytest.raises(ValueError, match="not out-of-fold"):
        write_predictions(bad, tmp_path / "bad.parquet")


def test_old_predictions_files_still_read(tmp_path: Path) -> None:
    old = Predictions(
        np.array(["a"], dtype=object), np.array([2]), np.ones((1, 2), np.float32), ("x", "y"), (0,)
    )
    back = read_predictions(write_predictions(old, tmp_path / "p.parquet"))
    assert back.scored_by is None and back.models == () and back.train_folds == (0,)
    assert back.row_train_folds() == [(0,)]
