"""The per-rule effect as a picture: AP and F1 change of the worst-hit tag per rule, and how many
decisions each rule changes. Built without pyplot (no global state, Agg-rendered)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def plot_rule_effects(summary: pd.DataFrame, max_rules: int = 40) -> Figure:
    """Horizontal bars per rule (`tagger.priors.measure.RULE_COLUMNS`): delta AP and delta F1 of
    the tag it hurts most (or helps least); rules that change nothing are left out, the
    `max_rules` with the largest effect shown."""
    rows = summary[(summary["changed"] > 0) | (summary["delta_ap"] != 0)].copy()
    rows["size"] = rows[["delta_ap", "delta_f1"]].abs().max(axis=1)
    rows = rows.sort_values("size", ascending=False).head(max_rules).iloc[::-1]
    height = 1.5 + 0.28 * max(len(rows), 1)
    fig = Figure(figsize=(9, height), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    y = np.arange(len(rows))
    colors = np.where(rows["harmful"], "tab:red", "tab:blue")
    ax.barh(y - 0.2, rows["delta_ap"], height=0.4, color=colors, label="delta AP")
    ax.barh(y + 0.2, rows["delta_f1"], height=0.4, color=colors, alpha=0.45, label="delta F1")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{r} ({t})" for r, t in zip(rows["rule"], rows["worst_tag"], strict=True)])
    ax.set_xlabel("with rule - without (worst touched tag); red: flagged harmful")
    ax.legend(loc="lower right", fontsize=8)
    ax2.barh(y, rows["changed"], color="tab:gray")
    ax2.set_xlabel("decisions changed")
    if rows.empty:
        ax.set_title("no rule changed any prediction")
    else:
        ax.set_title("Per-rule effect on the held-out rows")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def plot_parent_ap(tags: pd.DataFrame) -> Figure:
    """AP before vs after the rules, one dot per tag with known positives, parents highlighted
    (`tagger.priors.measure.compare_tags`)."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    rows = tags[tags["support_pos"] > 0]
    for role, color in (("leaf", "tab:gray"), ("parent", "tab:orange")):
        part = rows[rows["role"] == role]
        ax.scatter(part["ap_before"], part["ap_after"], s=14, color=color,
                   label=f"{role} tags ({len(part)})")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="black", lw=0.8)
    ax.set_xlabel("AP without rules")
    ax.set_ylabel("AP with rules")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right")
    return fig
