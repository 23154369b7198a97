"""The MLflow edge: log a bundle as a model, register it, move aliases, resolve model URIs.

The only library module that imports MLflow. A bundle is logged as an `mlflow.pyfunc` model
whose artifact is the bundle directory and whose code is `tagger/registry_model.py` (MLflow
"models from code": nothing is pickled). Input: a DataFrame with a string column `image`
(a local path or a `data:image/...;base64,` URI); output: one float column per tag (scores).

Aliases: every registered version gets `@candidate`; `promote` moves `@champion` to it only when
it does not lose to the current champion on the same held-out data (mAP and the share of tags
meeting their precision target), and writes the decision on the model version.

The tracking and registry URIs are MLflow's own (`mlflow.set_tracking_uri` or
`MLFLOW_TRACKING_URI`), so the same code runs against the embedded SQLite store and an
`mlflow server`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel
from PIL import Image

from tagger.bundle.model_bundle import BUNDLE_FILE, Bundle, read_bundle
from tagger.calibrate.evaluation import (
    EvalData,
    ModelScore,
    common_tags,
    decide_promotion,
    score_model,
)
from tagger.data.images import ImageError, load_rgb_square, resize_square, to_rgb
from tagger.train.dataset import normalize_images

DEFAULT_MODEL_NAME = "tagger"
CANDIDATE = "candidate"
CHAMPION = "champion"
ARTIFACT_NAME = "model"
MODEL_CODE = Path(__file__).with_name("registry_model.py")
DEFAULT_CACHE = Path("~/.cache/album-tagger/models")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_RUN_URI = re.compile(r"^runs:/(?P<run>[^/]+)/(?P<path>.+)$")


# ---- the pyfunc model ------------------------------------------------------------------------


class TaggerPyfunc(PythonModel):
    """Scores for a column of images: `DataFrame[image: str] -> DataFrame[<tag id>: float]`.

    An image that cannot be decoded gives a row of NaN (the batch goes on).
    """

    batch_size = 16

    def load_context(self, context: Any) -> None:
        self.bundle = read_bundle(context.artifacts["bundle"])
        self.model = self.bundle.create_model()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        # A DataFrame hint is one MLflow infers no schema from (the logged signature stays the
        # only one) and it keeps MLflow from warning that the method has no type hints.
        images = _input_images(model_input)
        return pd.DataFrame(
            score_images(self.bundle, self.model, images), columns=list(self.bundle.tag_ids)
        )


def _input_images(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise ValueError(f"input needs a column 'image'; got {list(model_input.columns)}")
        return [str(v) for v in model_input["image"]]
    return [str(v) for v in np.asarray(model_input).ravel()]


@torch.inference_mode()
def score_images(bundle: Bundle, model: torch.nn.Module, images: list[str]) -> np.ndarray:
    """Probabilities `[len(images), T]` float32 for paths or data URIs; NaN rows on failure."""
    prep = bundle.preprocessing
    size, fit = int(prep["image_size"]), prep["resize"]
    out = np.full((len(images), len(bundle.tag_ids)), np.nan, dtype=np.float32)
    for start in range(0, len(images), TaggerPyfunc.batch_size):
        rows, tensors = [], []
        for i in range(start, min(start + TaggerPyfunc.batch_size, len(images))):
            try:
                pil = _decode(images[i], size, fit)
            except (ImageError, OSError, ValueError):  # one bad image must not fail the batch
                continue
            rows.append(i)
            tensors.append(torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()))
        if rows:
            batch = torch.stack(tensors).permute(0, 3, 1, 2)
            logits = model(normalize_images(batch, prep["mean"], prep["std"]))
            out[rows] = torch.sigmoid(logits.float()).numpy()
    return out


def _decode(image: str, size: int, fit: str) -> Image.Image:
    if image.startswith("data:"):
        payload = base64.b64decode(image.split(",", 1)[1])
        with Image.open(io.BytesIO(payload)) as im:
            return resize_square(to_rgb(im), size, fit)  # type: ignore[arg-type]
    return load_rgb_square(image, size, fit=fit)  # type: ignore[arg-type]


def example_image_uri(size: int = 8) -> str:
    """A tiny grey PNG as a data URI: a self-contained input example."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---- logging and registering -----------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredBundle:
    """Where a logged bundle went: the registered version's URI, the run, the logged model."""

    model_uri: str  # models:/<name>/<version>
    run_id: str
    name: str
    version: str
    logged_model_uri: str  # models:/<logged model id> (MLflow 3's own id for the artifact)


