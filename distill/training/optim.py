"""Optimizers and per-step learning-rate schedules built from `TrainingSpec`."""

from __future__ import annotations

import math

import torch
from torch import nn

from distill.config import TrainingSpec


def build_optimizer(model: nn.Module, spec: TrainingSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: TrainingSpec, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A multiplier of the peak lr, stepped once per optimizer step (so resuming mid-epoch is exact)."""
    total = max(1, steps_per_epoch * epochs)

    def factor(step: int) -> float:
        if spec.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        if spec.schedule == "step":
            return float(spec.gamma ** (step // (spec.step_size * steps_per_epoch)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
