"""The vertical slice: detect job -> fuse job -> fused predictions -> bundle with detector ->
`tagger.predict` records with evidence and instances in original pixels (every format)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tagger.bundle.model_bundle import BundleError, read_bundle, save_bundle
from tagger.data.manifest import write_manifest
from tagger.detect.detections import DetectorConfig, DetectorTraining
from tagger.detect.fusion import FusionModel, LinearScore, TagFusion
from tagger.detect.io import write_detector
from tagger.detect.job import run_detect_job, run_fuse_job
from tagger.detect.runtime import bundle_detector_settings
from tagger.inference.records import read_records
from tagger.train.predictions import Predictions, read_predictions, write_predictions
from tests.tagger.bundle_fixtures import make_bundle, tiny_taxonomy
from tests.tagger.detect.fixtures import RedDetector, red_square_image, write_detection_manifest

SSD = DetectorConfig(
    enabled=True, backend="ssd", architecture="ssd_tiny", image_size=64, fusion_min_positives=3,
    training=DetectorTraining(max_steps=2, batch_size=4),
)  # fmt: skip


def test_detect_then_fuse_writes_what_calibration_reads(tmp_path: Path) -> None:
    tax = tiny_taxonomy()
    manifest = write_detection_manifest(tmp_path / "data", n=30)
    path = write_manifest(manifest, tmp_path / "manifest.parquet")
    out = run_detect_job(path, tax, 0, SSD.model_copy(update={"tags": ("dog",)}), tmp_path / "det")
    assert out.tag_ids == ("dog",) and out.weights.suffix == ".safetensors"
    assert 0.0 <= out.metrics["map50"] <= 1.0 and out.metrics["steps"] == 2
    assert out.samples and all(p.exists() for p in out.samples)
    held = manifest[manifest["fold"] == 0]
    rng = np.random.default_rng(0)
    probs = rng.random((len(held), len(tax))).astype(np.float32)
    pred = Predictions(held["image_id"].to_numpy(), held["fold"].to_numpy(), probs, tax.tag_ids)
    pred_path = write_predictions(pred, tmp_path / "heldout.parquet")
    fused = run_fuse_job(pred_path, out.detections, path, tax, ("dog",), SSD, tmp_path / "fuse")
    again = read_predictions(fused.predictions)
    assert list(again.image_ids) == list(pred.image_ids) and again.tag_ids == tax.tag_ids
    others = [i for i, t in enumerate(tax.tag_ids) if t != "dog"]
    np.testing.assert_array_equal(again.probs[:, others], probs[:, others])
    assert fused.summary["tags"] == 1 and "detector_run_share" in fused.summary
    assert fused.report.exists()


def _bundle_with_detector(tmp_path: Path) -> Path:
    """The tiny bundle plus a red-square detector fused for "dog" (always on)."""
    import torch

    from tagger.detect.ssd import SSDDetector, create_ssd

    tax = tiny_taxonomy()
    config = SSD.model_copy(update={"tags": ("dog",), "score_threshold": 0.0})
    detector = SSDDetector(create_ssd("ssd_tiny", 2, 64), ("dog",), tax.tag_ids, config)
    weights, arch = write_detector(detector, tmp_path / "d.safetensors", tmp_path / "d.json")
    fusion = FusionModel(
        (TagFusion("dog", "fused", "test", 10, 10, fused=LinearScore((0.0,) * 4, (1.0,) * 4,
                   (0.0, 50.0, 0.0, 0.0), -2.0), base=LinearScore((0.0,), (1.0,), (0.0,), -5.0)),),
        "always",
    )  # fmt: skip
    settings = bundle_detector_settings(detector.architecture(), config, fusion)
    state = {k: v.clone() for k, v in detector.state_dict().items()}
    bundle = replace(make_bundle(), detector=settings, detector_weights=state)
    key = "head.classification_head.module_list.0.bias"
    assert torch.equal(state[key], detector.state_dict()[key])
    del weights, arch
    return save_bundle(bundle, tmp_path / "bundle")


def test_bundle_round_trip_keeps_the_detector_and_refuses_pickles(tmp_path: Path) -> None:
    path = _bundle_with_detector(tmp_path)
    bundle = read_bundle(path)
    assert bundle.detector is not None and bundle.detector["weights"] == "detector.safetensors"
    assert bundle.detector_weights and all(v.dtype.is_floating_point or True
                                           for v in bundle.detector_weights.values())  # fmt: skip
    # a detector weights file that is a pickle is refused unless trusted
    import json

    import torch

    torch.save(bundle.detector_weights, path / "detector.pt")
    meta = json.loads((path / "detector.json").read_text())
    meta["weights"] = "detector.pt"
    (path / "detector.json").write_text(json.dumps(meta))
    files = json.loads((path / "bundle.json").read_text())
    from tagger.bundle.model_bundle import _sha256

    files["files"]["detector.json"] = _sha256(path / "detector.json")
    (path / "bundle.json").write_text(json.dumps(files))
    with pytest.raises(BundleError, match="pickle"):
        read_bundle(path)
    assert read_bundle(path, trust_pickle=True).detector_weights is not None


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_predict_records_carry_evidence_and_pixel_instances(tmp_path: Path, suffix: str) -> None:
    import tagger
    from tagger.detect import runtime
    from tagger.inference.api import write_predictions

    path = _bundle_with_detector(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    red_square_image(200, 120, (150, 20, 180, 50), rng).save(images / "with.png")
    red_square_image(200, 120, None, rng).save(images / "without.png")
    tax = tiny_taxonomy()
    # the red detector stands in for the untrained SSD (coordinates are what is checked)
    original = runtime.load_detector
    runtime.load_detector = lambda *a, **k: RedDetector(tax)  # type: ignore[assignment]
    try:
        options = {"workers": 0, "device": "cpu"}
        records = {r.image_id: r for r in tagger.predict(images, model=path, **options)}
        out = tmp_path / f"out{suffix}"
        write_predictions(images, path, out, **options)
    finally:
        runtime.load_detector = original
    dog = [t for t in records[str(images / "with.png")].tags if t.id == "dog"]
    assert dog and dog[0].evidence in ("fused", "detector")
    (inst,) = dog[0].instances
    np.testing.assert_allclose(
        [inst.xmin, inst.ymin, inst.xmax, inst.ymax], [150, 20, 180, 50], atol=3
    )
    assert inst.confidence == pytest.approx(0.9)
    assert not [t for t in records[str(images / "without.png")].tags if t.id == "dog"]
    if suffix == ".jsonl":  # the ONNX backend (classifier) gives the same records
        runtime.load_detector = lambda *a, **k: RedDetector(tax)  # type: ignore[assignment]
        try:
            onnx = {r.image_id: r for r in tagger.predict(images, model=path, backend="onnx",
                                                          **options)}  # fmt: skip
        finally:
            runtime.load_detector = original
        for key, record in records.items():
            mine = [(t.id, t.evidence, t.instances) for t in record.tags]
            assert mine == [(t.id, t.evidence, t.instances) for t in onnx[key].tags]
    back = {r.image_id: r for r in read_records(out)}
    # every format round-trips the instances and evidence (scores are written rounded)
    assert {k: r.to_dict() for k, r in back.items()} == {k: r.to_dict() for k, r in records.items()}
    assert back[str(images / "with.png")].tags[0].instances or any(
        t.instances for t in back[str(images / "with.png")].tags
    )


@pytest.mark.parametrize("orientation", [1, 6])
def test_the_detector_reads_the_decode_workers_copy_not_the_file_again(
    tmp_path: Path, orientation: int
) -> None:
    import tagger
    from tagger.detect import runtime
    from tests.tagger.image_corpus import write_oriented_jpeg

    path = _bundle_with_detector(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    # displayed 400x240, the object at (300, 40)-(360, 100); stored rotated per EXIF
    image = red_square_image(400, 240, (300, 40, 360, 100), np.random.default_rng(0))
    write_oriented_jpeg(images / "a.jpg", image, orientation)
    tax = tiny_taxonomy()
    detector = RedDetector(tax)

    def no_second_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("the photo was decoded a second time for the detector")

    saved = runtime.load_detector, runtime.decode_for_detector
    runtime.load_detector = lambda *a, **k: detector  # type: ignore[assignment]
    runtime.decode_for_detector = no_second_decode  # type: ignore[assignment]
    try:
        for workers in (0, 1):  # inline, and in a decode worker process
            (record,) = tagger.predict(images, model=path, workers=workers, device="cpu")
            dog = [t for t in record.tags if t.id == "dog"]
            (inst,) = dog[0].instances
            np.testing.assert_allclose(
                [inst.xmin, inst.ymin, inst.xmax, inst.ymax], [300, 40, 360, 100], atol=8
            )
    finally:
        runtime.load_detector, runtime.decode_for_detector = saved
    # the copy it got: the displayed photo, shorter side at the detector's input size (64)
    assert min(detector.calls[0]) == 64 and detector.calls[0][0] > detector.calls[0][1]