def log_bundle(
    bundle_dir: str | Path,
    *,
    name: str = DEFAULT_MODEL_NAME,
    alias: str = CANDIDATE,
    run_id: str | None = None,
    experiment_id: str | None = None,
    client: MlflowClient | None = None,
) -> RegisteredBundle:
    """Log `bundle_dir` as a pyfunc model, register it under `name`, point `alias` at it.

    The model goes into run `run_id`, else the active run, else a new run in `experiment_id`
    (or MLflow's active experiment), which is ended afterwards.
    """
    client = client or MlflowClient()
    bundle = read_bundle(bundle_dir)
    signature = infer_signature(
        pd.DataFrame({"image": ["path/or/data-uri"]}),
        pd.DataFrame(np.zeros((1, len(bundle.tag_ids))), columns=list(bundle.tag_ids)),
    )
    active_run = mlflow.active_run()
    if active_run is not None and run_id in (None, active_run.info.run_id):
        run: Any = nullcontext(active_run)
    else:
        run = mlflow.start_run(
            run_id=run_id, experiment_id=experiment_id, nested=active_run is not None
        )
    with run as active, _no_local_copy_progress_bar():
        assert active is not None
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=str(MODEL_CODE),
            artifacts={"bundle": str(Path(bundle_dir).resolve())},
            signature=signature,
            input_example=pd.DataFrame({"image": [example_image_uri()]}),
            registered_model_name=name,
            pip_requirements=_requirements(),
        )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(name, alias, version)
        tags = {
            "dataset_hash": bundle.dataset_hash,
            "backbone": bundle.model_config.backbone,
            "taxonomy": f"{bundle.taxonomy.name}@{bundle.taxonomy.version}",
            "num_tags": str(len(bundle.tag_ids)),
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        return RegisteredBundle(
            f"models:/{name}/{version}", active.info.run_id, name, version, info.model_uri
        )


@contextmanager
def _no_local_copy_progress_bar() -> Iterator[None]:
    """No "Downloading artifacts" bar while `log_model` reads back the model it just wrote to
    check the input example: a copy between local folders, not a download.

    MLflow reads its documented switch MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR from the
    environment only, so it is set for this block (unless the user set it) and then removed.
    """
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _requirements() -> list[str]:
    """What the pyfunc needs at load time (explicit: MLflow's inference would import the model
    in a subprocess). The `album-tagger` package itself must be installed where it loads."""
    import safetensors
    import timm

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"timm=={timm.__version__}",
        f"safetensors=={safetensors.__version__}",
        f"mlflow=={mlflow.__version__}",
        "pillow",
        "pandas",
        "numpy",
        "pyyaml",
        "pydantic>=2",
    ]


def log_review(
    run_id: str,
    table: pd.DataFrame,
    figures: Mapping[str, Figure | Path],
    thresholds_path: str | Path,
    dataset_hash: str,
    *,
    metrics: Mapping[str, float] | None = None,
    client: MlflowClient | None = None,
    prefix: str = "review",
) -> None:
    """What a reviewer opens in the run: the per-tag table (`log_table`), the pictures, the
    thresholds file, the dataset hash (a param) and headline metrics."""
    client = client or MlflowClient()
    client.log_table(run_id, data=table, artifact_file=f"{prefix}/tag_report.json")
    for name, fig in figures.items():
        if isinstance(fig, Figure):
            client.log_figure(run_id, fig, f"{prefix}/{name}.png")
        else:
            client.log_artifact(run_id, str(fig), prefix)
    client.log_artifact(run_id, str(thresholds_path), prefix)
    client.log_param(run_id, "dataset_hash", dataset_hash)
    for key, value in (metrics or {}).items():
        if value == value:  # MLflow rejects NaN on some stores; skip undefined figures
            client.log_metric(run_id, key, float(value))


# ---- promotion -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of `promote`, as written on the candidate's model version."""

    promoted: bool
    reason: str
    name: str
    version: str
    champion_version: str | None  # the champion it was compared with
    candidate: ModelScore | None
    champion: ModelScore | None


