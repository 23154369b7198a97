"""Error analysis as pictures: F1 against tag frequency, PR curves with the operating point,
and the long tail of support. Figures are built without pyplot (no global state, Agg-rendered,
bundled fonts only)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tagger.metrics import pr_curve

STATUS_COLORS = {
    "ok": "tab:blue",
    "fallback_parent": "tab:orange",
    "fallback_default": "tab:purple",
    "disabled": "tab:gray",
}


def plot_f1_vs_frequency(report: pd.DataFrame) -> Figure:
    """One dot per tag: F1 at its threshold against known positives (log x), by status."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    rows = report[report["support_pos"] > 0]
    for status, group in rows.groupby("status"):
        ax.scatter(
            group["support_pos"],
            group["f1"].fillna(0.0),
            s=14,
            alpha=0.75,
            color=STATUS_COLORS.get(str(status), "black"),
            label=f"{status} ({len(group)})",
        )
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("known positives (log)")
    ax.set_ylabel("F1 at the chosen threshold")
    ax.set_title(f"F1 vs tag frequency ({len(rows)} tags with positives)")
    ax.grid(True, alpha=0.3)
    if len(rows):
        ax.legend(loc="lower right", fontsize=8)
    return fig


def pick_tags(report: pd.DataFrame, n: int) -> list[str]:
    """Up to `n` tags with positives, spread evenly from the most to the least frequent."""
    rows = report[report["support_pos"] > 0].sort_values("support_pos", ascending=False)
    if len(rows) <= n:
        return rows["tag"].tolist()
    picks = np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))
    return rows["tag"].iloc[picks].tolist()


def plot_pr_grid(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    report: pd.DataFrame,
    tags: Sequence[str] | None = None,
    *,
    max_tags: int = 16,
    columns: int = 4,
) -> Figure:
    """A grid of PR curves (known cells of `probs, targets, known [N, T]`, columns = report
    rows) with each tag's chosen operating point marked, the lower confidence bound of its
    precision drawn below it, and its target drawn. Titles: positives used, threshold, bound,
    and "unreachable" when the target could not be met."""
    tags = list(tags) if tags is not None else pick_tags(report, max_tags)
    rows = max(1, math.ceil(len(tags) / columns))
    fig = Figure(figsize=(3.0 * columns, 2.7 * rows), layout="constrained")
    index = pd.Index(report["tag"])
    for i, tag in enumerate(tags):
        ax = fig.add_subplot(rows, columns, i + 1)
        j = int(index.get_loc(tag))
        r = report.iloc[j]
        precision, recall, _ = pr_curve(probs[:, j], targets[:, j], known[:, j])
        ax.step(recall, precision, where="post", color="tab:blue", lw=1.2)
        if r["policy"] == "precision" and not math.isnan(r["target"]):
            ax.axhline(r["target"], color="tab:red", lw=0.8, ls="--")
        color = STATUS_COLORS.get(r["status"], "black")
        bound = _float(r, "precision_bound")
        if not math.isnan(r["threshold"]) and not math.isnan(r["recall"]):
            ax.plot([r["recall"]], [r["precision"]], "o", ms=6, color=color)
            if not math.isnan(bound):  # the bound under the point estimate
                ax.vlines(r["recall"], bound, r["precision"], color=color, lw=1.5)
                ax.plot([r["recall"]], [bound], "_", ms=8, color=color)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        thr = "off" if math.isnan(r["threshold"]) else f"{r['threshold']:.3f}"
        low = "" if math.isnan(bound) else f", lb={bound:.2f}"
        unreachable = r["policy"] != "f1" and not bool(r.get("target_reachable", True))
        ax.set_title(
            f"{tag} (n+={r['support_pos']}, t={thr}{low})"
            + ("\ntarget unreachable" if unreachable else ""),
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
        if i % columns == 0:
            ax.set_ylabel("precision", fontsize=8)
        if i >= (rows - 1) * columns:
            ax.set_xlabel("recall", fontsize=8)
    if not tags:
        fig.add_subplot().text(0.5, 0.5, "no tag with known positives", ha="center")
    return fig


def _float(row: pd.Series, column: str) -> float:
    """A report cell as a float (NaN when the column is absent, e.g. an older report)."""
    value = row.get(column, math.nan)
    return math.nan if value is None else float(value)


def plot_support(report: pd.DataFrame) -> Figure:
    """Long-tail bar chart: known positives per tag, most frequent first (log y)."""
    rows = report.sort_values("support_pos", ascending=False)
    fig = Figure(figsize=(max(6.0, min(0.12 * len(rows), 24.0)), 4.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    colors = [STATUS_COLORS.get(s, "black") for s in rows["status"]]
    ax.bar(x, rows["support_pos"].clip(lower=0.8), color=colors, width=0.9)
    ax.set_yscale("log")
    ax.set_xlim(-1, max(len(rows), 1))
    if len(rows) <= 80:
        ax.set_xticks(x, rows["tag"], rotation=90, fontsize=6)
    else:
        ax.set_xlabel("tags, by known positives")
    ax.set_ylabel("known positives (log)")
    ax.set_title("Support per tag (colour = calibration status)")
    return fig


def create_review_figures(
    probs: np.ndarray, targets: np.ndarray, known: np.ndarray, report: pd.DataFrame
) -> dict[str, Figure]:
    """The three review pictures, by file stem."""
    return {
        "f1_vs_frequency": plot_f1_vs_frequency(report),
        "pr_curves": plot_pr_grid(probs, targets, known, report),
        "support": plot_support(report),
    }


def write_figures(
    figures: Mapping[str, Figure], directory: str | Path, dpi: int = 110
) -> dict[str, Path]:
    """Write each figure as `<directory>/<name>.png`; returns the paths by name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, fig in figures.items():
        out[name] = directory / f"{name}.png"
        fig.savefig(out[name], dpi=dpi)
    return out
