"""The clean job: out-of-fold predictions + manifest -> issues, pseudo labels, review queue,
exports, and (when something was applied) a new manifest version.

    from tagger.clean.job import CleanConfig, run_clean
    outputs = run_clean(manifest, predictions, CleanConfig(), "work/clean")

Writes into `output_dir`: `issues.parquet` (ranked flagged cells), `issues_per_tag.csv`,
`issues_per_image.csv`, `issues_per_source.csv`, `pseudo_labels.csv`, `queue.csv` (also the
decisions template for `tagger review import`), `contact_sheet.html`, `label_studio_tasks.json`
+ `label_studio_config.xml`, `summary.json`, and `manifest/` (a new manifest version with its
change log) when pseudo labels were accepted or feedback filled unknown cells.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from label_system.mapping import SourceMapping, identity_mapping, load_mapping
from label_system.taxonomy import Taxonomy, load_default_taxonomy, load_taxonomy
from tagger.clean.changes import ManifestVersion, apply_label_changes, write_manifest_version
from tagger.clean.context import ContextConfig, label_context
from tagger.clean.export import (
    DEFAULT_IMAGE_URL,
    label_studio_tasks,
    write_contact_sheet,
    write_label_studio,
)
from tagger.clean.feedback import feedback_evidence, read_feedback, split_feedback
from tagger.clean.issues import IssueConfig, LabelIssues, find_label_issues
from tagger.clean.pseudo import (
    PseudoConfig,
    PseudoLabels,
    api_suggestions,
    model_suggestions,
    propose_pseudo_labels,
)
from tagger.clean.queue import QUEUE_COLUMNS, QueueConfig, build_review_queue
from tagger.clean.review import (
    check_decisions,
    decisions_to_changes,
    read_decisions_csv,
    read_label_studio_export,
)
from tagger.data.images import hash_file
from tagger.data.manifest import read_manifest, targets_from_manifest
from tagger.data.readers.api import VOCABULARY, read_api_predictions
from tagger.train.predictions import Predictions, read_predictions


class ApiPredictionsConfig(BaseModel):
    """A competitor API's predictions (the `api_predictions` reader's format) as a second
    opinion. mapping: a mapping YAML for vocabulary `competitor_api`; none: API label names
    are matched to tag ids, names and aliases (`identity_mapping`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    json_path: Path
    images_dir: Path
    mapping: Path | None = None


class ExportConfig(BaseModel):
    """How the queue is exported for people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thumbnails: Literal["embed", "relative"] = "embed"
    thumb_size: int = Field(default=160, ge=32, le=1024)
    label_studio_image_url: str = DEFAULT_IMAGE_URL
    image_root: Path | None = None  # image paths in Label Studio URLs are relative to this


class CleanConfig(BaseModel):
    """The clean stage's settings (defaults: the seed system's top 5 above 0.5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issues: IssueConfig = IssueConfig()
    context: ContextConfig = ContextConfig()
    pseudo: PseudoConfig = PseudoConfig()
    queue: QueueConfig = QueueConfig()
    api_predictions: ApiPredictionsConfig | None = None
    feedback: tuple[Path, ...] = ()
    export: ExportConfig = ExportConfig()


C = TypeVar("C", bound=CleanConfig)


@dataclass(frozen=True)
class CleanOutputs:
    """Where the clean job wrote its files, and its figures."""

    manifest: Path  # the manifest to train on: a new version, or the input when none applied
    changes: Path | None
    issues: Path
    issues_per_tag: Path
    issues_per_source: Path
    queue: Path
    contact_sheet: Path
    label_studio_tasks: Path
    label_studio_config: Path
    summary: dict[str, Any]


def load_clean_taxonomy(path: str | Path | None) -> Taxonomy:
    """The taxonomy YAML at `path`, or the shipped one."""
    return load_taxonomy(path) if path else load_default_taxonomy()


def load_clean_config(
    path: str | Path | None, overrides: dict[str, Any] | None = None
) -> CleanConfig:
    """A CleanConfig from YAML (relative paths against its folder) with nested overrides."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of clean settings")
        data, base = loaded, path.resolve().parent
    for key, value in (overrides or {}).items():
        data[key] = (data.get(key) or {}) | value if isinstance(value, dict) else value
    try:
        config = CleanConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path or 'clean config'}: {where}: {first['msg']}") from None
    return resolve_clean_paths(config, base)


def resolve_clean_paths(config: C, base: Path) -> C:
    """`config` with relative file paths made absolute against `base`."""

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    api = config.api_predictions
    if api is not None:
        api = api.model_copy(
            update={
                "json_path": absolute(api.json_path),
                "images_dir": absolute(api.images_dir),
                "mapping": absolute(api.mapping),
            }
        )
    export = config.export.model_copy(update={"image_root": absolute(config.export.image_root)})
    feedback = tuple(p for p in (absolute(f) for f in config.feedback) if p is not None)
    return config.model_copy(
        update={"api_predictions": api, "feedback": feedback, "export": export}
    )


def refuse_in_sample(pred: Predictions) -> None:
    """Refuse predictions scored by a model that saw the images (in-sample scores)."""
    seen = set(pred.train_folds)
    inside = np.isin(pred.folds, list(seen)) if seen else np.zeros(len(pred.folds), bool)
    if inside.any():
        bad = sorted(set(pred.folds[inside].tolist()))
        raise ValueError(
            f"predictions are in-sample for folds {bad} (the scoring model trained on "
            f"{sorted(seen)}): label cleaning needs out-of-fold probabilities (cross-fitting)"
        )


def run_clean(
    manifest_path: str | Path,
    predictions_path: str | Path,
    config: CleanConfig,
    output_dir: str | Path,
    taxonomy: Taxonomy | None = None,
) -> CleanOutputs:
    """Run the clean job (see the module docstring)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    taxonomy = taxonomy or load_default_taxonomy()
    manifest = read_manifest(manifest_path)
    pred = read_predictions(predictions_path)
    refuse_in_sample(pred)  # cross-fitted files are checked row by row when read
    probs, ids = _aligned_probs(pred, manifest, taxonomy)
    targets, known = targets_from_manifest(manifest, taxonomy)
    all_ids = manifest["image_id"].to_numpy(dtype=object)
    rows = pd.Index(all_ids).get_indexer(ids)
    tag_ids = taxonomy.tag_ids

    ranked, calibrated, context = _context_probs(
        probs, pred, targets[rows], known[rows], config.context
    )
    issues = find_label_issues(
        ranked,
        targets[rows],
        known[rows],
        ids,
        tag_ids,
        config.issues,
        image_probs=probs,
        calibrated=calibrated,
    )
    pseudo = _pseudo_labels(probs, ids, manifest, targets[rows], known[rows], taxonomy, config)
    feedback = read_feedback(list(config.feedback), manifest, taxonomy)
    evidence = feedback_evidence(feedback.rows)
    fills, fb_conflicts = split_feedback(evidence, targets, known, all_ids, tag_ids)
    positives = pd.Series((targets * known).sum(axis=0), index=list(tag_ids))
    queue = build_review_queue(
        issues.cells, pseudo.conflicts, fb_conflicts, pseudo.pseudo, positives, config.queue
    )

    applied = _applied_changes(pseudo.pseudo, fills)
    cleaned, changes = Path(manifest_path).resolve(), None
    if len(applied):
        new_manifest, log = apply_label_changes(manifest, applied, taxonomy)
        version = write_manifest_version(
            new_manifest, log, manifest_path, out / "manifest", description="clean stage"
        )
        cleaned, changes, manifest = version.manifest, version.changes, new_manifest
    sha = hash_file(cleaned)
    paths = _write_tables(out, issues, pseudo, queue, manifest, sha)
    sheet = write_contact_sheet(
        queue,
        manifest,
        taxonomy,
        out / "contact_sheet.html",
        thumbnails=config.export.thumbnails,
        thumb_size=config.export.thumb_size,
    )
    tasks = label_studio_tasks(
        queue,
        manifest,
        taxonomy,
        sha,
        image_url=config.export.label_studio_image_url,
        image_root=config.export.image_root,
    )
    tasks_path, xml_path = write_label_studio(tasks, out)
    summary = _summary(issues, pseudo, queue, evidence, fills, fb_conflicts, applied, feedback)
    summary |= {"manifest": str(cleaned), "manifest_sha256": sha, "images_scored": len(ids)}
    summary["label_context"] = context
    summary["noise_priors"] = {
        "missing_rate": config.issues.missing_rate,
        "false_positive_share": config.issues.false_positive_share,
        "false_positive_spread": config.issues.false_positive_spread,
    }
    summary["min_flip_prob"] = config.issues.min_flip_prob
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), "utf-8")
    return CleanOutputs(
        manifest=cleaned,
        changes=changes,
        issues=paths["issues"],
        issues_per_tag=paths["per_tag"],
        issues_per_source=paths["per_source"],
        queue=paths["queue"],
        contact_sheet=sheet,
        label_studio_tasks=tasks_path,
        label_studio_config=xml_path,
        summary=summary,
    )


