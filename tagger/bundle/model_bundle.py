"""The model bundle: one directory that fully describes a tagger and loads without MLflow.

Layout (every file but the optional ones is required; sha256 of each is in bundle.json):

    bundle.json         format, format_version, created_at, dataset_hash, model_config,
                        preprocessing, taxonomy name/version/num_tags, weights file name,
                        files {name: sha256}, metrics (headline), training_data (optional:
                        name, images, demo)
    model.safetensors   network weights (state_dict); read without pickle
    taxonomy.yaml       the taxonomy snapshot (column order of scores and thresholds)
    thresholds.json     per-tag thresholds, policy, status, reason, bound; how they were chosen
                        (`method`: cross-fitted or held-out scores, bound, level)
    metrics.json        evaluation metrics
    priors.yaml         prior rules (optional; `label_system.priors`)
    detector.json       detector settings (optional): architecture description, detector
                        config, fusion model, gate, and the name of its weights file
    detector.safetensors  detector weights (optional; `tagger.detect`); a pickle is refused
                        unless `trust_pickle=True`, as for the network weights
    detector.json       detector settings (optional)
    precision.json      reduced precisions checked against fp32 on held-out images (optional;
                        `tagger.calibrate.precision_check.PrecisionReport`)
    int8_calibration.npz  uint8 images [N, S, S, 3] that calibrate int8 quantization (optional)

`load_bundle` also takes an MLflow model URI ("models:/tagger@champion", "models:/tagger/3",
"runs:/<run>/model"), resolved to a local cached copy by `tagger.bundle.resolve.load_bundle`.
A bundle whose weights are a pickle (.pt, .pth, .bin, .ckpt, .pkl) is refused unless
`trust_pickle=True`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from label_system.priors import PriorRules, load_priors
from label_system.taxonomy import Taxonomy, load_taxonomy
from tagger.calibrate.thresholds import (
    Calibration,
    CalibrationConfig,
    read_thresholds,
    write_thresholds,
)
from tagger.train.model import ModelConfig, create_model

BUNDLE_FORMAT = "album-tagger-bundle"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
TAXONOMY_FILE = "taxonomy.yaml"
THRESHOLDS_FILE = "thresholds.json"
METRICS_FILE = "metrics.json"
PRIORS_FILE = "priors.yaml"
DETECTOR_FILE = "detector.json"
DETECTOR_WEIGHTS_FILE = "detector.safetensors"
PRECISION_FILE = "precision.json"
INT8_CALIBRATION_FILE = "int8_calibration.npz"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class BundleError(ValueError):
    """A bundle directory that cannot be loaded; the message names the path and the problem."""


class Preprocessing(BaseModel):
    """How an image becomes the network's input: a `image_size` square, then mean/std.

    resize: "squash" (whole frame, aspect not kept) or "crop" (centred square), as
    `tagger.data.images.resize_square`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(ge=16)
    resize: Literal["squash", "crop"] = "squash"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def preprocessing_of(bundle: Bundle) -> Preprocessing:
    """The bundle's eval view (image_size square by resize mode, mean/std), validated."""
    return Preprocessing.model_validate(bundle.preprocessing)


def default_preprocessing(config: ModelConfig) -> dict[str, Any]:
    """The eval view the model config implies: squash to `image_size`, the config's mean/std."""
    return Preprocessing(image_size=config.image_size, mean=config.mean, std=config.std).model_dump(
        mode="json"
    )


