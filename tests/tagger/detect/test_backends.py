"""Both backends train a few steps on tiny synthetic data and detect, offline, writing nothing
outside the folders we give; weights round-trip through safetensors; pickles need trust."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tagger.detect.backends import train_detector
from tagger.detect.detections import DetectorConfig, DetectorTraining, TilingConfig
from tagger.detect.evidence import detect_paths
from tagger.detect.io import read_detector, write_detector
from tagger.detect.targets import box_targets, detector_tags
from tagger.detect.weights import DetectorWeightsError, read_state_dict
from tests.tagger.bundle_fixtures import tiny_taxonomy
from tests.tagger.detect.fixtures import write_detection_manifest

CONFIGS = {
    "ssd": DetectorConfig(backend="ssd", architecture="ssd_tiny", image_size=64,
                          training=DetectorTraining(max_steps=2, batch_size=4)),
    "yolo": DetectorConfig(backend="yolo", image_size=64,
                           training=DetectorTraining(max_steps=2, batch_size=4)),
}  # fmt: skip


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network (socket connect raises), cwd in an empty folder, Ultralytics' settings in tmp."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))
    return cwd


@pytest.mark.parametrize(
    "backend",
    ["ssd", pytest.param("yolo", marks=pytest.mark.slow)],  # yolo: ~40-90 s on 2 cores
)
def test_train_and_detect_offline_writing_nothing_in_cwd(
    backend: str, offline: Path, tmp_path: Path
) -> None:
    tax = tiny_taxonomy()
    manifest = write_detection_manifest(tmp_path / "data", n=9)
    tags = detector_tags(manifest, tax, ("dog",))
    targets = box_targets(manifest, tax, tags)
    losses: list[float] = []
    config = CONFIGS[backend]
    detector = train_detector(targets, tax.tag_ids, config, on_step=lambda s, v: losses.append(v))
    assert len(losses) == 2 and all(np.isfinite(losses))
    found = detect_paths(detector, targets.paths[:3], 64, TilingConfig())
    for det in found:
        assert det is not None and det.boxes.shape[1] == 4 and (det.width, det.height) == (64, 64)
        assert set(det.tags.tolist()) <= {tax.index("dog")}
    # weights: safetensors + architecture JSON, read back to the same outputs
    weights, arch = write_detector(detector, tmp_path / "d.safetensors", tmp_path / "d.json")
    again = read_detector(weights, arch, tax.tag_ids, config)
    again_found = detect_paths(again, targets.paths[:3], 64, TilingConfig())
    for a, b in zip(found, again_found, strict=True):
        assert a is not None and b is not None
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    # prepared for prediction (BatchNorm folded, channels-last): the same boxes, no more saving
    again.for_inference()
    folded = detect_paths(again, targets.paths[:3], 64, TilingConfig())
    for a, b in zip(found, folded, strict=True):
        assert a is not None and b is not None and len(a) == len(b)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    with pytest.raises(RuntimeError, match="folded"):
        again.state_dict()
    written = {p.name for p in offline.iterdir()}
    assert not written & {"mlflow.db", "runs", "mlruns"}, written
    assert not written, f"files written into the working folder: {written}"


def test_coverage_rules() -> None:
    tax = tiny_taxonomy()
    rows = pd.DataFrame({
        "image_id": ["a", "b", "c", "d"], "path": ["a", "b", "c", "d"],
        "tags": [["dog"], ["dog"], [], []],
        "known": [["dog"], ["dog"], ["dog"], []],
        "boxes": [[{"tag": "dog", "source_label": "d", "xmin": 0.1, "ymin": 0.1, "xmax": 0.5,
                    "ymax": 0.5, "difficult": False}], [], [], []],
    })  # fmt: skip
    t = box_targets(rows, tax, ("dog", "cat"))
    # a: boxed positive; b: positive without a box (uncovered); c: known negative; d: unknown
    assert t.covered[:, 0].tolist() == [True, False, True, False]
    assert not t.covered[:, 1].any()  # cat: unknown everywhere
    assert [len(b) for b in t.boxes] == [1, 0, 0, 0]
    assert t.useful().tolist() == [True, False, True, False]
    assert not t.covering_all().any()
    assert detector_tags(rows, tax) == ()  # no small_object tags in the tiny taxonomy
    with pytest.raises(ValueError, match="not tags of taxonomy"):
        detector_tags(rows, tax, ("sunglasses",))


def test_pickled_weights_need_trust(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {"x": torch.ones(2)}}, path)
    with pytest.raises(DetectorWeightsError, match="pickle"):
        read_state_dict(path)
    assert read_state_dict(path, trust_pickle=True)["x"].tolist() == [1.0, 1.0]
    with pytest.raises(DetectorWeightsError, match="not found"):
        read_state_dict(tmp_path / "missing.safetensors")


def test_bad_config_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="ssd_tiny"):
        DetectorConfig(backend="ssd", architecture="resnet50")
    with pytest.raises(ValueError, match=r"yolo11n\.yaml"):
        DetectorConfig(backend="yolo", yolo_model="yolo11n.pt")
    assert os.environ.get("YOLO_OFFLINE", "true") == "true"
