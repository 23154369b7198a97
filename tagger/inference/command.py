"""`tagger predict`: its arguments and the command that runs them (progress bar, summary)."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tagger.inference.api import write_predictions
from tagger.inference.inputs import count_inputs, iter_inputs
from tagger.inference.options import DEFAULT_MODEL, PredictOptions
from tagger.inference.records import output_format, parts_dir
from tagger.inference.runtime import prefer_passive_omp

if TYPE_CHECKING:
    from tagger.bundle.model_bundle import Bundle


EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
PREDICT_EPILOG = f"""\
A models:/ or runs:/ --model is looked up in the MLflow tracking store of --tracking-uri, else
of $MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000 or sqlite:////abs/work/demo/mlflow.db); a
bundle directory needs no MLflow.

exit codes: {EXIT_OK} every image tagged; {EXIT_SOME_FAILED} some images failed (their records \
say why);
  {EXIT_USAGE} usage error (bad argument, missing input or model), reported before any model loads.

example:
  tagger predict album/ --model models:/tagger@champion --tracking-uri http://127.0.0.1:5000 \\
      --out album_tags.jsonl
"""


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `tagger predict INPUT... --model MODEL --out FILE`."""
    defaults = PredictOptions()
    parser.add_argument("inputs", nargs="+", help="a folder, a manifest (.parquet), or images")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="bundle directory or MLflow model URI"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking store of a models:/ or runs:/ --model (default: "
        "$MLFLOW_TRACKING_URI; never creates a store)",
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
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="images per inference step"
    )
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
        help="seconds before a hung image decode is given up (process workers)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads of the inference backend (default: torch's setting, all cores)",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default=defaults.engine,
        help="local: this process; ray: a pool of model actors on Ray Data",
    )
    parser.add_argument(
        "--ray-actors",
        type=int,
        default=None,
        help="model actors of --engine ray (default: one per 2 CPUs of the cluster)",
    )
    parser.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        default=defaults.backend,
        help="torch, or onnx (exported from the bundle once, run by ONNX Runtime)",
    )
    parser.add_argument(
        "--device", default=defaults.device, help="auto (CUDA when available), cpu, cuda, cuda:1"
    )
    parser.add_argument(
        "--max-tags",
        type=int,
        default=None,
        help="at most this many tags per image, highest scores first (default: all)",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=defaults.min_confidence,
        help="a tag needs a score >= max(its calibrated threshold, this)",
    )
    parser.add_argument(
        "--include-parents", action="store_true", help="also emit the parents of predicted tags"
    )
    parser.add_argument(
        "--include-categories",
        nargs="+",
        default=None,
        metavar="CATEGORY",
        help="only emit tags of these category ids (default: all categories)",
    )
    parser.add_argument(
        "--language",
        default=defaults.language,
        help="language of tag names (English where a tag has no translation)",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "int8"],
        default=defaults.precision,
        help="arithmetic of the model: auto (the fastest this machine supports among those the "
        "bundle was verified for), fp32, bf16 (CPU bf16 units or CUDA), int8 (ONNX Runtime, CPU) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a bundle whose weights are a pickle (runs its code!)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=1000, help="records per Parquet/CSV part file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--detector",
        choices=["gated", "always", "never"],
        default=None,
        help="when a bundle's small-object detector runs (default: the bundle's gate)",
    )


def predict_argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments of `tagger predict` (None: nothing), found without
    loading a model: inputs and a bundle directory that do not exist, the output."""
    for given in args.inputs:
        if not Path(given).exists():
            return (
                f"input {given!r} does not exist (give folders, manifests (.parquet) or image "
                "files)"
            )
    model = str(args.model)
    if ":/" not in model and not Path(model).exists():  # URIs: the resolver says what is wrong
        return (
            f"model bundle {model!r} does not exist (give a bundle directory or an MLflow "
            "model URI such as models:/tagger@champion)"
        )
    try:
        output_format(args.out)
    except ValueError as error:
        return str(error)
    if (
        args.resume is False
        and args.overwrite is False
        and (args.out.exists() or parts_dir(args.out).exists())
    ):
        return f"{args.out} exists; pass --resume or --overwrite"
    return None


def run_predict_command(args: argparse.Namespace) -> int:
    """Run `tagger predict`: progress bar on stderr, model and summary lines on stdout.

    Returns the exit code: 0 every image tagged, 1 some images failed, 2 usage error (found
    before any model loads).
    """
    from tqdm import tqdm

    prefer_passive_omp()
    problem = predict_argument_problem(args)
    if problem is not None:
        print(f"tagger predict: error: {problem}", file=sys.stderr)
        return EXIT_USAGE

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
        "detector": args.detector,
    }
    mode: Literal["new", "resume", "overwrite"] = (
        "resume" if args.resume else "overwrite" if args.overwrite else "new"
    )
    PredictOptions(**options)  # a bad value fails here, before the model loads
    counts = [count_inputs(a) for a in args.inputs]
    total = None if None in counts else sum(c or 0 for c in counts)
    bundle = load_model_timed(args.model, args.trust_pickle, args.tracking_uri)
    # the bar's clock and the summary's both start now, after the model loaded; the bar
    # shows the average rate (smoothing=0), as the summary does
    with tqdm(
        total=total, unit="img", file=sys.stderr, disable=args.no_progress, smoothing=0
    ) as bar:
        summary = write_predictions(
            inputs, bundle, args.out, mode=mode, chunk_size=args.chunk_size,
            progress=bar.update, **options,
        )  # fmt: skip
    print(f"predict: {summary.to_text()} -> {args.out}")
    return EXIT_SOME_FAILED if summary.errors else EXIT_OK


def load_model_timed(model: str, trust_pickle: bool, tracking_uri: str | None) -> Bundle:
    """Load the bundle and say so on stdout (with the seconds it took); warn about a demo
    model on stderr."""
    from tagger.bundle.resolve import load_bundle

    start = time.perf_counter()
    bundle = load_bundle(model, trust_pickle, tracking_uri=tracking_uri)
    seconds = time.perf_counter() - start
    print(
        f"model:   {model} ({bundle.model_config.backbone}, {len(bundle.tag_ids)} tags) "
        f"loaded in {seconds:.1f} s",
        flush=True,
    )
    notice = demo_model_notice(bundle)
    if notice is not None:
        print(f"tagger predict: warning: {notice}", file=sys.stderr, flush=True)
    return bundle


def demo_model_notice(bundle: Bundle) -> str | None:
    """The warning for a bundle trained on the demo data set (None for any other bundle)."""
    if not bundle.is_demo:
        return None
    data = bundle.training_data or {}
    return (
        f"this model was trained on the demo data set ({data.get('images', '?')} drawn "
        "images, not photos): its tags on real photos mean nothing. To train on real data: "
        f"{sys.executable} -m flows.retrain flows/configs/retrain_shared.yaml"
    )
