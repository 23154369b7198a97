"""The `tagger` command: one small function per subcommand, registered in `COMMANDS`.

    tagger demo-data work/demo                 # draw the demo sources + work/demo/assemble.yaml
    tagger assemble work/demo/assemble.yaml    # sources -> manifest, cache, folds, report
    tagger calibrate job.yaml --check-folds 2  # held-out probs -> thresholds.json + report
    tagger train train.yaml [--resume]         # manifest -> checkpoints (torchrun for DDP)
    tagger clean manifest.parquet oof.parquet --output-dir work/clean   # issues + review queue
    tagger review export|import ...            # the review round trip (Label Studio, CSV)
    tagger priors mine manifest.parquet        # candidate prior rules -> a review YAML

A subcommand is `(add_arguments(parser), run(args) -> exit code)`. Heavy imports happen inside
`run`, so `tagger --help` stays fast. Bad input exits with code 2 and one readable message.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tagger.arguments import (
    HelpFormatter,
    at_least_one,
    non_negative_int,
    positive,
    positive_int,
    unit,
)
from tagger.clean.command import (  # no torch
    add_clean_arguments,
    add_review_arguments,
    run_clean_command,
    run_review_command,
)
from tagger.inference.command import (  # no torch
    PREDICT_EPILOG,
    add_predict_arguments,
    run_predict_command,
)
from tagger.inference.runtime import prefer_heap_reuse, prefer_passive_omp

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


# ---- assemble ---------------------------------------------------------------------------------


def add_assemble_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="assembly config YAML (see flows/configs/)")
    parser.add_argument("--output-dir", help="replaces the config's output_dir")
    parser.add_argument("--data-root", help="replaces the config's data_root")
    parser.add_argument("--no-cache", action="store_true", help="skip the resized image cache")


def run_assemble(args: argparse.Namespace) -> int:
    """Read the sources of a config, assemble, cache, fold, write manifest + report."""
    from tagger.data.assembly_job import load_assembly_config, run_assembly

    config = load_assembly_config(
        args.config, output_dir=_absolute(args.output_dir), data_root=_absolute(args.data_root)
    )
    if args.no_cache:
        config = config.model_copy(
            update={"cache": config.cache.model_copy(update={"enabled": False})}
        )
    outputs = run_assembly(config)
    print(outputs.summary)
    print(f"manifest: {outputs.manifest}")
    print(f"report:   {outputs.report['markdown']}")
    print(f"problems: {outputs.problems}")
    return 0


# ---- demo-data --------------------------------------------------------------------------------


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="folder to write the demo sources into")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the drawn scenes (same seed, same set)"
    )
    parser.add_argument("--size", type=int, default=160, help="image width in pixels")


def run_demo_data(args: argparse.Namespace) -> int:
    """Draw the demo data set and write its assembly config."""
    from tagger.data.demo import DemoConfig, write_demo_data

    data = write_demo_data(args.out_dir, DemoConfig(seed=args.seed, size=args.size))
    print(f"{len(data.scenes)} demo images in {data.root}")
    print(f"next: tagger assemble {data.config}")
    return 0


# ---- calibrate -------------------------------------------------------------------------------


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="calibrate job YAML (tagger.calibrate.job)")
    parser.add_argument("--predictions", help="held-out predictions Parquet")
    parser.add_argument("--manifest", help="manifest Parquet")
    parser.add_argument("--taxonomy", help="taxonomy YAML (default: the shipped one)")
    parser.add_argument("--output-dir", help="where thresholds.json and the report go")
    parser.add_argument("--calib-folds", type=int, nargs="+", help="folds to calibrate on")
    parser.add_argument(
        "--check-folds",
        type=int,
        nargs="+",
        help="other held-out folds: report precision of the thresholds there",
    )
    parser.add_argument(
        "--check-split",
        type=float,
        help="or hold back this share of the calibration rows for the check",
    )


def run_calibrate(args: argparse.Namespace) -> int:
    """Per-tag thresholds from held-out predictions; writes thresholds file + report."""
    from tagger.calibrate.job import load_calibrate_job_config, run_calibrate_job

    overrides = {
        "predictions": _absolute(args.predictions), "manifest": _absolute(args.manifest),
        "taxonomy": _absolute(args.taxonomy), "output_dir": _absolute(args.output_dir),
        "calib_folds": args.calib_folds, "check_folds": args.check_folds,
        "check_split": args.check_split,
    }  # fmt: skip
    outputs = run_calibrate_job(load_calibrate_job_config(args.config, overrides))
    print(f"thresholds: {outputs.thresholds}")
    print(f"report:     {outputs.report}")
    print(f"status:     {outputs.summary['status']}")
    if outputs.check_report is not None:
        print(f"check:      {outputs.summary['check']} ({outputs.check_report})")
    return 0


# ---- priors ----------------------------------------------------------------------------------

MINE_EXAMPLE = """example:
  tagger priors mine /tmp/assembled_shared/manifest.parquet --out review/priors_mined.yaml \\
      --labels ../shared/data/voc_labels/voc2007_image_labels.csv:voc --min-support 20

