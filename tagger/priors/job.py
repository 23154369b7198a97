"""The priors job: held-out predictions + manifest + rules -> post-prior predictions, the per-rule
table, the tag comparison, plots and mined candidates.

The retrain flow's `priors` task runs `run_priors_job` between fusion and calibration: calibration
then reads the post-prior predictions, so thresholds are chosen on the scores the tagger will
threshold. Outputs in `output_dir`:

    predictions.parquet   post-prior held-out predictions (same image and tag ids)
    rules.yaml            the rules in force (priors format; what the bundle carries)
    rule_effects.csv      per rule (tagger.priors.measure.RULE_COLUMNS, plus `dropped`)
    rule_details.csv      per rule and touched tag: P, R, F1, AP with and without the rule
    tags.csv              per tag: AP and the "meets standard" view before and after all rules
    mined_rules.yaml      candidate rules from the manifest for review (+ mined_rules.csv)
    plots/rule_effects.png, plots/parent_ap.png, summary.json

Applying: the rules are applied with reference thresholds chosen on the held-out scores (the
lowest reaching `reference_precision`, once more on the post-prior scores), so the scores are
normalised the way the calibrated thresholds will be near. At prediction time the bundle's
calibrated thresholds are used (`tagger.inference.rules`): every prediction is consistent.
Weights are for experiments here; the bundle carries the rules in force at full weight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from label_system.priors import PriorRules, load_default_priors, load_priors
from label_system.taxonomy import Taxonomy, load_default_taxonomy, load_taxonomy
from tagger.data.manifest import read_manifest, targets_from_manifest
from tagger.priors.apply import apply_priors, compile_rules, rule_names, violations
from tagger.priors.measure import (
    StandardConfig,
    compare_tags,
    harmful_rules,
    measure_rules,
    reference_thresholds,
    summarise_tags,
)
from tagger.priors.mining import MinedRules, MiningConfig, mine_rules, pair_counts, write_review
from tagger.priors.plots import plot_parent_ap, plot_rule_effects
from tagger.train.predictions import (
    Predictions,
    align_predictions,
    read_predictions,
    write_predictions,
)


class PriorsConfig(BaseModel):
    """The priors stage.

    enabled: apply the rules before calibration (and ship them in the bundle).
    rules: priors YAML (None: the shipped label_system/data/priors.yaml).
    parents: taxonomy parent edges act as implications too.
    weights: rule name -> weight in [0, 1] (`tagger.priors.apply.rule_names`; 0 = off).
    drop_harmful: drop implies/excludes rules that lower the F1 or AP of a tag they touch,
      decided on `choose_share` of the held-out rows and reported on the others.
    harm_tolerance: a drop in F1 or AP below this does not count as harm.
    reference_precision: precision the reference thresholds aim at (as calibration does).
    standard: the "meets standard" bar (precision >= p at recall >= r).
    mining: thresholds for the mined candidates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    rules: Path | None = None
    parents: bool = True
    weights: dict[str, float] = Field(default_factory=dict)
    drop_harmful: bool = False
    choose_share: float = Field(default=0.5, gt=0.0, lt=1.0)
    harm_tolerance: float = Field(default=1e-3, ge=0.0)
    reference_precision: float = Field(default=0.9, gt=0.0, le=1.0)
    standard_precision: float = Field(default=0.9, gt=0.0, le=1.0)
    standard_recall: float = Field(default=0.5, ge=0.0, le=1.0)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    seed: int = 0


@dataclass
class PriorsInputs:
    """Held-out probabilities aligned with their labels `[N, T]`, the manifest's labels (for
    mining) and the rules."""

    predictions: Predictions
    probs: np.ndarray
    targets: np.ndarray
    known: np.ndarray
    manifest_targets: np.ndarray
    manifest_known: np.ndarray
    taxonomy: Taxonomy
    priors: PriorRules


def load_priors_inputs(
    predictions: Path, manifest: Path, taxonomy: Path | None, config: PriorsConfig
) -> PriorsInputs:
    """Read predictions, manifest, taxonomy and rules; align by image id and tag id."""
    tax = load_taxonomy(taxonomy) if taxonomy else load_default_taxonomy()
    pred = read_predictions(predictions)
    table = read_manifest(manifest)
    probs, targets, known, _ = align_predictions(pred, table, tax)
    all_targets, all_known = targets_from_manifest(table, tax)
    priors = load_priors(config.rules, tax) if config.rules else load_default_priors(tax)
    return PriorsInputs(pred, probs, targets, known, all_targets, all_known, tax, priors)


@dataclass
class PriorsOutcome:
    """What the job computed (see the module docstring)."""

    scores: np.ndarray  # post-prior [N, T], taxonomy column order
    thresholds: np.ndarray  # reference thresholds [T]
    rules: PriorRules  # in force (after drops)
    effects: pd.DataFrame
    details: pd.DataFrame
    tags: pd.DataFrame
    mined: MinedRules
    summary: dict[str, Any] = field(default_factory=dict)


