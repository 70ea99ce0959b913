"""Metrics on hand-made logits whose accuracy, agreement, KL and ECE are known exactly."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from distill.evaluation.latency import cpu_latency_ms, file_bytes
from distill.evaluation.metrics import (
    accuracy_topk,
    agreement,
    classification_report,
    expected_calibration_error,
    mean_kl,
)
from distill.evaluation.plots import plot_comparison, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ranked_logits(rankings: list[list[int]]) -> Tensor:
    """Logits where row i ranks classes in the given order (first = highest)."""
    n, c = len(rankings), len(rankings[0])
    logits = torch.zeros(n, c)
    for i, order in enumerate(rankings):
        for rank, cls in enumerate(order):
            logits[i, cls] = float(c - rank)
    return logits


def two_class(confidence: float, n: int, n_correct: int) -> tuple[Tensor, Tensor]:
    """n rows predicting class 0 with the given softmax confidence; the first n_correct are labeled 0."""
    logit = math.log(confidence / (1 - confidence))
    logits = torch.tensor([[logit, 0.0]] * n)
    y = torch.tensor([0] * n_correct + [1] * (n - n_correct))
    return logits, y


def test_topk_accuracy_on_known_rankings() -> None:
    logits = ranked_logits([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0], [5, 4, 3, 2, 1, 0], [2, 0, 1, 3, 4, 5]])
    y = torch.tensor([0, 0, 0, 0])
    assert accuracy_topk(logits, y, 1) == pytest.approx(1 / 4)  # only row 0 ranks 0 first
    assert accuracy_topk(logits, y, 2) == pytest.approx(2 / 4)  # row 3 ranks it second
    assert accuracy_topk(logits, y, 5) == pytest.approx(2 / 4)  # rows 1 and 2 rank it last
    assert accuracy_topk(logits, y, 6) == pytest.approx(1.0)
    assert accuracy_topk(logits, y, 50) == pytest.approx(1.0)  # k capped at the class count


def test_accuracy_uses_labeled_examples_only() -> None:
    logits = ranked_logits([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    assert accuracy_topk(logits, torch.tensor([0, -1, -1]), 1) == pytest.approx(1.0)
    assert accuracy_topk(logits, torch.tensor([0, 0, -1]), 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no labeled"):
        accuracy_topk(logits, torch.full((3,), -1), 1)


def test_agreement_counts_matching_argmax() -> None:
    teacher = ranked_logits([[0, 1, 2], [1, 0, 2], [2, 1, 0], [0, 2, 1]])
    student = ranked_logits([[0, 2, 1], [1, 2, 0], [2, 0, 1], [1, 0, 2]])
    assert agreement(teacher, student) == pytest.approx(3 / 4)
    assert agreement(teacher, teacher) == pytest.approx(1.0)


def test_mean_kl_is_zero_for_identical_and_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(5, 4)) * 2, rng.normal(size=(5, 4))
    assert mean_kl(torch.tensor(t), torch.tensor(t)) == pytest.approx(0.0, abs=1e-6)
    for temperature in (1.0, 3.0):
        p = np.exp(t / temperature) / np.exp(t / temperature).sum(1, keepdims=True)
        q = np.exp(s / temperature) / np.exp(s / temperature).sum(1, keepdims=True)
        expected = float((p * np.log(p / q)).sum(1).mean())
        got = mean_kl(torch.tensor(t), torch.tensor(s), temperature=temperature)
        assert got == pytest.approx(expected, rel=1e-5)


def test_ece_is_zero_for_a_calibrated_predictor() -> None:
    # Confidence 0.75 and 3 of 4 right in that bin; confidence 0.95 and 19 of 20 right in another.
    a_logits, a_y = two_class(0.75, 4, 3)
    b_logits, b_y = two_class(0.95, 20, 19)
    ece = expected_calibration_error(torch.cat([a_logits, b_logits]), torch.cat([a_y, b_y]))
    assert ece == pytest.approx(0.0, abs=1e-6)


def test_ece_exact_value_for_over_and_under_confidence() -> None:
    # Bin of 0.9: 6/10 right → gap 0.3 (overconfident). Bin of 0.6: 4/5 right → gap 0.2 (underconfident).
    over_logits, over_y = two_class(0.9, 10, 6)
    under_logits, under_y = two_class(0.6, 5, 4)
    logits, y = torch.cat([over_logits, under_logits]), torch.cat([over_y, under_y])
    # (10·0.3 + 5·0.2) / 15; a single pooled bin would give |10 − 12| / 15 instead.
    assert expected_calibration_error(logits, y) == pytest.approx(4 / 15, abs=1e-5)
    # Unlabeled rows do not count.
    extra = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    padded = expected_calibration_error(torch.cat([logits, extra]), torch.cat([y, torch.tensor([-1, -1])]))
    assert padded == pytest.approx(4 / 15, abs=1e-5)
    # With one bin everything is pooled.
    assert expected_calibration_error(logits, y, n_bins=1) == pytest.approx(2 / 15, abs=1e-5)


def test_classification_report_keys() -> None:
    torch.manual_seed(0)
    logits6, y6 = torch.randn(20, 6), torch.randint(0, 6, (20,))
    report = classification_report(logits6, y6)
    assert set(report) == {"n", "n_labeled", "top1", "top5", "ece", "nll"}
    assert report["top1"] == pytest.approx(accuracy_topk(logits6, y6, 1))
    assert report["nll"] == pytest.approx(torch.nn.functional.cross_entropy(logits6, y6).item(), rel=1e-6)
    three = classification_report(torch.randn(4, 3), torch.tensor([0, 1, -1, 2]))
    assert "top5" not in three and three["n_labeled"] == 3
    assert classification_report(torch.randn(4, 3), None) == {"n": 4, "n_labeled": 0}


def test_cpu_latency_times_each_call_under_inference_mode() -> None:
    calls: list[bool] = []

    def fn(x: Tensor) -> Tensor:
        calls.append(torch.is_inference_mode_enabled())
        time.sleep(0.002)
        return x * 2

    result = cpu_latency_ms(fn, torch.ones(7, 3), warmup=2, repeats=5)
    assert len(calls) == 7 and all(calls)
    assert 2.0 <= result["median_ms"] <= result["p90_ms"]
    assert result["batch_size"] == 7


def test_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 123)
    assert file_bytes(path) == 123


def test_training_curves_png(tmp_path: Path) -> None:
    metrics = [{"name": "train/loss", "step": s, "epoch": s // 10, "value": 2.0 / (s + 1)} for s in range(40)]
    metrics += [{"name": "train/soft", "step": s, "epoch": s // 10, "value": 1.0 / (s + 1)} for s in range(40)]
    metrics += [{"name": "val/top1", "step": 10 * e, "epoch": e, "value": 0.5 + 0.1 * e} for e in range(4)]
    metrics += [{"name": "val/agreement", "step": 10 * e, "epoch": e, "value": 0.6 + 0.1 * e} for e in range(4)]
    metrics += [{"name": "train/lr", "step": 0, "epoch": 0, "value": 1e-3}, {"name": "broken"}]
    path = tmp_path / "curves.png"
    plot_training_curves(metrics, path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plots_survive_missing_data(tmp_path: Path) -> None:
    plot_training_curves([], tmp_path / "empty.png")
    plot_comparison({}, tmp_path / "empty_cmp.png")
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "empty_cmp.png").read_bytes().startswith(PNG_MAGIC)


def test_comparison_png_with_and_without_baseline(tmp_path: Path) -> None:
    report = {
        "teacher": {"top1": 0.98},
        "baseline": {"top1": 0.90, "agreement": 0.91},
        "student": {"top1": 0.95, "agreement": 0.97},
    }
    plot_comparison(report, tmp_path / "full.png")
    del report["baseline"]
    report["student"].pop("agreement")
    plot_comparison(report, tmp_path / "partial.png")
    for name in ("full.png", "partial.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