def _aligned_probs(
    pred: Predictions, manifest: pd.DataFrame, taxonomy: Taxonomy
) -> tuple[np.ndarray, np.ndarray]:
    """`(probs [N, T] in taxonomy order, image ids [N])` of the predicted manifest images."""
    known_ids = pd.Index(manifest["image_id"])
    missing = ~np.isin(pred.image_ids, known_ids)
    if missing.any():
        raise ValueError(
            f"predictions: {int(missing.sum())} image ids not in the manifest, e.g. "
            f"{list(pred.image_ids[missing][:5])}"
        )
    cols = pd.Index(pred.tag_ids).get_indexer(pd.Index(taxonomy.tag_ids))
    if (cols < 0).any():
        lacking = [t for t, c in zip(taxonomy.tag_ids, cols, strict=True) if c < 0][:10]
        raise ValueError(f"predictions lack taxonomy tags {lacking}")
    return pred.probs[:, cols], np.asarray(pred.image_ids, dtype=object)


def _context_probs(
    probs: np.ndarray,
    pred: Predictions,
    targets: np.ndarray,
    known: np.ndarray,
    config: ContextConfig,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """`(probabilities to rank issues on, where they are calibrated, how they were made)`: the
    label-context regression out of the cross-fit groups (or folds), or the image model's
    alone (calibrated nowhere) where it cannot run."""
    if not config.enabled:
        return probs, None, "off (config)"
    groups, kind = pred.folds, "fold"
    if pred.scored_by is not None:
        groups, kind = pred.scored_by, "cross-fit model"
    if len(np.unique(groups)) < 2:
        return probs, None, f"off: every row comes from one {kind}; the regression needs two"
    ranked, fitted = label_context(probs, targets, known, groups, config)
    return ranked, fitted, f"on, out of {kind}s"


def _pseudo_labels(
    probs: np.ndarray,
    ids: np.ndarray,
    manifest: pd.DataFrame,
    targets: np.ndarray,
    known: np.ndarray,
    taxonomy: Taxonomy,
    config: CleanConfig,
) -> PseudoLabels:
    cfg = config.pseudo
    model = model_suggestions(probs, ids, taxonomy.tag_ids, cfg.top_k, cfg.min_confidence)
    api = pd.DataFrame(columns=["image_id", "tag", "score"])
    if config.api_predictions is not None:
        source = config.api_predictions
        table = read_api_predictions(source.json_path, source.images_dir)
        mapping: SourceMapping = (
            load_mapping(source.mapping, taxonomy)
            if source.mapping
            else identity_mapping(taxonomy, vocabulary=VOCABULARY)
        )
        api = api_suggestions(table, mapping, manifest, cfg.api_min_score)
    return propose_pseudo_labels(model, api, targets, known, ids, taxonomy.tag_ids, cfg)


def _applied_changes(pseudo: pd.DataFrame, fills: pd.DataFrame) -> pd.DataFrame:
    """Label changes: accepted pseudo labels (kind pseudo) and feedback fills (kind feedback)."""
    accepted = pseudo[pseudo["accepted"]]
    parts = [
        pd.DataFrame(
            {
                "image_id": accepted["image_id"],
                "tag": accepted["tag"],
                "new": "positive",
                "kind": "pseudo",
                "source": "pseudo:" + accepted["source"].astype(str),
                "note": [
                    f"model {m:.2f}, API {a:.2f}"
                    for m, a in zip(accepted["model_prob"], accepted["api_score"], strict=True)
                ],
            }
        ),
        pd.DataFrame(
            {
                "image_id": fills["image_id"],
                "tag": fills["tag"],
                "new": np.where(fills["value"] == 1, "positive", "negative"),
                "kind": "feedback",
                "source": "feedback:" + fills["sources"].astype(str),
                "reviewer": fills["users"],
            }
        ),
    ]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["image_id", "tag", "new", "kind", "source"])
    return pd.concat(parts, ignore_index=True)


