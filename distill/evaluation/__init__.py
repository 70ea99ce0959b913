"""Evaluation: accuracy, calibration and fidelity metrics, latency and size, and the report's plots."""

from distill.evaluation.latency import cpu_latency_ms, file_bytes
from distill.evaluation.metrics import (
    accuracy_topk,
    agreement,
    classification_report,
    expected_calibration_error,
    mean_kl,
    negative_log_likelihood,
)
from distill.evaluation.plots import plot_comparison, plot_training_curves

__all__ = [
    "accuracy_topk",
    "agreement",
    "classification_report",
    "cpu_latency_ms",
    "expected_calibration_error",
    "file_bytes",
    "mean_kl",
    "negative_log_likelihood",
    "plot_comparison",
    "plot_training_curves",
]
