"""Reduced precision: hardware detection, choice and fallback, the check against fp32 recorded in
the bundle, `auto` refusing what the check did not pass, int8 export cache keys, and records of a
trained tiny model at fp32 / bf16 / int8."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")

import tagger.inference.precision as precision_mod
from tagger.bundle.model_bundle import (
    INT8_CALIBRATION_FILE,
    PRECISION_FILE,
    BundleError,
    read_bundle,
    save_bundle,
)
from tagger.calibrate.precision_check import (
    PrecisionCheckConfig,
    PrecisionReport,
    PrecisionRules,
    compare_precision,
)
from tagger.calibrate.thresholds import CalibrationConfig, calibrate_thresholds
from tagger.inference.api import predict
from tagger.inference.command import add_predict_arguments
from tagger.inference.engine import Predictor, TorchBackend, preprocessing_of
from tagger.inference.onnx_export import export_key
from tagger.inference.options import PredictOptions
from tagger.inference.precision import choose_precision
from tagger.inference.quantize import (
    NoCalibrationImages,
    cached_int8_export,
    calibration_digest,
    head_nodes,
    int8_key,
)
from tagger.inference.verification import verify_precisions
from tagger.train.precision import CpuSupport, autocast, cpu_flags, manifest_pixels
from tagger.train.training import _amp_dtype
from tests.tagger.bundle_fixtures import make_bundle
from tests.tagger.synthetic_training import SyntheticData, make_synthetic_data

pytestmark = pytest.mark.usefixtures("one_torch_thread", "private_onnx_cache")

ALL_UNITS = CpuSupport(bf16=True, amx=True, int8_dot=True, flags=frozenset())
NO_UNITS = CpuSupport(bf16=False, amx=False, int8_dot=False, flags=frozenset())


def _machine(monkeypatch: pytest.MonkeyPatch, support: CpuSupport) -> None:
    monkeypatch.setattr(precision_mod, "cpu_support", lambda: support)
    monkeypatch.setattr(
        precision_mod, "bf16_supported", lambda device: str(device) == "cpu" and support.bf16
    )


def _report(passed: dict[str, bool]) -> dict[str, object]:
    """A precision.json content where each named precision passed or failed."""
    rng = np.random.default_rng(0)
    ref = rng.random((50, 4)).astype(np.float32)
    targets = (rng.random((50, 4)) < 0.4).astype(np.float32)
    known = np.ones((50, 4), bool)
    thresholds = np.full(4, 0.5, np.float32)
    checks = {}
    for name, ok in passed.items():
        probs = ref if ok else 1.0 - ref  # every decision flips
        checks[name] = compare_precision(
            name, ref, probs, thresholds, targets, known, ("a", "b", "c", "d")
        )
        assert checks[name].passed == ok
    return PrecisionReport(images=50, checks=checks).model_dump(mode="json")


@pytest.fixture(scope="module")
def tiny_bundle():  # type: ignore[no-untyped-def]
    bundle = make_bundle(with_extras=False)
    pixels = np.random.default_rng(1).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    return dataclasses.replace(bundle, calibration_images=pixels)


# ---- hardware and choice ----------------------------------------------------------------------


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert "bf16" in ALL_UNITS.describe() and "no bf16" in NO_UNITS.describe()


def test_auto_picks_the_fastest_verified_precision_the_machine_supports(
    tiny_bundle, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    both = dataclasses.replace(tiny_bundle, precision=_report({"bf16": True, "int8": True}))
    _machine(monkeypatch, ALL_UNITS)
    assert choose_precision(both, "auto", "cpu").precision == "int8"
    assert choose_precision(both, "auto", "cuda").precision in ("bf16", "fp32")  # never int8
    no_images = dataclasses.replace(both, calibration_images=None)
    choice = choose_precision(no_images, "auto", "cpu")
    assert choice.precision == "bf16" and "calibration images" in choice.note
    _machine(monkeypatch, CpuSupport(bf16=True, amx=False, int8_dot=False, flags=frozenset()))
    assert choose_precision(both, "auto", "cpu").precision == "bf16"
    assert choose_precision(both, "auto", "cpu", "onnx").precision == "fp32"  # no bf16 there
    # AVX2 without VNNI (e.g. AMD EPYC before Zen 4): int8 runs on ONNX Runtime's AVX2 kernels
    avx2 = CpuSupport(bf16=False, amx=False, int8_dot=False, flags=frozenset(), int8_simd=True)
    _machine(monkeypatch, avx2)
    assert choose_precision(both, "auto", "cpu").precision == "int8"
    assert choose_precision(both, "int8", "cpu").note == ""
    assert "avx2 int8" in avx2.describe()
    _machine(monkeypatch, NO_UNITS)
    choice = choose_precision(both, "auto", "cpu")
    assert choice.precision == "fp32" and "no bf16 units" in choice.note
    assert "nor AVX2" in choice.note  # why int8 was skipped


def test_auto_refuses_an_unverified_precision(tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _machine(monkeypatch, ALL_UNITS)
    failed = dataclasses.replace(tiny_bundle, precision=_report({"bf16": False, "int8": False}))
    choice = choose_precision(failed, "auto", "cpu")
    assert choice.precision == "fp32"
    assert "not int8 (not verified" in choice.note and "not bf16 (not verified" in choice.note
    only_bf16 = dataclasses.replace(tiny_bundle, precision=_report({"bf16": True, "int8": False}))
    assert choose_precision(only_bf16, "auto", "cpu").precision == "bf16"
    old = dataclasses.replace(tiny_bundle, precision=None)  # a bundle from before the check
    assert choose_precision(old, "auto", "cpu").precision == "fp32"
    # the predictor of a job follows the same choice
    predictor = Predictor(failed, PredictOptions(device="cpu"))
    assert predictor.precision.precision == "fp32"
    assert isinstance(predictor.backend, TorchBackend) and predictor.backend.precision == "fp32"


def test_a_named_precision_falls_back_with_a_clear_message(
    tiny_bundle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    _machine(monkeypatch, NO_UNITS)
    with caplog.at_level(logging.WARNING, logger="tagger.inference.precision"):
        choice = choose_precision(tiny_bundle, "bf16", "cpu")
    assert choice.precision == "fp32"
    assert "precision bf16 unavailable: this CPU has no bf16 units" in caplog.text
    assert choose_precision(tiny_bundle, "int8", "cuda:0").precision == "fp32"
    choice = choose_precision(tiny_bundle, "bf16", "cpu", "onnx")
    assert choice.precision == "fp32" and "bf16 runs on the torch backend" in choice.note
    _machine(monkeypatch, ALL_UNITS)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tagger.inference.precision"):
        choice = choose_precision(dataclasses.replace(tiny_bundle, precision=None), "int8", "cpu")
    assert choice.precision == "int8"  # asked for by name: runs, with a warning
    assert "has not passed this bundle's check" in caplog.text


def test_precision_option_and_command_line() -> None:
    assert PredictOptions().precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        PredictOptions(precision="fp16")  # type: ignore[arg-type]
    parser = argparse.ArgumentParser()
    add_predict_arguments(parser)
    args = parser.parse_args(["photos/", "--out", "x.jsonl", "--precision", "int8"])
    assert args.precision == "int8"
    with pytest.raises(SystemExit):
        parser.parse_args(["photos/", "--out", "x.jsonl", "--precision", "fp8"])
    with pytest.raises(ValueError, match="torch runs 'fp32' or 'bf16'"):
        autocast("cpu", "int8")


def test_training_amp_auto_uses_bf16_on_cpus_with_bf16_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tagger.train.training as training

    cpu = torch.device("cpu")
    monkeypatch.setattr(training, "bf16_supported", lambda device: True)
    assert _amp_dtype("auto", cpu) == torch.bfloat16
    assert _amp_dtype("off", cpu) is None
    monkeypatch.setattr(training, "bf16_supported", lambda device: False)
    assert _amp_dtype("auto", cpu) is None
    assert _amp_dtype("bf16", cpu) == torch.bfloat16


# ---- the check --------------------------------------------------------------------------------


def test_compare_precision_applies_the_rules() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((400, 5)).astype(np.float32)
    targets = (rng.random((400, 5)) < 0.3).astype(np.float32)
    known = np.ones_like(targets, bool)
    thresholds = np.array([0.5, 0.3, np.nan, 0.7, 0.6], np.float32)
    tags = ("a", "b", "c", "d", "e")
    same = compare_precision("bf16", ref, ref.copy(), thresholds, targets, known, tags)
    assert same.passed and same.agreement == 1.0 and same.decisions == 400 * 4
    assert same.max_score_diff == 0.0 and same.map_diff == 0.0 and "c" in same.tag_ap_diff
    # one near-tie flips: allowed (agreement 1599/1600 >= 99.5%, within the margin)
    near = ref.copy()
    i = int(np.argmin(np.abs(ref[:, 0] - 0.5)))
    near[i, 0] = 0.5 - 0.001 if ref[i, 0] >= 0.5 else 0.5 + 0.001
    check = compare_precision("bf16", ref, near, thresholds, targets, known, tags)
    assert check.passed and check.disagreements == 1 and check.outside_margin == 0
    # one decision far from its threshold flips: refused whatever the agreement
    far = ref.copy()
    j = int(np.argmax(ref[:, 1]))
    far[j, 1] = 0.0
    check = compare_precision("int8", ref, far, thresholds, targets, known, tags)
    assert not check.passed and check.outside_margin == 1
    assert "from the threshold" in check.reasons[0]
    # the ranking degrades without moving decisions: the mAP rule refuses it
    noisy = np.clip(ref + rng.normal(0, 0.2, ref.shape), 0, 1).astype(np.float32)
    strict = PrecisionRules(min_agreement=0.0, margin=1.0, max_map_diff=0.005)
    check = compare_precision("int8", ref, noisy, thresholds, targets, known, tags, strict)
    assert not check.passed and "mAP differs" in check.reasons[0]
    with pytest.raises(ValueError, match="probs"):
        compare_precision("bf16", ref, ref[:10], thresholds, targets, known, tags)


def test_check_is_recorded_in_the_bundle_and_old_bundles_still_load(
    tiny_bundle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    targets = (rng.random((12, 4)) < 0.4).astype(np.float32)
    report = verify_precisions(tiny_bundle, pixels, targets, np.ones((12, 4), bool))
    assert set(report.checks) == {"bf16", "int8"} and report.images == 12
    assert report.details["int8_calibration"]["images"] == 8
    bundle = dataclasses.replace(tiny_bundle, precision=report.model_dump(mode="json"))
    loaded = read_bundle(save_bundle(bundle, tmp_path / "b"))
    assert PrecisionReport.model_validate(loaded.precision) == report
    assert loaded.calibration_images is not None
    np.testing.assert_array_equal(loaded.calibration_images, tiny_bundle.calibration_images)
    # the files are covered by bundle.json's digests like every other file
    (tmp_path / "b" / PRECISION_FILE).write_text("{}")
    with pytest.raises(BundleError, match="sha256"):
        read_bundle(tmp_path / "b")
    old = read_bundle(save_bundle(make_bundle(with_extras=False), tmp_path / "old"))
    assert old.precision is None and old.calibration_images is None
    assert not (tmp_path / "old" / INT8_CALIBRATION_FILE).exists()


# ---- int8 export ------------------------------------------------------------------------------


def test_int8_exports_are_cached_by_model_and_calibration_set(tiny_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    pixels = tiny_bundle.calibration_images
    key = int8_key(tiny_bundle, pixels)
    assert key == int8_key(tiny_bundle, pixels.copy()) != export_key(tiny_bundle)
    other = pixels.copy()
    other[0, 0, 0, 0] ^= 1  # one value of one calibration image
    assert int8_key(tiny_bundle, other) != key
    assert calibration_digest(other) != calibration_digest(pixels)
    weights = {k: v.clone() for k, v in tiny_bundle.state_dict.items()}
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] += 1e-3
    assert int8_key(dataclasses.replace(tiny_bundle, state_dict=weights), pixels) != key
    path = cached_int8_export(tiny_bundle, cache_dir=cache)
    assert path.name == f"{key}.int8.onnx" and path.parent == cache
    stamp = path.stat().st_mtime_ns
    assert cached_int8_export(tiny_bundle, cache_dir=cache) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not quantized again
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [f"{export_key(tiny_bundle)}.onnx", path.name]
    )
    with pytest.raises(NoCalibrationImages, match="needs calibration images"):
        cached_int8_export(dataclasses.replace(tiny_bundle, calibration_images=None))
    with pytest.raises(ValueError, match="expected uint8"):
        cached_int8_export(tiny_bundle, pixels[:, :16], cache_dir=cache)


def test_int8_weights_are_7_bit_and_the_head_stays_fp32(tiny_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import onnx
    from onnx import numpy_helper

    model = onnx.load(cached_int8_export(tiny_bundle, cache_dir=tmp_path / "cache"))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    int8 = [w for w in weights.values() if w.dtype == np.int8]
    assert int8, "no int8 weights: nothing was quantized"
    # reduce_range: no u8 x s8 pair sum can saturate AVX2's int16 multiply-add
    assert all(w.min() >= -64 and w.max() <= 64 for w in int8)  # 2 x 255 x 64 < 2**15
    producer = {out: node for node in model.graph.node for out in node.output}
    (head,) = head_nodes(model)
    node = next(n for n in model.graph.node if n.name == head)
    assert node.op_type in ("Gemm", "MatMul")
    # its weight is a float initializer read directly, not a DequantizeLinear of int8
    assert node.input[1] in weights and weights[node.input[1]].dtype == np.float32
    assert node.input[1] not in producer
    quantized = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert any(weights.get(n.input[0]) is not None and weights[n.input[0]].dtype == np.int8
               for n in quantized)  # fmt: skip


# ---- a trained tiny model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny network trained on the synthetic squares, its fp32 bundle, and the data."""
    from tagger.bundle.model_bundle import create_bundle
    from tagger.train.predictions import predict_manifest
    from tagger.train.training import TrainConfig, train

    root = tmp_path_factory.mktemp("precision")
    # two folds: 50 held-out images x 4 tags = 200 decisions, so that one near-tie may flip
    synth = make_synthetic_data(
        root / "data", n_images=100, image_size=40, cache_size=32, n_folds=2
    )
    cfg = TrainConfig.model_validate(
        {
            "model": {"backbone": "test_resnet", "image_size": 32},
            "sampler": {"name": "uniform"},
            "optimizer": {"lr": 0.01},
            "data": {"cache_dir": str(synth.cache_dir), "cache_size": synth.cache_size,
                     "batch_size": 8, "num_workers": 0, "val_fold": 0},
            "schedule": {"epochs": 3, "warmup_epochs": 0.5},
            "amp": "off",
            "device": "cpu",
            "progress": False,
            "output_dir": str(root / "run"),
        }
    )  # fmt: skip
    result = train(cfg, synth.manifest, synth.taxonomy)
    assert result.model is not None
    held = synth.manifest[synth.manifest["fold"] == 0].reset_index(drop=True)
    prep = {"image_size": 32, "mean": cfg.model.mean, "std": cfg.model.std}
    probs = predict_manifest(result.model, held, prep, cache_dir=synth.cache_dir)
    from tagger.data.manifest import targets_from_manifest

    targets, known = targets_from_manifest(held, synth.taxonomy)
    calibration = calibrate_thresholds(
        probs, targets, known, synth.taxonomy, CalibrationConfig(target_precision=0.6)
    )
    model_config = cfg.model.to_model_config(len(synth.taxonomy))
    bundle = create_bundle(result.model, model_config, synth.taxonomy, calibration)
    return synth, save_bundle(bundle, root / "bundle")