def _write_tables(
    out: Path,
    issues: LabelIssues,
    pseudo: PseudoLabels,
    queue: pd.DataFrame,
    manifest: pd.DataFrame,
    sha: str,
) -> dict[str, Path]:
    info = manifest.set_index("image_id")[["path", "source"]]
    paths = {
        "issues": out / "issues.parquet",
        "per_tag": out / "issues_per_tag.csv",
        "per_source": out / "issues_per_source.csv",
        "queue": out / "queue.csv",
    }
    issues.cells.to_parquet(paths["issues"], index=False)
    issues.per_tag.to_csv(paths["per_tag"], index=False)
    issues.per_image.assign(tags=issues.per_image["tags"].map(" ".join)).to_csv(
        out / "issues_per_image.csv", index=False
    )
    by_source = issues.cells.assign(source=issues.cells["image_id"].map(info["source"]))
    per_source = (
        by_source.groupby(["source", "kind"]).size().unstack(fill_value=0)
        if len(by_source)
        else pd.DataFrame()
    )
    images = manifest["source"].value_counts().rename("images")
    per_source = per_source.reindex(images.index, fill_value=0).join(images)
    per_source.rename_axis("source").reset_index().to_csv(paths["per_source"], index=False)
    pseudo.pseudo.to_csv(out / "pseudo_labels.csv", index=False)
    exported = queue.assign(
        path=queue["image_id"].map(info["path"]),
        manifest_sha256=sha,
        decision="",
        reviewer="",
    )
    exported.to_csv(paths["queue"], index=False)
    return paths


