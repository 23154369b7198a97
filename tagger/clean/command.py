"""`tagger clean` and `tagger review export|import`: arguments and runners.

Arguments are checked (files exist, numbers in range) before anything heavy is imported, so a
typo fails in a fraction of a second with exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tagger.arguments import (
    HelpFormatter,
    existing_dir,
    existing_file,
    positive_int,
    probability,
)

CLEAN_EXAMPLE = """example:
  tagger clean work/assembled/manifest.parquet work/crossfit/oof_predictions.parquet \\
      --output-dir work/clean --api-json api/predictions.jsonl --api-images api/images \\
      --feedback feedback/2026-11.jsonl
  then open work/clean/contact_sheet.html, or import work/clean/label_studio_tasks.json into a
  Label Studio project set up with work/clean/label_studio_config.xml
"""

REVIEW_EXAMPLE = """examples:
  tagger review export work/clean --output-dir work/review --top 200 --thumbnails relative
  tagger review import label_studio_export.json --manifest work/clean/manifest/manifest.parquet \\
      --output-dir work/manifest_v3
  tagger review import work/clean/queue.csv --manifest work/assembled/manifest.parquet \\
      --output-dir work/manifest_v2        # the queue CSV with its 'decision' column filled
"""


# ---- tagger clean --------------------------------------------------------------------------------


def add_clean_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    parser.epilog = CLEAN_EXAMPLE
    parser.add_argument("manifest", type=existing_file, help="manifest Parquet")
    parser.add_argument(
        "predictions", type=existing_file, help="out-of-fold predictions Parquet (cross-fit)"
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="where everything goes")
    parser.add_argument("--config", type=existing_file, help="clean config YAML (CleanConfig)")
    parser.add_argument(
        "--taxonomy", type=existing_file, help="taxonomy YAML (default: the shipped one)"
    )
    parser.add_argument(
        "--top-k", type=positive_int, help="model pseudo labels per image (default: 5)"
    )
    parser.add_argument(
        "--min-confidence", type=probability, help="model pseudo-label confidence (default: 0.5)"
    )
    parser.add_argument(
        "--auto-accept",
        action="store_true",
        help="apply pseudo labels where model and API agree (default: all go to review)",
    )
    parser.add_argument("--api-json", type=existing_file, help="API predictions JSON(L)")
    parser.add_argument("--api-images", type=existing_dir, help="folder of the API's images")
    parser.add_argument(
        "--api-mapping",
        type=existing_file,
        help="competitor_api mapping YAML (default: match tag names and aliases)",
    )
    parser.add_argument(
        "--feedback",
        type=existing_file,
        nargs="+",
        default=None,
        help="feedback JSONL files (default: none)",
    )
    parser.add_argument(
        "--max-per-tag", type=positive_int, help="queue items per tag (default: 50)"
    )
    parser.add_argument("--max-items", type=positive_int, help="queue items in all (default: 1000)")
    parser.add_argument(
        "--no-label-context",
        action="store_true",
        help="rank label issues on the image model's probabilities alone (default: also read "
        "each image's other labels, tagger.clean.context)",
    )


def clean_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line settings as nested CleanConfig fields (None: keep the config's)."""
    if (args.api_json is None) != (args.api_images is None):
        raise ValueError("--api-json and --api-images go together")
    out: dict[str, Any] = {"pseudo": {}, "queue": {}}
    for key, value in (("top_k", args.top_k), ("min_confidence", args.min_confidence)):
        if value is not None:
            out["pseudo"][key] = value
    if args.auto_accept:
        out["pseudo"]["auto_accept"] = True
    if args.no_label_context:
        out["context"] = {"enabled": False}
    for key, value in (("max_per_tag", args.max_per_tag), ("max_items", args.max_items)):
        if value is not None:
            out["queue"][key] = value
    if args.api_json is not None:
        out["api_predictions"] = {
            "json_path": args.api_json,
            "images_dir": args.api_images,
            "mapping": args.api_mapping,
        }
    if args.feedback:
        out["feedback"] = list(args.feedback)
    return {k: v for k, v in out.items() if v != {}}


