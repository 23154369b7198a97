"""ONNX export of a bundle and the ONNX Runtime backend: the same tags as PyTorch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from tagger.bundle.model_bundle import save_bundle
from tagger.bundle.resolve import load_bundle
from tagger.inference.api import predict
from tagger.inference.engine import TorchBackend, preprocessing_of
from tagger.inference.onnx_export import (
    OnnxBackend,
    cached_export,
    create_onnx_backend,
    export_bundle_onnx,
    export_key,
)
from tests.tagger.bundle_fixtures import make_bundle, write_images


@pytest.fixture(scope="module")
def bundle():  # type: ignore[no-untyped-def]
    b = make_bundle(with_extras=False)
    thresholds = np.array([0.0, 0.5, np.nan, 0.55], dtype=np.float32)
    return dataclasses.replace(b, thresholds=thresholds)


def test_exported_model_matches_torch_with_any_batch_size(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = export_bundle_onnx(bundle, tmp_path / "model.onnx")
    prep = preprocessing_of(bundle)
    onnx_backend = OnnxBackend(path, prep, threads=1)
    torch_backend = TorchBackend(bundle.create_model(), prep)
    rng = np.random.default_rng(0)
    for batch in (1, 5):  # the batch axis is dynamic
        pixels = rng.integers(0, 256, size=(batch, 32, 32, 3), dtype=np.uint8)
        got, want = onnx_backend(pixels), torch_backend(pixels)
        assert got.shape == want.shape == (batch, 4)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_onnx_backend_gives_the_same_records(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = [*write_images(tmp_path, n=6), tmp_path / "missing.jpg"]
    torch_records = list(predict(paths, bundle, workers=0, include_parents=True))
    onnx_records = list(predict(paths, bundle, workers=0, include_parents=True, backend="onnx"))
    assert len(onnx_records) == len(torch_records) == 7
    for a, b in zip(torch_records, onnx_records, strict=True):
        assert (a.image_id, a.error) == (b.image_id, b.error)
        assert [(t.id, t.evidence) for t in a.tags] == [(t.id, t.evidence) for t in b.tags]
        np.testing.assert_allclose([t.score for t in a.tags], [t.score for t in b.tags], atol=1e-4)
    assert any(r.tags for r in torch_records)


def test_exports_are_cached_by_weights(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    first = cached_export(bundle, cache)
    stamp = first.stat().st_mtime_ns
    assert cached_export(bundle, cache) == first  # reused, not written again
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [first.name]  # no temp folder left behind
    changed = dict(bundle.state_dict)
    name = next(k for k in changed if changed[k].is_floating_point())
    changed[name] = changed[name] + 1.0
    other = dataclasses.replace(bundle, state_dict=changed)
    assert export_key(other) != export_key(bundle)
    assert cached_export(other, cache) != first


def test_a_loaded_bundle_is_keyed_by_its_weights_file(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    save_bundle(bundle, tmp_path / "b1")
    save_bundle(bundle, tmp_path / "b2")
    one, two = load_bundle(tmp_path / "b1"), load_bundle(tmp_path / "b2")
    assert len(one.weights_sha256) == 64
    assert export_key(one) == export_key(two)  # same weights, wherever they lie


def test_cache_dir_from_the_environment(bundle, private_onnx_cache: Path) -> None:  # type: ignore[no-untyped-def]
    backend = create_onnx_backend(bundle, threads=1, spinning=False)
    assert [p.suffix for p in private_onnx_cache.iterdir()] == [".onnx"]
    pixels = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    assert backend(pixels).shape == (2, 4)