def test_precision_check_of_a_trained_model_and_its_records(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from flows.precision import add_precision_check

    synth, bundle_dir = trained
    synth: SyntheticData
    checked = add_precision_check(
        bundle_dir, synth.manifest_path, synth.cache_dir, 0,
        PrecisionCheckConfig(calibration_images=16), tmp_path / "precision",
    )  # fmt: skip
    bundle = read_bundle(checked)
    report = PrecisionReport.model_validate(bundle.precision)
    held = synth.manifest[synth.manifest["fold"] == 0]
    assert report.images == len(held) and set(report.checks) == {"bf16", "int8"}
    assert bundle.calibration_images is not None and bundle.calibration_images.shape == (
        16, 32, 32, 3,
    )  # fmt: skip
    for check in report.checks.values():
        assert check.map_fp32 is not None and check.map_fp32 > 0.5  # the model did learn
        assert check.decisions == len(held) * 4 and 0 < check.max_score_diff < 0.1
    assert report.checks["bf16"].passed, report.checks["bf16"].reasons

    # the records at each precision: same images, same fields, and tags that differ from fp32
    # exactly as the check said. The job reads the very images the check scored (the eval
    # view from the cache, written as PNGs at the model's size: decoding them is lossless).
    pixels = manifest_pixels(held, bundle.preprocessing, cache_dir=synth.cache_dir)
    paths = []
    for i, image in enumerate(pixels):
        paths.append(tmp_path / f"held{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    fp32_probs = TorchBackend(bundle.create_model(), preprocessing_of(bundle))(pixels)
    records = {
        p: list(predict(paths, bundle, workers=0, precision=p, device="cpu"))
        for p in ("fp32", "bf16", "int8")
    }
    rules = report.rules
    column = {tag: k for k, tag in enumerate(bundle.tag_ids)}
    for p in ("bf16", "int8"):
        assert [r.image_id for r in records[p]] == [r.image_id for r in records["fp32"]]
        assert [set(r.to_dict()) for r in records[p]] == [set(r.to_dict()) for r in records["fp32"]]
        assert all(r.error is None for r in records[p])
        if choose_precision(bundle, p, "cpu").precision != p:  # a CPU without the units for
            # p (AVX-512 BF16 / VNNI / AMX): the job ran fp32, so its tags are fp32's
            assert [r.tags for r in records[p]] == [r.tags for r in records["fp32"]], p
            continue
        changed, outside = 0, 0
        for i, (ref, got) in enumerate(zip(records["fp32"], records[p], strict=True)):
            for tag in {t.id for t in ref.tags} ^ {t.id for t in got.tags}:
                k = column[tag]
                changed += 1
                outside += abs(fp32_probs[i, k] - bundle.thresholds[k]) > rules.margin
        agreement = 1 - changed / (len(paths) * len(column))
        assert changed == report.checks[p].disagreements, p
        assert outside == report.checks[p].outside_margin, p
        keeps_rule = agreement >= rules.min_agreement and outside == 0
        assert keeps_rule == report.checks[p].passed, (p, agreement, outside)
    # what a job picks: a precision that passed (never one that did not)
    chosen = choose_precision(bundle, "auto", "cpu").precision
    assert chosen in report.verified


def test_manifest_pixels_is_the_eval_view(trained) -> None:  # type: ignore[no-untyped-def]
    synth, bundle_dir = trained
    bundle = read_bundle(bundle_dir)
    rows = synth.manifest.head(5)
    pixels = manifest_pixels(rows, bundle.preprocessing, cache_dir=synth.cache_dir)
    assert pixels.dtype == np.uint8 and pixels.shape == (5, 32, 32, 3)
    want = TorchBackend(bundle.create_model(), preprocessing_of(bundle))(pixels)
    from tagger.train.predictions import predict_manifest

    got = predict_manifest(bundle.create_model(), rows, bundle.preprocessing,
                           cache_dir=synth.cache_dir)  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda(tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """On a GPU: `auto` picks bf16 when it passed (never int8), and its scores follow fp32."""
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    bundle = dataclasses.replace(tiny_bundle, precision=_report({"bf16": True, "int8": True}))
    predictor = Predictor(bundle, PredictOptions(device="cuda"))
    assert predictor.precision.precision == "bf16"
    assert isinstance(predictor.backend, TorchBackend) and predictor.backend.device.type == "cuda"
    pixels = np.random.default_rng(3).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    fp32 = TorchBackend(bundle.create_model(), preprocessing_of(bundle), "cuda")(pixels)
    np.testing.assert_allclose(predictor.backend(pixels), fp32, atol=2e-2)
