"""`tagger predict`: its arguments and the command that runs them (progress bar, summary)."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Literal

from tagger.inference.api import write_predictions
from tagger.inference.inputs import count_inputs, iter_inputs
from tagger.inference.options import DEFAULT_MODEL, PredictOptions
from tagger.inference.records import parts_dir
from tagger.inference.runtime import prefer_passive_omp


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `tagger predict INPUT... --model MODEL --out FILE`."""
    defaults = PredictOptions()
    parser.add_argument("inputs", nargs="+", help="a folder, a manifest (.parquet), or images")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundle directory or MLflow model URI (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="results file: .jsonl, .parquet or .csv"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted job: skip inputs already in --out",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode workers (default: from the CPU count; 0 = inline)",
    )
    parser.add_argument(
        "--worker-kind",
        choices=["process", "thread"],
        default=defaults.worker_kind,
        help="decode in processes (a crashing codec costs one image) or threads (a few "
        "percent faster, for trusted inputs)",
    )
    parser.add_argument(
        "--decode-timeout",
        type=float,
        default=defaults.decode_timeout,
        help="seconds before a hung image decode is given up (process workers; default "
        f"{defaults.decode_timeout:g})",
    )
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--engine", choices=["local", "ray"], default=defaults.engine)
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument("--backend", choices=["torch", "onnx"], default=defaults.backend)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "int8"],
        default=defaults.precision,
        help="arithmetic of the model: auto (default: the fastest this machine supports among "
        "those the bundle was verified for), fp32, bf16 (CPU bf16 units or CUDA), int8 (ONNX "
        "Runtime, CPU)",
    )
    parser.add_argument("--max-tags", type=int, default=None)
    parser.add_argument("--min-confidence", type=float, default=defaults.min_confidence)
    parser.add_argument("--include-parents", action="store_true")
    parser.add_argument("--include-categories", nargs="+", default=None, metavar="CATEGORY")
    parser.add_argument("--language", default=defaults.language)
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a bundle whose weights are a pickle (runs its code!)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=1000, help="records per Parquet/CSV part file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_predict_command(args: argparse.Namespace) -> int:
    """Run `tagger predict`: progress bar on stderr, summary on stdout; returns the exit code."""
    from tqdm import tqdm

    prefer_passive_omp()

    # each argument is a folder, a manifest or an image, expanded in the order given
    inputs = itertools.chain.from_iterable(iter_inputs(a) for a in args.inputs)
    options = {
        "batch_size": args.batch_size,
        "workers": args.workers,
        "worker_kind": args.worker_kind,
        "decode_timeout": args.decode_timeout,
        "threads": args.threads,
        "engine": args.engine,
        "ray_actors": args.ray_actors,
        "backend": args.backend,
        "device": args.device,
        "precision": args.precision,
        "max_tags": args.max_tags,
        "min_confidence": args.min_confidence,
        "include_parents": args.include_parents,
        "include_categories": args.include_categories,
        "language": args.language,
        "trust_pickle": args.trust_pickle,
    }
    mode: Literal["new", "resume", "overwrite"] = (
        "resume" if args.resume else "overwrite" if args.overwrite else "new"
    )
    counts = [count_inputs(a) for a in args.inputs]
    total = None if None in counts else sum(c or 0 for c in counts)
    if mode == "new" and (args.out.exists() or parts_dir(args.out).exists()):
        print(f"tagger predict: {args.out} exists; pass --resume or --overwrite", file=sys.stderr)
        return 2
    with tqdm(total=total, unit="img", file=sys.stderr, disable=args.no_progress) as bar:
        summary = write_predictions(
            inputs, args.model, args.out, mode=mode, chunk_size=args.chunk_size,
            progress=bar.update, **options,
        )  # fmt: skip
    print(f"predict: {summary.to_text()} -> {args.out}")
    return 0