Writes the review YAML (priors format, statistics as comments; rejected candidates at the end)
and <out stem>.csv with every candidate. Nothing is applied: copy accepted rules into
label_system/data/priors.yaml."""


def add_priors_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="priors_command",
        required=True,
        metavar="ACTION",
        help="mine: candidate rules for review",
    )
    mine = sub.add_parser(
        "mine",
        help="mine candidate implications and exclusions from a manifest (known cells only)",
        description="Mine candidate prior rules (A -> B, A / B) from the known cells of an "
        "assembled manifest and optional label-only tables; write them for review.",
        epilog=MINE_EXAMPLE,
        formatter_class=HelpFormatter,
    )
    mine.add_argument("manifest", help="assembled manifest Parquet")
    mine.add_argument("--out", default="priors_mined.yaml", help="review YAML to write")
    mine.add_argument("--rules", help="current priors YAML; none given: the shipped priors.yaml")
    mine.add_argument("--taxonomy", help="taxonomy YAML; none given: the shipped one")
    mine.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="CSV:VOCABULARY",
        help="a label-only table (labels column, '|'-separated) and its mapping's vocabulary, "
        "e.g. voc_labels/voc2007_image_labels.csv:voc; repeatable",
    )
    mine.add_argument(
        "--min-support",
        type=positive_int,
        default=10,
        help="images with both tags positive (implications)",
    )
    mine.add_argument("--min-confidence", type=unit, default=0.9, help="P(B | A)")
    mine.add_argument("--min-lift", type=at_least_one, default=1.5, help="P(B | A) / P(B)")
    mine.add_argument(
        "--min-expected",
        type=positive,
        default=5.0,
        help="co-occurrences independence predicts (exclusions)",
    )
    mine.add_argument(
        "--max-cooccurrence",
        type=non_negative_int,
        default=0,
        help="co-occurrences an exclusion may still have (label noise)",
    )
    mine.add_argument("--max-candidates", type=positive_int, default=50, help="per kind")


def _label_tables(values: list[str]) -> list[tuple[Path, str]]:
    out = []
    for value in values:
        path, sep, vocabulary = value.rpartition(":")
        if not sep or not path or not vocabulary:
            raise ValueError(f"--labels {value!r}: expected CSV:VOCABULARY, e.g. labels.csv:voc")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--labels {value!r}: no file {path}")
        out.append((Path(path), vocabulary))
    return out


def run_priors(args: argparse.Namespace) -> int:
    """`tagger priors mine`: candidate rules from the data, written for review."""
    manifest = Path(args.manifest)
    for name, given in (("manifest", manifest), ("--rules", args.rules),
                        ("--taxonomy", args.taxonomy)):  # fmt: skip
        if given is not None and not Path(given).is_file():
            raise FileNotFoundError(f"{name}: no file {given}")
    tables = _label_tables(args.labels)
    from label_system.mapping import load_default_mapping
    from label_system.priors import load_default_priors, load_priors
    from label_system.taxonomy import load_default_taxonomy, load_taxonomy
    from tagger.priors.mining import MiningConfig, mine_sources, write_review

    taxonomy = load_taxonomy(args.taxonomy) if args.taxonomy else load_default_taxonomy()
    current = load_priors(args.rules, taxonomy) if args.rules else load_default_priors(taxonomy)
    config = MiningConfig(
        min_support=args.min_support, min_confidence=args.min_confidence,
        min_lift=args.min_lift, min_expected=args.min_expected,
        max_cooccurrence=args.max_cooccurrence, max_candidates=args.max_candidates,
    )  # fmt: skip
    mined = mine_sources(
        taxonomy,
        current,
        config,
        manifest=manifest,
        label_tables=[(p, load_default_mapping(v, taxonomy)) for p, v in tables],
    )
    out = write_review(mined, args.out, header="sources: " + ", ".join(mined.sources))
    kinds = mined.candidates["kind"].value_counts().to_dict()
    print(f"candidates: {kinds.get('implies', 0)} implications, {kinds.get('excludes', 0)} "
          f"exclusions; {len(mined.rejected)} rejected (cycle or contradiction)")  # fmt: skip
    print(f"review: {out}")
    print(f"table:  {out.with_suffix('.csv')}")
    return 0


# ---- train -----------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config YAML (tagger.train.training.TrainConfig)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="last",
        help='continue from a checkpoint directory (bare --resume: "<output_dir>/last")',
    )


def run_train(args: argparse.Namespace) -> int:
    """Train from a config; under torchrun every process runs this (DDP)."""
    from tagger.train.training import run_train_config

    result = run_train_config(args.config, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # torchrun sets RANK; print once
        print(f"epochs: {result.epochs_completed} (stopped early: {result.stopped_early})")
        print(f"best validation mAP: {result.best_metric}")
        print(f"best checkpoint: {result.best_checkpoint}")
    return 0


# ---- the command ------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, AddArguments, Run]] = {
    "assemble": (
        "build the manifest from the sources of a config",
        add_assemble_arguments,
        run_assemble,
    ),
    "demo-data": (
        "draw the demo data set (several source formats)",
        add_demo_arguments,
        run_demo_data,
    ),
    "calibrate": (
        "per-tag thresholds from held-out predictions (thresholds file + report)",
        add_calibrate_arguments,
        run_calibrate,
    ),
    "train": (
        "train the tagger from a config (resumable; DDP under torchrun)",
        add_train_arguments,
        run_train,
    ),
    "priors": (
        "prior rules: mine candidate implications/exclusions from the data for review",
        add_priors_arguments,
        run_priors,
    ),
    "predict": (
        "tag images (folder, manifest or files) with a model bundle; resumable",
        add_predict_arguments,
        run_predict_command,
    ),
    "clean": (
        "label issues, pseudo labels and the review queue from out-of-fold predictions",
        add_clean_arguments,
        run_clean_command,
    ),
    "review": (
        "export the review queue (contact sheet, Label Studio) or import reviewed decisions",
        add_review_arguments,
        run_review_command,
    ),
}


# the end of each subcommand's --help: one example (predict: also MLflow and exit codes)
EPILOGS: dict[str, str] = {
    "assemble": "example:\n  tagger assemble work/demo/assemble.yaml --output-dir work/assembled",
    "demo-data": "example:\n  tagger demo-data work/demo --seed 1",
    "calibrate": "example:\n  tagger calibrate job.yaml --check-folds 2",
    "train": "example:\n  tagger train train.yaml --resume",
    "predict": PREDICT_EPILOG,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagger",
        description="Album photo tagging pipeline.",
        epilog="example:\n  tagger predict album/ --model path/to/bundle --out tags.jsonl",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(
            sub.add_parser(
                name,
                help=help_text,
                description=help_text,
                epilog=EPILOGS.get(name),
                formatter_class=HelpFormatter,
            )
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tagger` console script."""
    args = build_parser().parse_args(argv)
    _, _, run = COMMANDS[args.command]
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:  # bad config or input: say what, not how
        print(f"tagger {args.command}: error: {error}", file=sys.stderr)
        return 2


def console() -> None:
    """The `tagger` console script: `main` in a process set up for batch work (idle OpenMP
    threads sleep, freed memory is reused; see `tagger.inference.runtime`)."""
    prefer_passive_omp()
    prefer_heap_reuse()
    sys.exit(main())


if __name__ == "__main__":
    console()
