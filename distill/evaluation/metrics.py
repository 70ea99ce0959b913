"""What the report measures: how good the student is, how well calibrated, and how closely it imitates.

All functions take logits (N, C) and integer labels (N,) with -1 for unlabeled examples; label-based
metrics use the labeled examples only. They return Python floats so the result goes straight into JSON.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _labeled(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the rows with a label; raise if there are none, since an accuracy of nothing means nothing."""
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(y.shape)}")
    mask = y >= 0
    if not bool(mask.any()):
        raise ValueError("no labeled examples (every label is -1)")
    return logits[mask].float(), y[mask].long()


@torch.no_grad()
def accuracy_topk(logits: Tensor, y: Tensor, k: int = 1) -> float:
    """Share of labeled examples whose label is among the k highest logits (k is capped at C, as in timm)."""
    logits, y = _labeled(logits, y)  # (M, C), (M,)
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (M, k)
    return (top == y[:, None]).any(dim=1).float().mean().item()


@torch.no_grad()
def expected_calibration_error(logits: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """ECE of Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural Networks" (eq. 3).

    Confidence is the top softmax probability; examples fall into `n_bins` equal-width bins
    ((m−1)/M, m/M]; ECE = Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|. Distillation at high T is known to change
    calibration, so the report shows it next to accuracy.
    """
    logits, y = _labeled(logits, y)
    probs = F.softmax(logits, dim=1)  # (M, C)
    confidence, predicted = probs.max(dim=1)  # (M,), (M,)
    correct = (predicted == y).float()  # (M,)
    # Right-closed bins: a confidence of exactly m/M belongs to bin m−1 (0-based); 0 (impossible) to bin 0.
    bins = (confidence * n_bins).ceil().long().clamp(1, n_bins) - 1  # (M,)
    count = torch.zeros(n_bins, device=confidence.device).index_add_(0, bins, torch.ones_like(confidence))
    sum_conf = torch.zeros(n_bins, device=confidence.device).index_add_(0, bins, confidence)
    sum_correct = torch.zeros(n_bins, device=confidence.device).index_add_(0, bins, correct)
    # |B_m|·|acc − conf| = |Σ correct − Σ conf| in each bin, so empty bins contribute 0 without a division.
    return ((sum_correct - sum_conf).abs().sum() / count.sum()).item()


@torch.no_grad()
def agreement(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Share of examples where the student's top-1 class is the teacher's: fidelity, which needs no labels."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"shapes differ: {tuple(teacher_logits.shape)} vs {tuple(student_logits.shape)}")
    return (teacher_logits.argmax(dim=1) == student_logits.argmax(dim=1)).float().mean().item()


@torch.no_grad()
def mean_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> float:
    """KL(p_T(teacher) ‖ q_T(student)) per example, averaged: how much of the teacher's distribution is lost.

    Unlike the training loss there is no T² factor: this is the divergence itself, in nats.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"shapes differ: {tuple(teacher_logits.shape)} vs {tuple(student_logits.shape)}")
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=1)  # (N, C)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)  # (N, C)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True).item()


@torch.no_grad()
def negative_log_likelihood(logits: Tensor, y: Tensor) -> float:
    """Mean cross-entropy at T = 1 on the labeled examples (nats)."""
    logits, y = _labeled(logits, y)
    return F.cross_entropy(logits, y).item()


def classification_report(logits: Tensor, y: Tensor | None) -> dict[str, Any]:
    """Counts always; top1, top5 (only with ≥ 5 classes), ece and nll when there are labeled examples."""
    n = logits.shape[0]
    n_labeled = 0 if y is None else int((y >= 0).sum())
    report: dict[str, Any] = {"n": n, "n_labeled": n_labeled}
    if y is None or n_labeled == 0:
        return report
    report["top1"] = accuracy_topk(logits, y, 1)
    if logits.shape[1] >= 5:
        report["top5"] = accuracy_topk(logits, y, 5)
    report["ece"] = expected_calibration_error(logits, y)
    nll = negative_log_likelihood(logits, y)
    report["nll"] = nll if math.isfinite(nll) else None  # JSON has no inf
    return report
