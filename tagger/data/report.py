"""What an assembled manifest holds: images and tags per source, per-tag counts, the long tail.

Counts come straight from the manifest's list columns (no dense `[N, T]` matrix), so a report
over millions of images stays cheap. Written as JSON + Markdown + a long-tail PNG.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from label_system.taxonomy import Taxonomy
from tagger.data.images import ERROR_CODES
from tagger.data.sources import Problem

TOP = 10  # tags shown at each end of the long tail in text summaries


@dataclass
class DatasetReport:
    """per_source: source, images, positives, tags (+ counts from the assembly stats).
    per_tag: tag, name, category, positives, negatives, unknown (known = pos + neg), sorted by
    positives descending. below_min: tags with fewer than `min_count` positives."""

    images: int
    per_source: pd.DataFrame
    per_tag: pd.DataFrame
    min_count: int
    below_min: list[str]
    problems_by_reason: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "tags": len(self.per_tag),
            "tags_with_positives": int((self.per_tag["positives"] > 0).sum()),
            "min_count": self.min_count,
            "below_min": self.below_min,
            "problems_by_reason": self.problems_by_reason,
            "per_source": self.per_source.to_dict(orient="records"),
            "per_tag": self.per_tag.to_dict(orient="records"),
            "stats": self.stats,
        }

    def to_text(self) -> str:
        """A short plain-text summary for a terminal."""
        tags = self.per_tag
        present = tags[tags["positives"] > 0]
        lines = [
            f"{self.images} images, {len(tags)} tags ({len(present)} with positives), "
            f"{sum(self.problems_by_reason.values())} problems",
        ]
        if "duplicates_merged" in self.stats:
            lines[0] += f", {self.stats['duplicates_merged']} duplicates merged"
        lines.append(
            "per source: "
            + "; ".join(
                f"{r.source}: {r.images} images, {r.tags} tags, {r.positives} positives"
                for r in self.per_source.itertuples()
            )
        )
        lines.append("top tags: " + _counts(present.head(TOP)))
        lines.append("bottom tags (with positives): " + _counts(present.tail(TOP)[::-1]))
        lines.append(
            f"{len(self.below_min)} tags below min_count={self.min_count} "
            f"({int((tags['positives'] == 0).sum())} with none)"
        )
        if self.problems_by_reason:
            lines.append(
                "problems: " + ", ".join(f"{k}: {v}" for k, v in self.problems_by_reason.items())
            )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The report as Markdown tables."""
        out = ["# Dataset report", "", self.to_text().replace("\n", "  \n"), ""]
        out += ["## Per source", "", _table(self.per_source), ""]
        out += ["## Per tag", "", _table(self.per_tag), ""]
        out += [
            f"## Tags below {self.min_count} positives",
            "",
            ", ".join(self.below_min) or "none",
            "",
        ]
        out += ["![long tail](long_tail.png)", ""]
        return "\n".join(out)


def _counts(frame: pd.DataFrame) -> str:
    return ", ".join(f"{r.tag} ({r.positives})" for r in frame.itertuples()) or "-"