def run_clean_command(args: argparse.Namespace) -> int:
    """Label issues, pseudo labels, the review queue and its exports."""
    overrides = clean_overrides(args)
    from tagger.clean.job import load_clean_config, load_clean_taxonomy, run_clean

    config = load_clean_config(args.config, overrides)
    outputs = run_clean(
        args.manifest, args.predictions, config, args.output_dir, load_clean_taxonomy(args.taxonomy)
    )
    s = outputs.summary
    print(
        f"issues: {s['issues']} ({s['missing']} missing, {s['wrong']} wrong) on "
        f"{s['tags_checked']} tags; pseudo labels: {s['pseudo_labels']} "
        f"({s['pseudo_accepted']} accepted); queue: {s['queue']}"
    )
    print(f"label context: {s['label_context']}")
    print(f"manifest:      {outputs.manifest}")
    print(f"queue:         {outputs.queue}")
    print(f"contact sheet: {outputs.contact_sheet}")
    print(f"label studio:  {outputs.label_studio_tasks} (config {outputs.label_studio_config})")
    return 0


# ---- tagger review -------------------------------------------------------------------------------


def add_review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    parser.epilog = REVIEW_EXAMPLE
    sub = parser.add_subparsers(
        dest="review_command", required=True, metavar="ACTION",
        help="export: the queue for annotators; import: their decisions -> a new manifest",
    )  # fmt: skip
    export = sub.add_parser(
        "export",
        help="contact sheet + Label Studio tasks from a clean output folder",
        formatter_class=HelpFormatter,
        epilog=REVIEW_EXAMPLE,
    )
    export.add_argument("clean_dir", type=existing_dir, help="a `tagger clean` output folder")
    export.add_argument("--output-dir", type=Path, required=True)
    export.add_argument(
        "--taxonomy", type=existing_file, help="taxonomy YAML (default: the shipped one)"
    )
    export.add_argument("--top", type=positive_int, help="only the first N queue items")
    export.add_argument(
        "--thumbnails", choices=["embed", "relative"], default="embed", help="thumbnail images"
    )
    export.add_argument("--thumb-size", type=positive_int, default=160, help="pixels")
    export.add_argument(
        "--image-url",
        default="/data/local-files/?d={path}",
        help="Label Studio image URL template ({path}, {image_id})",
    )
    export.add_argument("--image-root", type=existing_dir, help="{path} is relative to this")
    imp = sub.add_parser(
        "import",
        help="reviewed decisions (Label Studio JSON export or CSV) -> a new manifest version",
        formatter_class=HelpFormatter,
        epilog=REVIEW_EXAMPLE,
    )
    imp.add_argument("decisions", type=existing_file, help="Label Studio JSON export or CSV")
    imp.add_argument(
        "--manifest", type=existing_file, required=True, help="the manifest that was reviewed"
    )
    imp.add_argument("--output-dir", type=Path, required=True, help="folder of the new version")
    imp.add_argument(
        "--taxonomy", type=existing_file, help="taxonomy YAML (default: the shipped one)"
    )
    imp.add_argument(
        "--format",
        choices=["auto", "csv", "labelstudio"],
        default="auto",
        help="auto: .csv is CSV, anything else a Label Studio JSON export",
    )


def run_review_command(args: argparse.Namespace) -> int:
    if args.review_command == "export":
        return _run_export(args)
    return _run_import(args)


def _run_export(args: argparse.Namespace) -> int:
    queue_csv = args.clean_dir / "queue.csv"
    if not queue_csv.is_file():
        raise FileNotFoundError(f"{args.clean_dir}: no queue.csv (not a `tagger clean` folder)")
    from tagger.clean.job import export_review, load_clean_taxonomy

    sheet, tasks, config = export_review(
        args.clean_dir,
        args.output_dir,
        load_clean_taxonomy(args.taxonomy),
        top=args.top,
        thumbnails=args.thumbnails,
        thumb_size=args.thumb_size,
        image_url=args.image_url,
        image_root=args.image_root,
    )
    print(f"contact sheet: {sheet}")
    print(f"label studio:  {tasks} (config {config})")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    if (args.output_dir / "manifest.parquet").exists():
        raise ValueError(f"{args.output_dir}: already holds a manifest version; choose a new one")
    from tagger.clean.job import import_review, load_clean_taxonomy

    version = import_review(
        args.decisions,
        args.manifest,
        args.output_dir,
        load_clean_taxonomy(args.taxonomy),
        file_format=args.format,
    )
    print(f"{version.num_changes} label changes -> {version.manifest}")
    print(f"change log: {version.changes}")
    return 0