@dataclass
class Bundle:
    """Everything a tagger needs at prediction time; column order = `taxonomy.tag_ids`."""

    model_config: ModelConfig
    taxonomy: Taxonomy
    thresholds: np.ndarray  # [T] float32, NaN = tag disabled
    threshold_report: pd.DataFrame  # tagger.calibrate.thresholds.REPORT_COLUMNS
    priors: PriorRules | None
    detector: dict[str, Any] | None
    metrics: dict[str, Any]
    preprocessing: dict[str, Any]  # Preprocessing fields
    state_dict: dict[str, torch.Tensor]
    calibration_config: CalibrationConfig = field(default_factory=CalibrationConfig)
    calibration_method: dict[str, Any] = field(default_factory=dict)  # Calibration.method
    dataset_hash: str = ""
    created_at: str = ""
    path: Path | None = None  # where it was loaded from
    weights_sha256: str = ""  # of the weights file it was loaded from ("" when built in memory)
    # what it was trained on: {"name", "images", "demo": bool, ...}; None in older bundles
    training_data: dict[str, Any] | None = None

    @property
    def is_demo(self) -> bool:
        """Trained on the drawn demo data set (its tags on real photos mean nothing)."""
        return bool((self.training_data or {}).get("demo", False))

    detector_weights: dict[str, torch.Tensor] | None = None  # with `detector` (tagger.detect)
    precision: dict[str, Any] | None = None  # PRECISION_FILE: the reduced-precision checks
    calibration_images: np.ndarray | None = None  # INT8_CALIBRATION_FILE: uint8 [N, S, S, 3]

    @property
    def tag_ids(self) -> tuple[str, ...]:
        return self.taxonomy.tag_ids

    def create_model(self) -> nn.Module:
        """The network with the bundle's weights, in eval mode (never downloads)."""
        model = create_model(self.model_config.model_copy(update={"pretrained": False}))
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def create_bundle(
    model: nn.Module | dict[str, torch.Tensor],
    model_config: ModelConfig,
    taxonomy: Taxonomy,
    calibration: Calibration,
    *,
    preprocessing: dict[str, Any] | None = None,
    priors: PriorRules | None = None,
    detector: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dataset_hash: str = "",
    training_data: dict[str, Any] | None = None,
    detector_weights: dict[str, torch.Tensor] | None = None,
) -> Bundle:
    """Assemble a bundle from a trained network (or its state_dict) and its calibration.

    training_data: what the network was trained on, e.g. {"name": "demo", "images": 600,
    "demo": True} (written to bundle.json; `tagger predict` warns about a demo model).
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    bundle = Bundle(
        model_config=model_config.model_copy(update={"pretrained": False}),
        taxonomy=taxonomy,
        thresholds=np.asarray(calibration.thresholds, dtype=np.float32),
        threshold_report=calibration.report,
        priors=priors,
        detector=detector,
        metrics=dict(metrics or {}),
        preprocessing=preprocessing or default_preprocessing(model_config),
        state_dict={k: v.detach().to("cpu") for k, v in state.items()},
        calibration_config=calibration.config,
        calibration_method=dict(calibration.method),
        dataset_hash=dataset_hash,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        training_data=None if training_data is None else dict(training_data),
        detector_weights=detector_weights,
    )
    _check_consistent(bundle, "<in memory>")
    return bundle


def _check_consistent(bundle: Bundle, where: str | Path) -> None:
    t = len(bundle.taxonomy)
    if bundle.model_config.num_tags != t:
        raise BundleError(
            f"{where}: model_config.num_tags {bundle.model_config.num_tags} != "
            f"{t} tags in taxonomy {bundle.taxonomy.name!r}"
        )
    if bundle.thresholds.shape != (t,):
        raise BundleError(f"{where}: thresholds shape {bundle.thresholds.shape}, expected ({t},)")
    try:
        Preprocessing.model_validate(bundle.preprocessing)
    except ValidationError as e:
        raise BundleError(f"{where}: invalid preprocessing:\n{e}") from None


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write `bundle` to `directory` (written beside it, then renamed into place)."""
    directory = Path(directory)
    _check_consistent(bundle, directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / BUNDLE_FILE).exists():
        raise BundleError(f"{directory}: exists and is not a bundle; refusing to replace it")
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in bundle.state_dict.items()}, str(tmp / WEIGHTS_FILE))
    (tmp / TAXONOMY_FILE).write_text(
        yaml.safe_dump(bundle.taxonomy.to_dict(), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    calibration = Calibration(
        bundle.thresholds,
        bundle.threshold_report,
        bundle.calibration_config,
        method=bundle.calibration_method,
    )
    write_thresholds(calibration, tmp / THRESHOLDS_FILE, bundle.taxonomy)
    _write_json(tmp / METRICS_FILE, bundle.metrics)
    if bundle.detector is not None:
        detector = dict(bundle.detector)
        if bundle.detector_weights is not None:
            weights = {k: v.contiguous() for k, v in bundle.detector_weights.items()}
            save_file(weights, str(tmp / DETECTOR_WEIGHTS_FILE))
            detector["weights"] = DETECTOR_WEIGHTS_FILE
        _write_json(tmp / DETECTOR_FILE, detector)
    if bundle.priors is not None:
        write_priors(bundle.priors, tmp / PRIORS_FILE)
    if bundle.precision is not None:
        _write_json(tmp / PRECISION_FILE, bundle.precision)
    if bundle.calibration_images is not None:
        np.savez_compressed(tmp / INT8_CALIBRATION_FILE, pixels=bundle.calibration_images)
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "created_at": bundle.created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset_hash": bundle.dataset_hash,
        "model_config": bundle.model_config.model_dump(mode="json"),
        "preprocessing": bundle.preprocessing,
        "taxonomy": {
            "name": bundle.taxonomy.name,
            "version": bundle.taxonomy.version,
            "num_tags": len(bundle.taxonomy),
        },
        "weights": WEIGHTS_FILE,
        "files": files,
        "metrics": bundle.metrics,
    }
    if bundle.training_data is not None:
        meta["training_data"] = bundle.training_data
    _write_json(tmp / BUNDLE_FILE, meta)
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def read_bundle(directory: str | Path, trust_pickle: bool = False) -> Bundle:
    """Read a bundle directory (an MLflow model URI goes through `tagger.bundle.resolve`).

    Checks every file's sha256 against bundle.json. Weights load with safetensors; pickled
    weights raise a BundleError unless `trust_pickle=True`.
    """
    if isinstance(directory, str) and directory.startswith(URI_SCHEMES):
        raise BundleError(
            f"{directory} is an MLflow model URI: load it with tagger.bundle.resolve.load_bundle"
        )
    directory = Path(directory)
    meta = _read_meta(directory)
    _verify_files(directory, meta)
    taxonomy = load_taxonomy(directory / TAXONOMY_FILE)
    calibration = read_thresholds(directory / THRESHOLDS_FILE, taxonomy)
    try:
        model_config = ModelConfig.model_validate(meta["model_config"])
    except ValidationError as e:
        raise BundleError(f"{directory / BUNDLE_FILE}: invalid model_config:\n{e}") from None
    detector = _read_json(directory / DETECTOR_FILE)
    detector_weights = None
    if detector is not None and detector.get("weights"):
        detector_weights = _read_weights(directory / str(detector["weights"]), trust_pickle)
    bundle = Bundle(
        model_config=model_config,
        taxonomy=taxonomy,
        thresholds=calibration.thresholds,
        threshold_report=calibration.report,
        priors=_read_priors(directory / PRIORS_FILE, taxonomy),
        detector=detector,
        detector_weights=detector_weights,
        metrics=_read_json(directory / METRICS_FILE) or {},
        preprocessing=dict(meta["preprocessing"]),
        state_dict=_read_weights(directory / str(meta["weights"]), trust_pickle),
        calibration_config=calibration.config,
        calibration_method=calibration.method,
        dataset_hash=str(meta.get("dataset_hash", "")),
        created_at=str(meta.get("created_at", "")),
        path=directory,
        weights_sha256=str(meta["files"].get(str(meta["weights"]), "")),
        training_data=_training_data(meta, directory),
        precision=_read_json(directory / PRECISION_FILE),
        calibration_images=_read_pixels(directory / INT8_CALIBRATION_FILE),
    )
    _check_consistent(bundle, directory)
    return bundle


def _read_pixels(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        if "pixels" not in data:
            raise BundleError(f"{path}: expected an array named 'pixels'")
        return np.asarray(data["pixels"])


def _read_meta(directory: Path) -> dict[str, Any]:
    if not directory.exists():
        raise BundleError(f"{directory}: no such model bundle directory")
    if not (directory / BUNDLE_FILE).exists():
        raise BundleError(f"{directory}: not a model bundle (no {BUNDLE_FILE})")
    meta = json.loads((directory / BUNDLE_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{directory / BUNDLE_FILE}: format {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}"
        )
    if meta.get("format_version") != BUNDLE_VERSION:
        raise BundleError(
            f"{directory / BUNDLE_FILE}: format_version "
            f"{meta.get('format_version')!r}; this code reads {BUNDLE_VERSION}"
        )
    missing = [k for k in ("model_config", "preprocessing", "weights", "files") if k not in meta]
    if missing:
        raise BundleError(f"{directory / BUNDLE_FILE}: missing fields {missing}")
    return dict(meta)


def _training_data(meta: dict[str, Any], directory: Path) -> dict[str, Any] | None:
    """bundle.json's optional `training_data` (bundles written before it have none)."""
    value = meta.get("training_data")
    if value is not None and not isinstance(value, dict):
        raise BundleError(f"{directory / BUNDLE_FILE}: training_data must be an object")
    return value


def _verify_files(directory: Path, meta: dict[str, Any]) -> None:
    for name, digest in meta["files"].items():
        path = directory / name
        if not path.exists():
            raise BundleError(f"{path}: listed in {BUNDLE_FILE} but missing")
        if _sha256(path) != digest:
            raise BundleError(
                f"{path}: sha256 differs from {BUNDLE_FILE}; the bundle was "
                "changed after it was written"
            )


def _read_weights(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise BundleError(
                f"{path}: weights are a pickle file ({path.suffix}); unpickling can run "
                "arbitrary code. Re-save the bundle with safetensors (save_bundle does), or pass "
                "trust_pickle=True if you trust where it came from."
            )
        state = torch.load(path, map_location="cpu", weights_only=False)
        return dict(state.get("state_dict", state))
    if path.suffix != ".safetensors":
        raise BundleError(
            f"{path}: unknown weights format {path.suffix!r}; allowed: "
            f".safetensors, or {list(PICKLE_SUFFIXES)} with trust_pickle=True"
        )
    return load_file(str(path))


def write_priors(priors: PriorRules, path: Path) -> Path:
    """Write prior rules in the `label_system.priors` file format (one pair per rule)."""
    path.write_text(yaml.safe_dump(priors.to_dict(), sort_keys=False), encoding="utf-8")
    return path


def _read_priors(path: Path, taxonomy: Taxonomy) -> PriorRules | None:
    if not path.exists():
        return None
    return load_priors(path, taxonomy)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: object) -> None:
    path.write_text(
        json.dumps(data, indent=1, sort_keys=True, default=_json_default, allow_nan=False),
        encoding="utf-8",
    )


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def with_thresholds(bundle: Bundle, calibration: Calibration) -> Bundle:
    """A copy of `bundle` with new thresholds (same taxonomy)."""
    if calibration.thresholds.shape != bundle.thresholds.shape:
        raise BundleError(
            f"thresholds shape {calibration.thresholds.shape} does not fit the "
            f"bundle's {bundle.thresholds.shape}"
        )
    return replace(
        bundle,
        thresholds=calibration.thresholds,
        threshold_report=calibration.report,
        calibration_config=calibration.config,
        calibration_method=dict(calibration.method),
    )
