"""Review figures: built without pyplot, written as PNGs, the operating point on the curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tagger.calibrate.plots import (
    create_review_figures,
    pick_tags,
    plot_pr_grid,
    write_figures,
)
from tagger.calibrate.thresholds import CalibrationConfig, calibrate_thresholds
from tests.tagger.bundle_fixtures import tiny_taxonomy


def _calibrated() -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 4)) < [0.5, 0.3, 0.1, 0.02]).astype(np.float32)
    probs = np.clip(rng.random((300, 4)) * 0.6 + 0.4 * targets, 0, 1).astype(np.float32)
    known = np.ones((300, 4), dtype=bool)
    cal = calibrate_thresholds(
        probs, targets, known, tiny_taxonomy(), CalibrationConfig(min_positives=20)
    )
    return probs, targets, known, cal.report


def test_figures_written_as_png(tmp_path: Path) -> None:
    probs, targets, known, report = _calibrated()
    assert set(report.status) >= {"ok"} and (report.status != "ok").any()
    paths = write_figures(create_review_figures(probs, targets, known, report), tmp_path)
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pr_grid_marks_the_chosen_point() -> None:
    probs, targets, known, report = _calibrated()
    fig = plot_pr_grid(probs, targets, known, report, ["dog"])
    (ax,) = fig.axes
    marker = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(marker) == 1
    row = report.set_index("tag").loc["dog"]
    assert marker[0].get_xdata()[0] == row.recall and marker[0].get_ydata()[0] == row.precision


def test_pick_tags_spreads_over_the_tail_and_handles_no_positives(tmp_path: Path) -> None:
    report = pd.DataFrame({"tag": list("abcdef"), "support_pos": [100, 50, 10, 5, 1, 0]})
    assert pick_tags(report, 3) == ["a", "c", "e"]
    empty = pd.DataFrame(
        {
            "tag": ["a"],
            "support_pos": [0],
            "status": ["disabled"],
            "f1": [0.0],
            "policy": ["precision"],
            "target": [0.9],
            "threshold": [np.nan],
        }
    )
    figures = create_review_figures(
        np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1), dtype=bool), empty
    )
    assert all(p.exists() for p in write_figures(figures, tmp_path).values())


def test_pr_grid_draws_the_bound_and_says_when_the_target_is_unreachable() -> None:
    probs, targets, known, report = _calibrated()
    fig = plot_pr_grid(probs, targets, known, report, ["dog"])
    (ax,) = fig.axes
    row = report.set_index("tag").loc["dog"]
    ticks = [line for line in ax.lines if line.get_marker() == "_"]
    assert len(ticks) == 1 and ticks[0].get_ydata()[0] == row.precision_bound
    assert row.precision_bound < row.precision
    assert f"lb={row.precision_bound:.2f}" in ax.get_title()
    unreachable = report[~report.target_reachable & (report.support_pos > 0)].tag.iloc[0]
    fig = plot_pr_grid(probs, targets, known, report, [unreachable])
    assert "target unreachable" in fig.axes[0].get_title()
