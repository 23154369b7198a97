"""Prior rules on real held-out predictions: per-rule table, parent-tag AP with and without rules.

    .venv/bin/python bench/priors_heldout.py PREDICTIONS MANIFEST --choose-folds 0 1 \\
        --report-folds 2 [--drop-harmful] [--out work/priors_heldout]

Reference thresholds (and, with --drop-harmful, the rules to drop) are chosen on the choose
folds; every table is measured on the report folds, which nothing was chosen on. Writes the
priors job's outputs (tables, plots, mined candidates) to --out and prints the summary, the rules
that changed decisions and the parent tags.

Last line: RESULT priors_heldout parent_ap_before=<x> parent_ap_after=<x> leaf_ap_before=<x>
leaf_ap_after=<x> harmful=<n> dropped=<n> violations_after=<n>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tagger.data.manifest import read_manifest
from tagger.priors.job import PriorsConfig, load_priors_inputs, run_priors, write_priors_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="held-out predictions Parquet")
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--choose-folds", type=int, nargs="+", required=True)
    parser.add_argument("--report-folds", type=int, nargs="+", required=True)
    parser.add_argument("--rules", type=Path, help="priors YAML (default: the shipped one)")
    parser.add_argument("--drop-harmful", action="store_true")
    parser.add_argument("--precision", type=float, default=0.8, help="reference precision")
    parser.add_argument("--out", type=Path, default=Path("work/priors_heldout"))
    args = parser.parse_args()
    if set(args.choose_folds) & set(args.report_folds):
        raise SystemExit("--choose-folds and --report-folds must not overlap")
    cfg = PriorsConfig(
        enabled=True, rules=args.rules, drop_harmful=args.drop_harmful,
        reference_precision=args.precision, standard_precision=args.precision,
    )  # fmt: skip
    inputs = load_priors_inputs(args.predictions, args.manifest, None, cfg)
    folds = read_manifest(args.manifest, columns=["image_id", "fold"]).set_index("image_id")
    fold = folds.loc[list(inputs.predictions.image_ids), "fold"].to_numpy()
    keep = np.isin(fold, args.choose_folds + args.report_folds)
    for name in ("probs", "targets", "known"):
        setattr(inputs, name, getattr(inputs, name)[keep])
    outcome = run_priors(inputs, cfg, choose=np.isin(fold[keep], args.choose_folds))
    inputs.predictions = inputs.predictions.__class__(
        inputs.predictions.image_ids[keep], inputs.predictions.folds[keep],
        inputs.predictions.probs[keep], inputs.predictions.tag_ids, inputs.predictions.train_folds,
    )  # fmt: skip
    outputs = write_priors_outputs(inputs, outcome, args.out)
    pd.set_option("display.width", 200)
    print(json.dumps(outputs.summary, indent=1))
    effects = outcome.effects[outcome.effects["changed"] > 0]
    print(effects.sort_values("changed", ascending=False).to_string(index=False))
    tags = outcome.tags
    parents = tags[(tags["role"] == "parent") & (tags["support_pos"] >= 3)]
    print(parents[parents["support_neg"] >= 3].to_string(index=False))
    s = outputs.summary
    print(
        f"RESULT priors_heldout parent_ap_before={s['parent_ap_before']:.4f} "
        f"parent_ap_after={s['parent_ap_after']:.4f} leaf_ap_before={s['leaf_ap_before']:.4f} "
        f"leaf_ap_after={s['leaf_ap_after']:.4f} harmful={len(s['harmful'])} "
        f"dropped={len(s['dropped'])} violations_after={sum(s['violations_after'].values())}"
    )


if __name__ == "__main__":
    main()