def _summary(
    issues: LabelIssues,
    pseudo: PseudoLabels,
    queue: pd.DataFrame,
    evidence: pd.DataFrame,
    fills: pd.DataFrame,
    fb_conflicts: pd.DataFrame,
    applied: pd.DataFrame,
    feedback: Any,
) -> dict[str, Any]:
    kinds = issues.cells["kind"].value_counts()
    return {
        "issues": len(issues.cells),
        "missing": int(kinds.get("missing", 0)),
        "wrong": int(kinds.get("wrong", 0)),
        "issues_posterior_only": int((issues.cells["found_by"] == "posterior").sum()),
        "tags_checked": int(issues.per_tag["checked"].sum()),
        "pseudo_labels": len(pseudo.pseudo),
        "pseudo_accepted": int(pseudo.pseudo["accepted"].sum()),
        "pseudo_by_source": pseudo.pseudo["source"].value_counts().to_dict(),
        "suggestion_conflicts": len(pseudo.conflicts),
        "feedback_lines": len(feedback.rows),
        "feedback_skipped": len(feedback.problems),
        "feedback_verdicts": len(evidence),
        "feedback_fills": len(fills),
        "feedback_conflicts": len(fb_conflicts),
        "changes_applied": len(applied),
        "queue": len(queue),
        "queue_by_kind": queue["kind"].value_counts().to_dict() if len(queue) else {},
    }


def export_review(
    clean_dir: str | Path,
    output_dir: str | Path,
    taxonomy: Taxonomy,
    *,
    top: int | None = None,
    thumbnails: Literal["embed", "relative"] = "embed",
    thumb_size: int = 160,
    image_url: str = DEFAULT_IMAGE_URL,
    image_root: Path | None = None,
) -> tuple[Path, Path, Path]:
    """(Re)export a clean folder's queue: `(contact sheet, Label Studio tasks, config XML)`."""
    clean_dir, out = Path(clean_dir), Path(output_dir)
    summary = json.loads((clean_dir / "summary.json").read_text(encoding="utf-8"))
    manifest = read_manifest(summary["manifest"])
    queue = pd.read_csv(clean_dir / "queue.csv")[QUEUE_COLUMNS]
    if top is not None:
        queue = queue.head(top)
    sheet = write_contact_sheet(
        queue,
        manifest,
        taxonomy,
        out / "contact_sheet.html",
        thumbnails=thumbnails,
        thumb_size=thumb_size,
    )
    tasks = label_studio_tasks(
        queue,
        manifest,
        taxonomy,
        summary["manifest_sha256"],
        image_url=image_url,
        image_root=image_root,
    )
    tasks_path, config_path = write_label_studio(tasks, out)
    return sheet, tasks_path, config_path


def import_review(
    decisions_path: str | Path,
    manifest_path: str | Path,
    output_dir: str | Path,
    taxonomy: Taxonomy,
    *,
    file_format: Literal["auto", "csv", "labelstudio"] = "auto",
) -> ManifestVersion:
    """Reviewed decisions -> a new manifest version (provenance `reviewed`, change log).

    Refuses (naming the row) unknown images, unknown tags, and decisions made against another
    manifest than `manifest_path` (stale base).
    """
    decisions_path = Path(decisions_path)
    if file_format == "auto":
        file_format = "csv" if decisions_path.suffix.lower() == ".csv" else "labelstudio"
    decisions = (
        read_decisions_csv(decisions_path)
        if file_format == "csv"
        else read_label_studio_export(decisions_path)
    )
    manifest = read_manifest(manifest_path)
    check_decisions(decisions, manifest, taxonomy, hash_file(manifest_path))
    new, log = apply_label_changes(manifest, decisions_to_changes(decisions), taxonomy)
    return write_manifest_version(
        new, log, manifest_path, output_dir, description=f"review import: {decisions_path.name}"
    )
