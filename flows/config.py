"""The retrain flow's one config: the stage configs composed, validated, loaded from YAML.

    work_dir: ../../work/demo          # relative paths: against this file's folder
    demo: {size: 96, coco: 60}         # generate the demo sources ... or name real ones:
    assemble: shared_data.yaml         #   an assembly YAML, or its fields inline
    train: {model: {backbone: resnet18, image_size: 64}, schedule: {epochs: 1}}
    crossfit: {enabled: true, k: 5}   # out-of-fold probabilities for calibration (and cleaning)
    calibrate: {target_precision: 0.9}
    promotion: {tolerance: 0.0}
    mlflow: {tracking_uri: null}       # null: sqlite:///<work_dir>/mlflow.db
    cleaning: {enabled: true, pseudo: {top_k: 5}}   # label cleaning (flows/clean.py)
    priors: {enabled: true, rules: null, drop_harmful: false}  # rules: null = shipped priors.yaml
    detector: {enabled: true, backend: ssd}  # small-object detector fused into the tags

`load_retrain_config(path, overrides)` takes dotted overrides ({"train.schedule.epochs": 2,
"work_dir": "/tmp/w"}) as a deployment or a command line passes them; relative paths among
them resolve against the current folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flows.crossfit import CrossFitStage
from flows.tracking import TrackingConfig
from tagger.calibrate.precision_check import PrecisionCheckConfig
from tagger.calibrate.thresholds import CalibrationConfig
from tagger.clean.job import CleanConfig, resolve_clean_paths
from tagger.data.assembly_job import AssemblyConfig
from tagger.data.demo import DemoConfig
from tagger.detect.detections import DetectorConfig
from tagger.priors.job import PriorsConfig
from tagger.train.crossfit import CrossFitConfig
from tagger.train.training import TrainConfig, resolve_paths


class RetrainConfigError(ValueError):
    """A bad retrain config: names the file, the field, the value given and what is allowed."""


class CleaningStage(CleanConfig):
    """Label cleaning between assemble and train (`tagger.clean`): out-of-fold label issues,
    pseudo labels, album feedback, the review queue and its exports (see flows/clean.py).

    crossfit: settings of the out-of-fold models (cheaper than the final model is fine).
    manifest: a reviewed manifest version (`tagger review import`) to clean and train on
    instead of the assembled one; its images must come from the assembled sources.
    The other fields are `tagger.clean.job.CleanConfig`'s.
    """

    enabled: bool = False
    crossfit: CrossFitConfig = CrossFitConfig(k=3)
    manifest: Path | None = None

    def clean_config(self) -> CleanConfig:
        """The library's config (without the flow's switches)."""
        return CleanConfig.model_validate(
            self.model_dump(exclude={"enabled", "crossfit", "manifest"})
        )


class PromotionConfig(BaseModel):
    """When a new model takes `@champion`: it must not lose on mAP nor on the share of tags
    meeting their precision target, by more than `tolerance` (absolute)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    enabled: bool = Field(default=True, description="false: register as @candidate only")


# train.data fields the flow fills in; train.output_dir is ignored too (<work_dir>/train/<key>)
FLOW_OWNED_DATA = ("manifest", "cache_dir", "taxonomy")


