"""tag-album: tag an album's photos with a model bundle (default `models:/tagger@champion`).

Album jobs run it through the `tag-album` deployment (deploy/prefect.yaml). It resolves the model
once (MLflow download, retried), runs `tagger.predict` over the inputs into a JSONL (or Parquet /
CSV) file, resumably, and publishes a markdown artifact with the counts.

    python -m flows.tag_album album/ album_tags.jsonl --tracking-uri sqlite:///work/demo/mlflow.db
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.tracking import mlflow_uris
from tagger.bundle.model_bundle import URI_SCHEMES
from tagger.inference.api import write_predictions
from tagger.inference.options import DEFAULT_MODEL, PredictOptions
from tagger.inference.records import read_records

TOP_TAGS = 15
RETRY_DELAYS: list[float] = [2, 10, 30]  # seconds; the MLflow download only


class TagAlbumConfig(BaseModel):
    """One album job.

    inputs: a folder (recursive), a manifest (.parquet) or one image.
    output: records file; its suffix picks the format (.jsonl, .parquet, .csv).
    model: a bundle directory or an MLflow model URI ("models:/tagger@champion").
    tracking_uri: the MLflow tracking URI that `models:/` and `runs:/` URIs resolve against
      (required for them: no implicit ./mlruns or environment lookup).
    model_cache: where registered bundles are downloaded (None: $TAGGER_MODEL_CACHE or
      ~/.cache/album-tagger/models); a version is downloaded once, an alias looked up each run.
    mode: "resume" skips images already in `output` (a killed job finishes where it stopped),
      "overwrite" starts again, "new" refuses an existing output.
    """

    model_config = ConfigDict(extra="forbid")

    inputs: str
    output: str
    model: str = DEFAULT_MODEL
    tracking_uri: str | None = None
    model_cache: str | None = None
    mode: Literal["new", "resume", "overwrite"] = "resume"
    options: PredictOptions = Field(default_factory=PredictOptions)


class AlbumSummary(BaseModel):
    """What a tag-album run did."""

    output: str
    model: str
    bundle: str
    images: int
    tagged: int
    skipped: int
    errors: dict[str, int]
    seconds: float
    tag_counts: dict[str, int]


@task(name="resolve-model", retries=3, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
def resolve_model(model: str, tracking_uri: str | None, model_cache: str | None) -> str:
    """A local bundle directory for `model`: a bundle directory as is, an MLflow model URI
    downloaded (once per version) from `tracking_uri`."""
    if not model.startswith(URI_SCHEMES):
        if not Path(model).is_dir():
            raise FileNotFoundError(
                f"model {model!r}: no such bundle directory (or give an "
                f"MLflow URI starting with {' or '.join(URI_SCHEMES)})"
            )
        return str(Path(model).resolve())
    if tracking_uri is None:
        raise ValueError(
            f"model {model!r} is an MLflow URI: set tracking_uri (e.g. "
            "http://127.0.0.1:5000 or sqlite:///work/demo/mlflow.db)"
        )
    from tagger.bundle.registry import resolve_bundle

    cache = Path(model_cache).expanduser() if model_cache else None
    # MLflow resolves `models:/` through its process-wide registry URI even when one is passed
    # explicitly (ModelsArtifactRepository); without this it would open ./mlflow.db.
    with mlflow_uris(tracking_uri):
        return str(resolve_bundle(model, cache_dir=cache, tracking_uri=tracking_uri))


@task(name="tag-images", cache_policy=NO_CACHE)
def tag_images(config: TagAlbumConfig, bundle_dir: str) -> AlbumSummary:
    """Run `tagger.predict` over `config.inputs` into `config.output`; count what came out."""
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    summary = write_predictions(
        config.inputs, bundle_dir, config.output, mode=config.mode, **config.options.model_dump()
    )
    tags: Counter[str] = Counter()
    for record in read_records(config.output):
        tags.update(t.id for t in record.tags)
    return AlbumSummary(
        output=config.output,
        model=config.model,
        bundle=bundle_dir,
        images=summary.images + summary.skipped,
        tagged=summary.tagged,
        skipped=summary.skipped,
        errors=dict(summary.errors),
        seconds=round(summary.seconds, 2),
        tag_counts=dict(tags.most_common()),
    )


def album_markdown(summary: AlbumSummary) -> str:
    """The tag-album artifact: counts, errors by code, most frequent tags."""
    errors = "".join(f"| {code} | {n} |\n" for code, n in sorted(summary.errors.items()))
    top = "".join(f"| {tag} | {n} |\n" for tag, n in list(summary.tag_counts.items())[:TOP_TAGS])
    return (
        "# tag-album\n\n"
        f"- model: `{summary.model}` (bundle `{summary.bundle}`)\n"
        f"- output: `{summary.output}`\n"
        f"- images: {summary.images} (tagged in this run {summary.tagged}, "
        f"already done before {summary.skipped}), {summary.seconds:.1f} s\n\n"
        "| error | images |\n|---|---|\n" + (errors or "| none | 0 |\n") + "\n"
        "| tag | images |\n|---|---|\n" + (top or "| none | 0 |\n")
    )


@task(name="publish-artifact", cache_policy=NO_CACHE)
def publish_album_artifact(summary: AlbumSummary) -> None:
    """The markdown artifact of the run (Prefect UI → flow run → Artifacts)."""
    create_markdown_artifact(
        album_markdown(summary), key="tag-album-summary", description="tag-album counts"
    )


@flow(name="tag-album")
def tag_album(config: TagAlbumConfig) -> AlbumSummary:
    """Tag the images of `config.inputs` with `config.model`; records go to `config.output`."""
    bundle_dir = resolve_model(config.model, config.tracking_uri, config.model_cache)
    summary = tag_images(config, bundle_dir)
    publish_album_artifact(summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs")
    parser.add_argument("output")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--model-cache", default=None)
    parser.add_argument("--mode", default="resume", choices=["new", "resume", "overwrite"])
    args = parser.parse_args(argv)
    if not Path(args.inputs).exists():  # before Prefect's server starts
        parser.error(f"input {args.inputs!r} does not exist")
    summary = tag_album(
        TagAlbumConfig(
            inputs=args.inputs,
            output=args.output,
            model=args.model,
            tracking_uri=args.tracking_uri,
            model_cache=args.model_cache,
            mode=args.mode,
        )
    )
    print(summary.model_dump_json(indent=2))


if __name__ == "__main__":
    from flows.entry_point import run_entry_point

    run_entry_point("python -m flows.tag_album", main)
