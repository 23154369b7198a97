"""The main command: the whole retrain on the demo data, then tag a few new demo photos.

    python -m flows.demo [--work-dir work/demo] [--images 6] [--set train.schedule.epochs=1]

1. `retrain` (flows/retrain.py) on flows/configs/retrain_demo.yaml: draws the demo sources,
   assembles, trains resnet18 at 64 px, calibrates, logs everything to a local MLflow store
   (`<work_dir>/mlflow.db`), registers the model and promotes it to `@champion`. Prefect runs it
   on its ephemeral local server: nothing to start first.
2. `tag-album` (flows/tag_album.py) with `models:/tagger@champion` on a handful of demo scenes
   the model never saw; the records go to `<work_dir>/album_tags.jsonl`.
3. Prints where to look: the MLflow UI command, run id, model version, output files.
Rerunning reuses every finished stage (content-hash caching); `--set cache=false` recomputes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

from flows.entry_point import existing_file
from flows.retrain import DEFAULT_CONFIG, RetrainSummary, parse_set, retrain
from flows.tag_album import AlbumSummary, TagAlbumConfig, tag_album
from tagger.data.demo import draw_scene, render_scene
from tagger.inference.options import PredictOptions
from tagger.inference.records import read_records

ALBUM_SEED = 1234  # not the training seed: these scenes are new to the model


def write_album(folder: Path, n: int, size: int, seed: int = ALBUM_SEED) -> dict[str, list[str]]:
    """Draw `n` new demo scenes as JPEGs into `folder`; returns file name -> true tags."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        scene = draw_scene(rng, size, size * 3 // 4)
        name = f"photo_{i:02d}.jpg"
        render_scene(scene).save(folder / name, format="JPEG", quality=92)
        truth[name] = scene.tags
    return truth


def report(summary: RetrainSummary, album: AlbumSummary, truth: dict[str, list[str]]) -> str:
    """What the demo did and where to look."""
    lines = ["", "=" * 78, "Demo finished.", ""]
    decision = "promoted to @champion" if summary.promoted else "NOT promoted"
    lines += [
        f"Model:    models:/{summary.model_name}/{summary.version} ({decision}: {summary.reason})",
        f"          @champion -> version {summary.champion_version}",
        f"MLflow:   run {summary.run_id} in experiment '{summary.experiment}'",
        f"          store {summary.tracking_uri}",
        f"          open the UI: {summary.mlflow_ui}   (then http://127.0.0.1:5000)",
        f"Data:     {summary.images} images -> {summary.manifest}",
        f"Bundle:   {summary.bundle}",
        "Metrics:  " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(summary.metrics.items())),
        "",
        f"Tagged {album.images} new demo photos with models:/{summary.model_name}@champion "
        f"-> {album.output}",
    ]
    for record in read_records(album.output):
        name = Path(record.path).name
        got = ", ".join(f"{t.id} {t.score:.2f}" for t in record.tags) or "(no tag passed)"
        if record.error is not None:
            got = f"error {record.error.code}: {record.error.message}"
        lines.append(f"  {name}: {got}")
        lines.append(f"  {'':{len(name)}}  drawn: {', '.join(truth.get(name, []))}")
    lines += [
        "",
        "Prefect: the flow runs and their markdown artifacts (retrain-summary, "
        "tag-album-summary) are in the local Prefect database; `prefect server start` "
        "shows them at http://127.0.0.1:4200.",
        "=" * 78,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, type=existing_file)
    parser.add_argument("--work-dir", default="work/demo")
    parser.add_argument("--images", type=int, default=6, help="new demo photos to tag")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a retrain config field, e.g. train.schedule.epochs=1",
    )
    args = parser.parse_args(argv)
    work = Path(args.work_dir).resolve()
    # the ephemeral Prefect server inherits these settings: no usage analytics leave the machine
    with temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        summary = retrain(args.config, {"work_dir": str(work), **parse_set(args.set)})
        truth = write_album(work / "album", args.images, size=160)
        album = tag_album(
            TagAlbumConfig(
                inputs=str(work / "album"),
                output=str(work / "album_tags.jsonl"),
                model=f"models:/{summary.model_name}@champion",
                tracking_uri=summary.tracking_uri,
                model_cache=str(work / "models"),
                mode="overwrite",
                options=PredictOptions(max_tags=10, workers=0),  # parents count too
            )
        )
    print(report(summary, album, truth))


if __name__ == "__main__":
    from flows.entry_point import run_entry_point
    from tagger.inference.runtime import prefer_heap_reuse

    prefer_heap_reuse()  # ~5% faster CPU training steps, ~25% faster batch inference
    run_entry_point("python -m flows.demo", main)