def _table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(str(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join(rows)


def _tag_counts(column: pa.ChunkedArray | pa.Array, tag_ids: Sequence[str]) -> np.ndarray:
    """Occurrences of each tag id in a list<string> column (int64 [T])."""
    flat = pc.list_flatten(column)
    codes = pc.index_in(flat, value_set=pa.array(list(tag_ids), pa.string()))
    codes = pc.drop_null(codes).to_numpy()
    return np.bincount(codes, minlength=len(tag_ids)).astype(np.int64)


def _as_table(manifest: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(manifest, pa.Table):
        return manifest
    return pa.Table.from_pandas(manifest, preserve_index=False)


def build_report(
    manifest: pa.Table | pd.DataFrame,
    taxonomy: Taxonomy,
    *,
    min_count: int = 10,
    stats: Mapping[str, Any] | None = None,
    problems: Sequence[Problem] = (),
) -> DatasetReport:
    """Count images, tags and known/unknown cells of a manifest (`MANIFEST_SCHEMA`)."""
    table = _as_table(manifest)
    n = table.num_rows
    tag_ids = list(taxonomy.tag_ids)
    positives = _tag_counts(table.column("tags"), tag_ids)
    known = _tag_counts(table.column("known"), tag_ids)
    per_tag = pd.DataFrame(
        {
            "tag": tag_ids,
            "name": [taxonomy.display_name(t) for t in tag_ids],
            "category": [taxonomy.category_of(t) for t in tag_ids],
            "positives": positives,
            "negatives": known - positives,
            "unknown": n - known,
        }
    ).sort_values(["positives", "tag"], ascending=[False, True], kind="stable")
    per_tag = per_tag.reset_index(drop=True)
    below = per_tag.loc[per_tag["positives"] < min_count, "tag"].tolist()
    return DatasetReport(
        images=n,
        per_source=_per_source(table, stats or {}),
        per_tag=per_tag,
        min_count=min_count,
        below_min=below,
        problems_by_reason=_problem_reasons(problems),
        stats=dict(stats or {}),
    )


def _per_source(table: pa.Table, stats: Mapping[str, Any]) -> pd.DataFrame:
    """Images (any row listing the source), positive (image, tag) pairs it gave, its tags."""
    membership = pc.list_flatten(table.column("sources")).to_numpy(zero_copy_only=False)
    images = pd.Series(membership, dtype=object).value_counts()
    prov = pc.list_flatten(table.column("provenance"))
    rows = np.repeat(
        np.arange(table.num_rows),
        pc.fill_null(pc.list_value_length(table.column("provenance")), 0).to_numpy(),
    )
    given = pd.DataFrame(
        {
            "row": rows,
            "tag": pc.struct_field(prov, "tag").to_numpy(zero_copy_only=False),
            "source": pc.struct_field(prov, "source").to_numpy(zero_copy_only=False),
        }
    ).drop_duplicates()
    names = list(dict.fromkeys([*stats.get("sources", {}), *images.index]))
    out = pd.DataFrame(
        {
            "source": names,
            "images": [int(images.get(s, 0)) for s in names],
            "positives": [int((given["source"] == s).sum()) for s in names],
            "tags": [int(given.loc[given["source"] == s, "tag"].nunique()) for s in names],
        }
    )
    per = stats.get("sources", {})
    for key in (
        "images_listed",
        "images_usable",
        "label_rows",
        "negative_pairs",
        "boxes",
        "conflicts_within_source",
    ):
        if per:
            out[key] = [int(per.get(s, {}).get(key, 0)) for s in names]
    return out


def _problem_reasons(problems: Sequence[Problem]) -> dict[str, int]:
    """Problems counted by kind: the ImageError code when the reason starts with one."""
    counts: dict[str, int] = {}
    for p in problems:
        head = p.reason.split(":", 1)[0].strip()
        kind = head if head in ERROR_CODES else p.reason[:60]
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def plot_long_tail(report: DatasetReport, path: str | Path) -> Path:
    """Positives per tag, most frequent first, log scale, with the min-count line (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tags = report.per_tag
    fig = Figure(figsize=(max(6.0, min(24.0, 0.12 * len(tags))), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(tags))
    counts = tags["positives"].to_numpy()
    colours = np.where(counts > 0, "#4c72b0", "#c8c8c8")  # grey stubs: tags with no positive
    ax.bar(x, np.maximum(counts, 0.8), width=1.0, color=colours)
    ax.axhline(
        report.min_count, color="#c44e52", linestyle="--", label=f"min_count = {report.min_count}"
    )
    ax.set_yscale("log")
    ax.set_xlim(-0.5, max(len(tags), 1) - 0.5)
    ax.set_xlabel(f"tags, most frequent first ({len(tags)})")
    ax.set_ylabel("images with the tag (known positive)")
    ax.set_title(f"Long tail: {report.images} images")
    if len(tags) <= 150:
        ax.set_xticks(x, tags["tag"].tolist(), rotation=90, fontsize=6)
    ax.legend(loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def write_report(report: DatasetReport, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and long_tail.png into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(
        json.dumps(report.to_dict(), indent=2, default=_json_default), encoding="utf-8"
    )
    md_path = out / "report.md"
    md_path.write_text(report.to_markdown(), encoding="utf-8")
    return {
        "json": json_path,
        "markdown": md_path,
        "plot": plot_long_tail(report, out / "long_tail.png"),
    }


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