def champion_version(name: str, client: MlflowClient | None = None) -> str | None:
    """The version `@champion` points at, or None."""
    return _alias_version(client or MlflowClient(), name, CHAMPION)


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(
    name: str,
    version: str | int,
    *,
    data: EvalData,
    predict_fn: Callable[[Bundle], np.ndarray],
    tolerance: float = 0.0,
    client: MlflowClient | None = None,
    cache_dir: Path | None = None,
) -> PromotionDecision:
    """Move `@champion` to `name/version` unless it loses to the current champion.

    Both models are scored on `data` (held-out labels) with `predict_fn(bundle) -> probs
    [N, bundle's T]` for the same images, on the tags both models and the data share. The
    decision, its reason and figures become tags and the description of the model version.
    """
    client = client or MlflowClient()
    version = str(version)
    client.get_model_version(name, version)  # fails loudly when it does not exist
    current = _alias_version(client, name, CHAMPION)
    if current == version:
        decision = PromotionDecision(True, "already champion", name, version, current, None, None)
        return _record(client, decision)
    where = {"cache_dir": cache_dir, "tracking_uri": client.tracking_uri}
    candidate = read_bundle(resolve_bundle(f"models:/{name}/{version}", **where))
    cand_score, champ_score = None, None
    if current is None:
        cand_score = _score_alone(candidate, data, predict_fn)
        promoted, reason = decide_promotion(cand_score, None)
    else:
        champion = read_bundle(resolve_bundle(f"models:/{name}/{current}", **where))
        tags = common_tags(candidate.tag_ids, champion.tag_ids, data.tag_ids)
        if not tags:
            raise ValueError(
                f"{name}: versions {version} and {current} and the evaluation data share no tags"
            )
        cand_score = _score(candidate, data, predict_fn, tags)
        champ_score = _score(champion, data, predict_fn, tags)
        promoted, reason = decide_promotion(cand_score, champ_score, tolerance)
    decision = PromotionDecision(promoted, reason, name, version, current, cand_score, champ_score)
    _record(client, decision)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return decision


def _score(
    bundle: Bundle, data: EvalData, predict_fn: Callable[[Bundle], np.ndarray], tags: list[str]
) -> ModelScore:
    probs = predict_fn(bundle)
    return score_model(
        probs, bundle.tag_ids, bundle.thresholds, bundle.threshold_report, data, tags
    )


def _score_alone(
    bundle: Bundle, data: EvalData, predict_fn: Callable[[Bundle], np.ndarray]
) -> ModelScore:
    tags = common_tags(bundle.tag_ids, data.tag_ids)
    return _score(bundle, data, predict_fn, tags)


def _record(client: MlflowClient, d: PromotionDecision) -> PromotionDecision:
    tags: dict[str, str] = {
        "promotion.decision": "promoted" if d.promoted else "rejected",
        "promotion.reason": d.reason,
        "promotion.compared_with": d.champion_version or "none",
    }
    for prefix, score in (
        ("promotion.candidate.", d.candidate),
        ("promotion.champion.", d.champion),
    ):
        if score is not None:
            tags.update({k: f"{v:.6g}" for k, v in score.as_dict(prefix).items()})
    for key, value in tags.items():
        client.set_model_version_tag(d.name, d.version, key, value)
    lines = [
        f"**Promotion: {tags['promotion.decision']}** — {d.reason}",
        "",
        "| figure | candidate | champion |",
        "|---|---|---|",
    ]
    for field_name in ("map", "share_meeting_target", "n_tags", "n_target_tags", "n_images"):
        cand = "" if d.candidate is None else f"{getattr(d.candidate, field_name):.4g}"
        champ = "" if d.champion is None else f"{getattr(d.champion, field_name):.4g}"
        lines.append(f"| {field_name} | {cand} | {champ} |")
    client.update_model_version(d.name, d.version, description="\n".join(lines))
    return d


# ---- resolving model URIs to local bundle directories ----------------------------------------


