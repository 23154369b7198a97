"""Held-out probabilities on a manifest, the predictions file, and promotion scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tagger.bundle.model_bundle import default_preprocessing
from tagger.calibrate.evaluation import EvalData, score_model
from tagger.data.images import load_reduced
from tagger.train.dataset import eval_transform, normalize_images
from tagger.train.model import ModelConfig, create_model
from tagger.train.predictions import (
    Predictions,
    predict_manifest,
    read_predictions,
    write_predictions,
)
from tests.tagger.synthetic_training import make_synthetic_data


def test_predict_manifest_matches_the_model_on_the_eval_view(tmp_path: Path) -> None:
    data = make_synthetic_data(tmp_path, n_images=5, num_tags=3, cache=False)
    cfg = ModelConfig(backbone="test_resnet", num_tags=3, image_size=32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model(cfg).eval()
    prep = default_preprocessing(cfg)
    probs = predict_manifest(model, data.manifest, prep, batch_size=2)
    assert probs.shape == (5, 3) and probs.dtype == np.float32
    image = eval_transform(load_reduced(data.manifest["path"][4], 32), 32)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
    with torch.inference_mode():
        direct = torch.sigmoid(model(normalize_images(x, cfg.mean, cfg.std))).numpy()[0]
    np.testing.assert_allclose(probs[4], direct, rtol=1e-5, atol=1e-6)


def test_predictions_file_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pred = Predictions(
        np.array(["a", "b", "c"], dtype=object),
        np.array([0, 1, 1]),
        rng.random((3, 2)).astype(np.float32),
        ("x", "y"),
        train_folds=(2,),
    )
    back = read_predictions(write_predictions(pred, tmp_path / "p.parquet"))
    np.testing.assert_array_equal(back.probs, pred.probs)
    assert list(back.image_ids) == ["a", "b", "c"] and back.tag_ids == ("x", "y")
    np.testing.assert_array_equal(back.folds, [0, 1, 1])
    assert back.train_folds == (2,)
    pd.DataFrame({"image_id": ["a"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a predictions file"):
        read_predictions(tmp_path / "other.parquet")


def test_score_model_hand_worked() -> None:
    # tag a: threshold .5 -> predicted rows 0, 1 (1 positive): precision .5 < target .9
    # tag b: threshold .5 -> predicted row 2 (positive): precision 1 >= .9
    # tag c: policy f1: not counted in the share; tag d: no known positive: not counted at all
    probs = np.array([[0.9, 0.1, 0.7, 0.5], [0.6, 0.2, 0.1, 0.5], [0.1, 0.8, 0.2, 0.5]])
    targets = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32)
    data = EvalData(("a", "b", "c", "d"), targets, np.ones((3, 4), dtype=bool))
    report = pd.DataFrame(
        {
            "tag": ["a", "b", "c", "d"],
            "policy": ["precision", "precision", "f1", "precision"],
            "target": [0.9, 0.9, np.nan, 0.9],
        }
    )
    thresholds = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    s = score_model(probs, ["a", "b", "c", "d"], thresholds, report, data, ["a", "b", "c", "d"])
    assert s.share_meeting_target == pytest.approx(0.5)
    assert (s.n_tags, s.n_target_tags, s.n_images) == (3, 2, 3)
    # AP: a = (1/2)(1) + (1/2)(2/3); b = 1; c = 1
    assert s.map == pytest.approx(((0.5 + 1 / 3) + 1 + 1) / 3)
    # scoring on a subset of tags, with the model's columns in another order
    s2 = score_model(probs[:, ::-1], ["d", "c", "b", "a"], thresholds, report, data, ["b"])
    assert s2.share_meeting_target == 1.0 and s2.n_tags == 1
