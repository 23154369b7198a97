"""The tag-album flow: each task through `task.fn`, and the flow end to end (artifact, resume)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from flows.tag_album import (
    AlbumSummary,
    TagAlbumConfig,
    album_markdown,
    publish_album_artifact,
    resolve_model,
    tag_album,
    tag_images,
)
from flows.tracking import mlflow_uris
from tagger.bundle.model_bundle import save_bundle
from tests.tagger.bundle_fixtures import make_bundle, write_images


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle whose thresholds let every tag through (cat disabled)."""
    bundle = make_bundle(with_extras=False)
    thresholds = np.array([0.0, 0.0, np.nan, 0.0], dtype=np.float32)
    report = bundle.threshold_report.copy()
    report["threshold"] = thresholds.astype(np.float64)
    report["status"] = np.where(np.isnan(thresholds), "disabled", "ok")
    bundle = dataclasses.replace(bundle, thresholds=thresholds, threshold_report=report)
    return save_bundle(bundle, tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture()
def album(tmp_path: Path) -> Path:
    folder = tmp_path / "album"
    write_images(folder, n=4)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def _config(album: Path, model: Path | str, out: Path, **kw: object) -> TagAlbumConfig:
    options = {"workers": 0, "batch_size": 2}
    return TagAlbumConfig(
        inputs=str(album), output=str(out), model=str(model), options=options, **kw
    )  # type: ignore[arg-type]


def test_resolve_model_passes_a_bundle_directory_through(bundle_dir: Path) -> None:
    assert resolve_model.fn(str(bundle_dir), None, None) == str(bundle_dir.resolve())


def test_resolve_model_refuses_what_it_cannot_find(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such bundle directory"):
        resolve_model.fn(str(tmp_path / "missing"), None, None)
    with pytest.raises(ValueError, match="set tracking_uri"):
        resolve_model.fn("models:/tagger@champion", None, None)


def test_resolve_model_downloads_a_registered_version(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tagger.bundle.registry import log_bundle

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow_uris(uri):
        reg = log_bundle(
            bundle_dir, name="tagger", alias="champion", experiment_id=experiment, client=client
        )
    local = Path(resolve_model.fn("models:/tagger@champion", uri, str(tmp_path / "cache")))
    assert local.is_relative_to(tmp_path / "cache") and (local / "bundle.json").exists()
    assert reg.version == "1"
    assert not any((tmp_path / "cwd").iterdir()), "MLflow wrote into the working folder"


def test_tag_images_writes_one_record_per_image(
    bundle_dir: Path, album: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "tags.jsonl"
    summary = tag_images.fn(_config(album, bundle_dir, out), str(bundle_dir))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 5 and summary.images == 5
    assert summary.tagged == 4 and summary.errors == {"not_an_image": 1}
    assert "cat" not in summary.tag_counts, "a disabled tag is never emitted"
    assert summary.tag_counts["dog"] == 4


def test_album_markdown_lists_counts_errors_and_tags() -> None:
    summary = AlbumSummary(
        output="o.jsonl",
        model="models:/tagger@champion",
        bundle="b",
        images=3,
        tagged=2,
        skipped=0,
        errors={"truncated": 1},
        seconds=1.0,
        tag_counts={"dog": 2, "beach": 1},
    )
    text = album_markdown(summary)
    assert "| truncated | 1 |" in text and "| dog | 2 |" in text and "images: 3" in text


def test_tag_album_flow_resumes_and_publishes_an_artifact(
    bundle_dir: Path, album: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    out = tmp_path / "tags.jsonl"
    first = tag_album(_config(album, bundle_dir, out))
    assert first.images == 5 and first.skipped == 0
    write_images(album / "more", n=1, seed=3)
    again = tag_album(_config(album, bundle_dir, out))
    assert again.skipped == 5 and again.images == 6, "a rerun only tags the new image"
    assert len(out.read_text().splitlines()) == 6
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tag-album-summary"]))
        )
    assert any(str(out) in str(a.data) for a in artifacts)


@pytest.mark.filterwarnings("ignore:Artifact creation outside:FutureWarning")
def test_publish_album_artifact_runs_outside_a_flow() -> None:
    summary = AlbumSummary(
        output="o",
        model="m",
        bundle="b",
        images=0,
        tagged=0,
        skipped=0,
        errors={},
        seconds=0.0,
        tag_counts={},
    )
    publish_album_artifact.fn(summary)
