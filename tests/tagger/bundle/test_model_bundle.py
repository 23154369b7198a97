"""Model bundle: round trip with identical predictions, integrity, and the pickle refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tagger.bundle.model_bundle import (
    BUNDLE_FILE,
    BundleError,
    create_bundle,
    save_bundle,
)
from tagger.bundle.resolve import load_bundle
from tagger.calibrate.thresholds import Calibration
from tagger.train.model import ModelConfig
from tests.tagger.bundle_fixtures import make_bundle


def test_round_trip_identical_predictions(tmp_path: Path) -> None:
    bundle = make_bundle()
    path = save_bundle(bundle, tmp_path / "bundle")
    assert sorted(p.name for p in path.iterdir()) == [
        "bundle.json", "detector.json", "metrics.json", "model.safetensors", "priors.yaml",
        "taxonomy.yaml", "thresholds.json",
    ]  # fmt: skip
    back = load_bundle(path)
    assert back.taxonomy.tag_ids == bundle.taxonomy.tag_ids
    assert back.model_config == bundle.model_config
    np.testing.assert_array_equal(back.thresholds, bundle.thresholds)
    assert np.isnan(back.thresholds).any() or (back.threshold_report.status != "ok").any()
    assert back.threshold_report.equals(bundle.threshold_report)
    assert back.priors is not None and back.priors.excludes == [("dog", "beach")]
    assert back.detector == bundle.detector and back.metrics == bundle.metrics
    assert back.preprocessing == bundle.preprocessing
    assert back.dataset_hash == "hash0" and back.created_at == bundle.created_at
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = bundle.create_model(), back.create_model()
    assert not b.training
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def test_bundle_without_optional_parts(tmp_path: Path) -> None:
    path = save_bundle(make_bundle(with_extras=False), tmp_path / "b")
    assert not (path / "priors.yaml").exists() and not (path / "detector.json").exists()
    back = load_bundle(path)
    assert back.priors is None and back.detector is None


def test_changed_file_is_detected(tmp_path: Path) -> None:
    path = save_bundle(make_bundle(), tmp_path / "b")
    doc = json.loads((path / "thresholds.json").read_text())
    doc["tags"][0]["threshold"] = 0.01
    (path / "thresholds.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"thresholds.json: sha256 differs"):
        load_bundle(path)


def _as_pickle_bundle(path: Path) -> None:
    """Rewrite a bundle's weights as a torch pickle (what an old exporter might have made)."""
    from safetensors.torch import load_file

    torch.save(load_file(str(path / "model.safetensors")), path / "model.pt")
    (path / "model.safetensors").unlink()
    meta = json.loads((path / BUNDLE_FILE).read_text())
    meta["weights"] = "model.pt"
    del meta["files"]["model.safetensors"]
    (path / BUNDLE_FILE).write_text(json.dumps(meta))


def test_pickle_weights_refused_unless_trusted(tmp_path: Path) -> None:
    bundle = make_bundle()
    path = save_bundle(bundle, tmp_path / "b")
    _as_pickle_bundle(path)
    with pytest.raises(BundleError, match=r"model.pt: weights are a pickle file"):
        load_bundle(path)
    trusted = load_bundle(path, trust_pickle=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(trusted.create_model()(x), bundle.create_model()(x))


def test_bad_bundles_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="is not a bundle; refusing"):
        save_bundle(make_bundle(), tmp_path / "other")
    bundle = make_bundle()
    cal = Calibration(bundle.thresholds, bundle.threshold_report, bundle.calibration_config)
    wrong = ModelConfig(backbone="test_resnet", num_tags=5, image_size=32)
    with pytest.raises(BundleError, match="num_tags 5 != 4 tags"):
        create_bundle(bundle.state_dict, wrong, bundle.taxonomy, cal)
    path = save_bundle(bundle, tmp_path / "b")
    meta = json.loads((path / BUNDLE_FILE).read_text())
    meta["format_version"] = 99
    (path / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format_version 99"):
        load_bundle(path)


def test_bundle_records_how_its_thresholds_were_chosen(tmp_path: Path) -> None:
    from dataclasses import replace

    from tagger.bundle.model_bundle import with_thresholds

    bundle = make_bundle()
    method = {"scores": "crossfit", "k": 5, "calib_folds": [1, 2], "bound": "clopper_pearson",
              "level": 0.95}  # fmt: skip
    calibration = Calibration(
        bundle.thresholds, bundle.threshold_report, bundle.calibration_config, method=method
    )
    back = load_bundle(save_bundle(with_thresholds(bundle, calibration), tmp_path / "b"))
    assert back.calibration_method == method
    assert back.calibration_config.bound == bundle.calibration_config.bound
    old = load_bundle(save_bundle(replace(bundle, calibration_method={}), tmp_path / "old"))
    assert old.calibration_method == {}