class RetrainConfig(BaseModel):
    """Everything one retrain run needs. Exactly one of `demo` and `assemble` names the data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    work_dir: Path = Path("work/retrain")
    cache: bool = Field(default=True, description="false: recompute every stage")
    demo: DemoConfig | None = None
    assemble: AssemblyConfig | Path | None = None
    train: TrainConfig = TrainConfig()
    crossfit: CrossFitStage = CrossFitStage()
    calibrate: CalibrationConfig = CalibrationConfig()
    promotion: PromotionConfig = PromotionConfig()
    precision: PrecisionCheckConfig = PrecisionCheckConfig()  # bf16 / int8 checked vs fp32
    mlflow: TrackingConfig = TrackingConfig()
    cleaning: CleaningStage = CleaningStage()
    detector: DetectorConfig = DetectorConfig()  # stage 4: detect + fuse (tagger.detect)
    priors: PriorsConfig = PriorsConfig()

    @model_validator(mode="after")
    def _check_stages(self) -> RetrainConfig:
        if (self.demo is None) == (self.assemble is None):
            raise ValueError(
                "give exactly one of `demo` (generate the demo data set) and `assemble` (an "
                "assembly config: a YAML path or its fields inline)"
            )
        if self.train.data.val_fold is None:
            raise ValueError(
                "train.data.val_fold: null is not allowed here; calibration and promotion need "
                "a held-out fold (an int, e.g. 0)"
            )
        set_by_flow = [k for k in FLOW_OWNED_DATA if getattr(self.train.data, k) is not None]
        if set_by_flow:
            raise ValueError(
                f"train.data.{', train.data.'.join(set_by_flow)}: set by the retrain flow (the "
                "assembled manifest, its cache and taxonomy); remove them from the config"
            )
        return self

    @property
    def heldout_fold(self) -> int:
        """The fold that calibration and promotion score (training's validation fold)."""
        assert self.train.data.val_fold is not None  # checked by _check_stages
        return self.train.data.val_fold


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with dotted-key overrides set: {"train.schedule.epochs": 1} -> data[train]...."""
    out = dict(data)
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        node = out
        for key in keys[:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, dict) else {}
            node = node[key]
        node[keys[-1]] = value
    return out


def _resolve(base: Path, value: Any) -> Any:
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the top-level paths of a retrain config absolute against `base`."""
    out = dict(data)
    if out.get("work_dir") is not None:
        out["work_dir"] = _resolve(base, out["work_dir"])
    assemble = out.get("assemble")
    if isinstance(assemble, str):
        out["assemble"] = _resolve(base, assemble)
    elif isinstance(assemble, dict):
        out["assemble"] = {**assemble, "base_dir": _resolve(base, assemble.get("base_dir", "."))}
    priors = out.get("priors")
    if isinstance(priors, dict) and priors.get("rules") is not None:
        out["priors"] = {**priors, "rules": _resolve(base, priors["rules"])}
    if out.get("priors.rules") is not None:  # a dotted override
        out["priors.rules"] = _resolve(base, out["priors.rules"])
    return out


def _format_errors(error: ValidationError, file: str) -> str:
    lines = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        given = e.get("input")
        shown = "" if isinstance(given, dict) else f" (given: {given!r})"
        lines.append(f"{file}: {loc}: {e['msg']}{shown}")
    return "\n".join(lines)


def parse_retrain_config(data: object, file: str | Path = "<memory>") -> RetrainConfig:
    """Validate plain data; RetrainConfigError names the file, field, value and what is allowed."""
    if not isinstance(data, dict):
        raise RetrainConfigError(f"{file}: expected a mapping of retrain settings, got {data!r}")
    try:
        config = RetrainConfig.model_validate(data)
    except ValidationError as error:
        raise RetrainConfigError(_format_errors(error, str(file))) from None
    rules = config.priors.rules
    if config.priors.enabled and rules is not None and not Path(rules).is_file():
        raise RetrainConfigError(f"{file}: priors.rules: no priors file {str(rules)!r}")
    if isinstance(config.assemble, Path):
        from tagger.data.assembly_job import load_assembly_config

        try:
            assembly = load_assembly_config(config.assemble)
        except ValueError as error:
            raise RetrainConfigError(f"{file}: assemble: {error}") from None
        config = config.model_copy(update={"assemble": assembly})
    return config


def with_overrides(config: RetrainConfig, overrides: Mapping[str, Any]) -> RetrainConfig:
    """`config` with dotted overrides applied, validated again (the same config for none).

    Relative `work_dir` / `assemble` paths among the overrides resolve against the current folder.
    """
    if not overrides:
        return config
    extra = _resolve_relative_paths(dict(overrides), Path.cwd())
    return parse_retrain_config(apply_overrides(config.model_dump(), extra))


def load_retrain_config(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> RetrainConfig:
    """Read a retrain YAML and apply dotted `overrides`.

    Relative paths in the file resolve against its folder; relative `work_dir` / `assemble`
    paths among the overrides resolve against the current folder.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RetrainConfigError(f"{path}: retrain config file not found") from None
    except yaml.YAMLError as error:
        raise RetrainConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RetrainConfigError(f"{path}: expected a mapping of retrain settings, got {data!r}")
    base = path.resolve().parent
    data = _resolve_relative_paths(data, base)
    extra = _resolve_relative_paths(dict(overrides or {}), Path.cwd())
    config = parse_retrain_config(apply_overrides(data, extra), path)
    train = resolve_paths(config.train, base)  # e.g. model.pretrained, data.image_root
    # output_dir is the flow's (<work_dir>/train/<key>): keep the default so the cache key
    # does not depend on where the config file lives
    train = train.model_copy(update={"output_dir": config.train.output_dir})
    cleaning = resolve_clean_paths(config.cleaning, base)
    if cleaning.manifest is not None and not cleaning.manifest.is_absolute():
        cleaning = cleaning.model_copy(update={"manifest": (base / cleaning.manifest).resolve()})
    return config.model_copy(update={"train": train, "cleaning": cleaning})
