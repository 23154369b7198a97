"""Stage 6, calibration: metrics, per-tag thresholds from precision-recall curves, held-out
evaluation and its review plots, and the calibrate job that writes thresholds + report."""
