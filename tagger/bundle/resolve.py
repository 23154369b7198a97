"""Where a model comes from: a bundle directory, or an MLflow model URI resolved to one.

Sits above both `model_bundle` (the files) and `registry` (the MLflow edge), so neither needs
the other's way of finding a model; MLflow is imported only when a URI asks for it.
"""

from __future__ import annotations

from pathlib import Path

from tagger.bundle.model_bundle import URI_SCHEMES, Bundle, read_bundle


def is_model_uri(model: str | Path) -> bool:
    """True for "models:/...", "runs:/..." and "mlflow-artifacts:/..." strings."""
    return isinstance(model, str) and model.startswith(URI_SCHEMES)


def resolve_model_uri(
    model: str | Path, *, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> Path:
    """A local bundle directory for a bundle path or an MLflow model URI (downloaded once)."""
    if is_model_uri(model):
        from tagger.bundle.registry import resolve_bundle  # MLflow only when a URI asks for it

        return resolve_bundle(str(model), cache_dir=cache_dir, tracking_uri=tracking_uri)
    return Path(model)


def load_bundle(
    path_or_uri: str | Path,
    trust_pickle: bool = False,
    *,
    cache_dir: Path | None = None,
    tracking_uri: str | None = None,
) -> Bundle:
    """Load a bundle directory, or an MLflow model URI (downloaded once into `cache_dir`;
    `tracking_uri` defaults to MLflow's own setting). See `read_bundle` for the checks.

    >>> bundle = load_bundle("models:/tagger@champion")  # doctest: +SKIP
    """
    directory = resolve_model_uri(path_or_uri, tracking_uri=tracking_uri, cache_dir=cache_dir)
    return read_bundle(directory, trust_pickle)
