"""The Ray Data engine on a local two-CPU cluster: the local engine's records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from tagger.inference.api import predict, predict_ray  # noqa: E402
from tests.tagger.bundle_fixtures import make_bundle, write_images  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_records_equal_local_records(local_ray: None, tmp_path: Path) -> None:
    bundle = make_bundle(with_extras=False)
    bundle = dataclasses.replace(bundle, thresholds=np.array([0.0, 0.5, np.nan, 0.55], np.float32))
    paths = [str(p) for p in write_images(tmp_path, n=7)] + [str(tmp_path / "missing.jpg")]
    options = {"batch_size": 3, "include_parents": True, "max_tags": 3}
    local = {r.image_id: r for r in predict(paths, bundle, workers=0, **options)}
    remote = list(predict_ray(paths, bundle, ray_actors=1, **options))
    assert sorted(r.image_id for r in remote) == sorted(paths)  # one record each, any order
    for r in remote:
        want = local[r.image_id]
        assert (r.path, r.width, r.height, r.error) == (
            want.path,
            want.width,
            want.height,
            want.error,
        )
        assert [(t.id, t.evidence, t.name) for t in r.tags] == [
            (t.id, t.evidence, t.name) for t in want.tags
        ]
        np.testing.assert_allclose(
            [t.score for t in r.tags], [t.score for t in want.tags], atol=1e-5
        )
    assert local[paths[-1]].error is not None and local[paths[-1]].error.code == "missing"


def test_cli_engine_ray_writes_the_same_records(local_ray: None, tmp_path: Path) -> None:
    from tagger.bundle.model_bundle import save_bundle
    from tagger.cli import main
    from tagger.inference.records import read_records

    model = save_bundle(make_bundle(with_extras=False), tmp_path / "bundle")
    images = tmp_path / "imgs"
    write_images(images, n=4)
    common = [str(images), "--model", str(model), "--no-progress", "--batch-size", "2"]
    assert (
        main(["predict", *common, "--out", str(tmp_path / "ray.parquet"), "--engine", "ray"]) == 0
    )
    assert main(["predict", *common, "--out", str(tmp_path / "local.jsonl"), "--workers", "0"]) == 0
    ray_records = {r.image_id: r for r in read_records(tmp_path / "ray.parquet")}
    local_records = list(read_records(tmp_path / "local.jsonl"))
    assert sorted(ray_records) == sorted(r.image_id for r in local_records)
    for want in local_records:
        got = ray_records[want.image_id]
        assert [t.id for t in got.tags] == [t.id for t in want.tags]
        np.testing.assert_allclose(
            [t.score for t in got.tags], [t.score for t in want.tags], atol=1e-5
        )
