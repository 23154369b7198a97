"""The calibrate job and `tagger calibrate`: predictions + manifest -> thresholds and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagger.calibrate.job import load_calibrate_job_config, run_calibrate_job
from tagger.calibrate.thresholds import read_thresholds
from tagger.cli import main
from tagger.data.images import hash_file
from tagger.data.manifest import read_manifest
from tagger.train.predictions import align_predictions, read_predictions
from tests.tagger.bundle_fixtures import tiny_taxonomy, write_calibration_inputs


def test_predictions_align_by_image_and_tag(tmp_path: Path) -> None:
    paths = write_calibration_inputs(tmp_path)
    pred = read_predictions(paths["predictions"])
    manifest = read_manifest(paths["manifest"])
    probs, targets, known, folds = align_predictions(pred, manifest, tiny_taxonomy())
    # rows follow the predictions; columns the taxonomy; folds come from the manifest
    i = int(np.flatnonzero(pred.image_ids == "img00007")[0])
    np.testing.assert_array_equal(probs[i], pred.probs[i, ::-1])
    assert folds[i] == 7 % 5
    assert targets.shape == known.shape == (600, 4)
    late = int(np.flatnonzero(pred.image_ids == "img00400")[0])
    assert known[i, 3] and not known[late, 3]  # the second half cannot see beaches


def test_job_writes_thresholds_report_check_and_plots(tmp_path: Path) -> None:
    paths = write_calibration_inputs(tmp_path / "in")
    job = tmp_path / "job.yaml"
    job.write_text(
        "predictions: in/predictions.parquet\nmanifest: in/manifest.parquet\n"
        "taxonomy: in/taxonomy.yaml\noutput_dir: out\ncalib_folds: [1, 2, 3, 4]\n"
        "check_folds: [0]\ncalibration: {target_precision: 0.8, min_positives: 5}\n"
    )
    cfg = load_calibrate_job_config(job)
    assert cfg.output_dir == tmp_path / "out"
    out = run_calibrate_job(cfg)
    cal = read_thresholds(out.thresholds, tiny_taxonomy())
    report = pd.read_csv(out.report)
    assert {
        "tag",
        "policy",
        "threshold",
        "precision",
        "recall",
        "support_pos",
        "support_neg",
        "status",
        "reason",
    } <= set(report.columns)
    assert (report["support_pos"] + report["support_neg"]).max() <= 480  # calib folds only
    assert out.summary["status"]["ok"] >= 3
    assert out.summary["dataset_hash"] == hash_file(paths["manifest"])
    assert out.check_report is not None and out.check_report.exists()
    assert out.summary["check"]["tags_meeting_target"] >= 2
    assert sorted(out.plots) == ["f1_vs_frequency", "pr_curves", "support"]
    assert all(p.stat().st_size > 1000 for p in out.plots.values())
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tags"] == 4
    assert np.isfinite(cal.thresholds[:3]).all()


def test_job_refuses_training_folds_and_overlapping_check(tmp_path: Path) -> None:
    paths = write_calibration_inputs(tmp_path / "in", train_folds=(0, 1, 2))
    base = {
        "predictions": paths["predictions"],
        "manifest": paths["manifest"],
        "taxonomy": paths["taxonomy"],
        "output_dir": tmp_path / "out",
    }
    with pytest.raises(ValueError, match=r"include folds the model was trained on \[2\]"):
        run_calibrate_job(load_calibrate_job_config(None, base | {"calib_folds": [2, 3]}))
    with pytest.raises(ValueError, match="overlap calib_folds"):
        run_calibrate_job(
            load_calibrate_job_config(None, base | {"calib_folds": [3, 4], "check_folds": [4]})
        )
    with pytest.raises(ValueError, match=r"(?s)<arguments>.*calib_folds"):
        load_calibrate_job_config(None, base | {"calib_folds": "three"})


def test_cli_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_calibration_inputs(tmp_path / "in", train_folds=(0, 1, 2))
    args = [
        "calibrate",
        "--predictions",
        str(paths["predictions"]),
        "--manifest",
        str(paths["manifest"]),
        "--taxonomy",
        str(paths["taxonomy"]),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert main([*args, "--calib-folds", "3", "--check-folds", "4"]) == 0
    printed = capsys.readouterr().out
    assert "thresholds:" in printed and "check:" in printed
    assert (tmp_path / "out" / "thresholds.json").exists()
    assert main([*args, "--calib-folds", "1", "3"]) == 2
    assert "trained on [1]" in capsys.readouterr().err


def test_check_split_holds_back_part_of_the_calibration_folds(tmp_path: Path) -> None:
    paths = write_calibration_inputs(tmp_path / "in", train_folds=(0, 1, 2))
    overrides = {"predictions": paths["predictions"], "manifest": paths["manifest"],
                 "taxonomy": paths["taxonomy"], "output_dir": tmp_path / "out",
                 "check_split": 0.5, "plots": False,
                 "calibration": {"target_precision": 0.8, "min_positives": 5}}  # fmt: skip
    out = run_calibrate_job(load_calibrate_job_config(None, overrides))
    calib = pd.read_csv(out.report)
    assert out.check_report is not None
    check = pd.read_csv(out.check_report)
    used = calib["support_pos"] + calib["support_neg"]
    held = check["support_pos"] + check["support_neg"]
    assert used[0] + held[0] == 240 and 80 < held[0] < 160  # folds 3, 4 only, split in two
    with pytest.raises(ValueError, match="check_folds or check_split, not both"):
        load_calibrate_job_config(None, overrides | {"check_folds": [4]})


def test_job_calibrates_on_out_of_fold_scores_and_checks_on_another_file(tmp_path: Path) -> None:
    from dataclasses import replace

    from tagger.train.predictions import write_predictions

    paths = write_calibration_inputs(tmp_path / "in")
    pred = read_predictions(paths["predictions"])
    # as cross-fitting writes it: folds {0, 2, 4} scored by model 0, {1, 3} by model 1
    oof = replace(pred, scored_by=pred.folds % 2, models=((1, 3), (0, 2, 4)))
    oof_path = write_predictions(oof, tmp_path / "in" / "oof.parquet")
    final = replace(pred, train_folds=(1, 2, 3, 4))  # the final model: held out fold 0 only
    final_path = write_predictions(final, tmp_path / "in" / "final.parquet")
    cfg = load_calibrate_job_config(
        None,
        {
            "predictions": oof_path, "manifest": paths["manifest"], "taxonomy": paths["taxonomy"],
            "check_folds": [0], "check_predictions": final_path, "output_dir": tmp_path / "out",
            "calibration": {"target_precision": 0.8, "min_positives": 5},
        },
    )  # fmt: skip
    out = run_calibrate_job(cfg)
    method = read_thresholds(out.thresholds, tiny_taxonomy()).method
    assert method["scores"] == "crossfit" and method["k"] == 2
    assert method["calib_folds"] == [1, 2, 3, 4] and method["calib_images"] == 480
    assert (method["bound"], method["level"]) == ("clopper_pearson", 0.95)
    check = pd.read_csv(out.check_report)
    assert (check["support_pos"] + check["support_neg"]).max() <= 120  # fold 0 of the final
    report = pd.read_csv(out.report)
    assert {"precision_bound", "target_reachable", "meets_standard", "standard_recall"} <= set(
        report.columns
    )
    assert out.summary["method"]["scores"] == "crossfit"
    # the final model trained on folds 1-4: they cannot be the check
    with pytest.raises(ValueError, match="trained on"):
        run_calibrate_job(cfg.model_copy(update={"check_folds": (1,)}))