def resolve_bundle(
    uri: str, *, cache_dir: Path | None = None, tracking_uri: str | None = None
) -> Path:
    """Local bundle directory for "models:/name@alias", "models:/name/3" or "runs:/run/path".

    Registered versions and run artifacts never change, so each is downloaded once into
    `cache_dir` (default `$TAGGER_MODEL_CACHE` or ~/.cache/album-tagger/models); an alias is
    looked up on every call. Other URIs download afresh. `tracking_uri` (also used as the
    registry URI) defaults to MLflow's own setting.
    """
    tracking_uri, registry_uri = store_uris(tracking_uri)
    client = MlflowClient(tracking_uri, registry_uri)
    env = os.environ.get("TAGGER_MODEL_CACHE")
    root = Path(cache_dir or env or DEFAULT_CACHE).expanduser()
    key, source = _cache_key(uri, client, tracking_uri)
    target = root / key
    if (target / BUNDLE_FILE).exists() and not key.startswith("uri/"):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        local = _copy_artifacts(source, Path(tmp), client, registry_uri)
        found = sorted(local.rglob(BUNDLE_FILE))
        if len(found) != 1:
            raise ValueError(
                f"{uri}: expected one model bundle ({BUNDLE_FILE}) in the "
                f"artifacts, found {len(found)}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a stale or half-written copy, or a URI that is not cached
            shutil.rmtree(target)
        try:
            found[0].parent.rename(target)
        except OSError:
            if not (target / BUNDLE_FILE).exists():  # another process won the race: fine
                raise
    return target


def store_uris(tracking_uri: str | None = None) -> tuple[str, str]:
    """(tracking URI, registry URI) that a model URI resolves against: `tracking_uri` for both,
    else MLflow's own settings (`MLFLOW_TRACKING_URI`, `mlflow.set_tracking_uri`, ...).

    Reading never creates a store: a local store (SQLite file, file store folder) that does not
    exist raises FileNotFoundError naming it, where the URI came from and how to point
    elsewhere. MLflow 3's default without MLFLOW_TRACKING_URI is `sqlite:///<cwd>/mlflow.db`,
    which it would otherwise create on first use.
    """
    uris = (tracking_uri, tracking_uri) if tracking_uri else _mlflow_uris()
    for uri in dict.fromkeys(uris):
        path = _local_store_path(uri)
        if path is not None and not path.exists():
            raise FileNotFoundError(
                f"no MLflow tracking store at {path} ({uri}, {_uri_origin(tracking_uri)}); "
                f"point at the store that holds the model with --tracking-uri or "
                f"MLFLOW_TRACKING_URI, e.g. http://127.0.0.1:5000 or "
                f"sqlite:////abs/path/work/demo/mlflow.db"
            )
    return uris


def _mlflow_uris() -> tuple[str, str]:
    return str(mlflow.get_tracking_uri()), str(mlflow.get_registry_uri())


def _uri_origin(explicit: str | None) -> str:
    if explicit:
        return "as given"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return "from MLFLOW_TRACKING_URI"
    return "MLflow's default, since MLFLOW_TRACKING_URI is not set"


def _local_store_path(uri: str) -> Path | None:
    """The file or folder of a local store URI (sqlite:///..., file:..., a plain path)."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    if uri.startswith("file:"):
        return _file_uri_path(uri)
    return None if "://" in uri or ":/" in uri else Path(uri)


def _file_uri_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    return Path(urllib.request.url2pathname(parsed.path))


def _copy_artifacts(source: str, dst: Path, client: MlflowClient, registry_uri: str) -> Path:
    """The artifacts at `source` in `dst`: copied when they are on this machine (no MLflow
    download machinery, no progress bar for a local copy), else downloaded."""
    place = source
    if m := _RUN_URI.match(source):  # runs:/<run>/<path>: its place in the run's artifacts
        place = f"{str(client.get_run(m['run']).info.artifact_uri).rstrip('/')}/{m['path']}"
    local = _file_uri_path(place) if place.startswith("file:") else None
    if local is None and "://" not in place and ":/" not in place:
        local = Path(place)
    # (a runs:/ URI of an MLflow 3 logged model names no folder of the run: MLflow finds it)
    if local is not None and local.exists():
        target = dst / local.name
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copy2(local, target)
        return target
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source,
            dst_path=str(dst),
            tracking_uri=client.tracking_uri,
            registry_uri=registry_uri,
        )
    )


def _cache_key(uri: str, client: MlflowClient, store: str) -> tuple[str, str]:
    """(cache folder relative to the root, concrete URI to download)."""
    if m := _MODEL_URI.match(uri):
        name = m["name"]
        version = m["version"] or _alias_version(client, name, m["alias"])
        if version is None:
            raise ValueError(
                f"{uri}: registered model {name!r} has no alias {m['alias']!r} in the MLflow "
                f"tracking store {store}; point at another store with --tracking-uri or "
                "MLFLOW_TRACKING_URI"
            )
        # The version's own artifact location, so the download does not go through MLflow's
        # global registry client (which would open a default store in the working folder).
        source = client.get_model_version_download_uri(name, version)
        return f"models/{_safe(name)}/{version}", source
    if m := _RUN_URI.match(uri):
        return f"runs/{_safe(m['run'])}/{_safe(m['path'])}", uri
    return f"uri/{hashlib.sha256(uri.encode()).hexdigest()[:16]}", uri


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)