def run_priors(
    inputs: PriorsInputs, config: PriorsConfig, choose: np.ndarray | None = None
) -> PriorsOutcome:
    """Choose reference thresholds, measure every rule, drop harmful ones (when configured),
    apply the rest, compare tags before and after, mine candidates.

    choose: bool `[N]` rows to choose on (reference thresholds, harmful rules); the tables are
    then measured on the other rows. None: with `drop_harmful`, a seeded `choose_share` of the
    rows; without, every row for both.
    """
    tax, probs, targets, known = inputs.taxonomy, inputs.probs, inputs.targets, inputs.known
    if choose is None and config.drop_harmful:
        choose = np.random.default_rng(config.seed).random(len(probs)) < config.choose_share
    report = np.ones(len(probs), dtype=bool) if choose is None else ~choose
    choose = np.ones(len(probs), dtype=bool) if choose is None else choose
    rules = compile_rules(tax, inputs.priors, weights=config.weights, parents=config.parents)
    ref = _reference(probs[choose], targets[choose], known[choose], rules, config)
    dropped: list[str] = []
    if config.drop_harmful:
        effects, _ = measure_rules(
            probs[choose], targets[choose], known[choose], rules, ref,
            tolerance=config.harm_tolerance,
        )  # fmt: skip
        dropped = harmful_rules(effects)
    effects, details = measure_rules(
        probs[report], targets[report], known[report], rules, ref, tolerance=config.harm_tolerance
    )
    effects["dropped"] = effects["rule"].isin(dropped)
    kept = _without(inputs.priors, dropped)
    names = set(rule_names(tax, kept, config.parents))
    weights = {k: v for k, v in config.weights.items() if k in names}
    final = compile_rules(tax, kept, weights=weights, parents=config.parents)
    scores = apply_priors(probs, final, ref, explain=False).scores
    standard = StandardConfig(config.standard_precision, config.standard_recall)
    tags = compare_tags(
        probs[report], scores[report], targets[report], known[report], tax, standard
    )
    mined = mine_rules(
        pair_counts(inputs.manifest_targets, inputs.manifest_known), tax, inputs.priors,
        config.mining,
    )  # fmt: skip
    before, after = probs[report] >= ref, scores[report] >= ref
    summary: dict[str, Any] = {
        "rules": len(final.rules),
        "dropped": dropped,
        "harmful": effects.loc[effects["harmful"], "rule"].tolist(),
        "choose_rows": int(choose.sum()),
        "report_rows": int(report.sum()),
        "decisions_changed": int((before != after).sum()),
        "cells_changed": int((scores[report] != probs[report]).sum()),
        "violations_before": violations(probs[report], final, ref),
        "violations_after": violations(scores[report], final, ref),
        **summarise_tags(tags),
        "mined_implications": int((mined.candidates["kind"] == "implies").sum()),
        "mined_exclusions": int((mined.candidates["kind"] == "excludes").sum()),
    }
    return PriorsOutcome(scores, ref, kept, effects, details, tags, mined, summary)


def _reference(
    probs: np.ndarray, targets: np.ndarray, known: np.ndarray, rules: Any, config: PriorsConfig
) -> np.ndarray:
    """Reference thresholds on the pre-prior scores, then once more on the post-prior ones."""
    p = config.reference_precision
    ref = reference_thresholds(probs, targets, known, target_precision=p)
    return reference_thresholds(
        apply_priors(probs, rules, ref, explain=False).scores, targets, known, target_precision=p
    )


def _without(priors: PriorRules, names: list[str]) -> PriorRules:
    drop = set(names)
    return PriorRules(
        [(a, b) for a, b in priors.implies if f"implies: {a} -> {b}" not in drop],
        [(a, b) for a, b in priors.excludes if f"excludes: {a} / {b}" not in drop],
        source=priors.source,
    )


@dataclass
class PriorsOutputs:
    """Where `write_priors_outputs` put each file."""

    predictions: Path
    rules: Path
    effects: Path
    details: Path
    tags: Path
    mined: Path
    plots: dict[str, Path]
    summary: dict[str, Any]


def write_priors_outputs(
    inputs: PriorsInputs, outcome: PriorsOutcome, output_dir: Path
) -> PriorsOutputs:
    """Every output of the job into `output_dir` (see the module docstring)."""
    out = Path(output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    pred = inputs.predictions
    cols = pd.Index(pred.tag_ids).get_indexer(pd.Index(inputs.taxonomy.tag_ids))
    probs = pred.probs.copy()
    probs[:, cols] = outcome.scores  # same image ids, tag ids and order as the input file
    predictions = write_predictions(
        Predictions(pred.image_ids, pred.folds, probs, pred.tag_ids, pred.train_folds),
        out / "predictions.parquet",
    )
    rules = out / "rules.yaml"
    rules.write_text(yaml.safe_dump(outcome.rules.to_dict(), sort_keys=False), encoding="utf-8")
    paths = {}
    for name, table in (("effects", outcome.effects), ("details", outcome.details),
                        ("tags", outcome.tags)):  # fmt: skip
        paths[name] = out / f"{'rule_' if name != 'tags' else ''}{name}.csv"
        table.to_csv(paths[name], index=False)
    mined = write_review(outcome.mined, out / "mined_rules.yaml", header="source: the manifest")
    plots = {}
    for name, fig in (("rule_effects", plot_rule_effects(outcome.effects)),
                      ("parent_ap", plot_parent_ap(outcome.tags))):  # fmt: skip
        plots[name] = out / "plots" / f"{name}.png"
        fig.savefig(plots[name], dpi=110)
    summary = json.loads(json.dumps(outcome.summary, default=_plain))
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return PriorsOutputs(
        predictions, rules, paths["effects"], paths["details"], paths["tags"], mined, plots,
        summary,
    )  # fmt: skip


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def run_priors_job(
    predictions: Path,
    manifest: Path,
    taxonomy: Path | None,
    config: PriorsConfig,
    output_dir: Path,
) -> PriorsOutputs:
    """Load, measure, apply, write (see the module docstring)."""
    inputs = load_priors_inputs(predictions, manifest, taxonomy, config)
    return write_priors_outputs(inputs, run_priors(inputs, config), output_dir)
