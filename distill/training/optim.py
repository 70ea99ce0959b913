"""Optimizers and per-step learning-rate schedules built from `TrainingSpec`."""

from __future__ import annotations

import math

import torch
from torch import nn

from distill.config import TrainingSpec
from distill.training.fused_adam import FusedAdam

# What the training loop steps: torch's optimizers, or the direct fused Adam of fused_adam.py.
Optimizer = torch.optim.Optimizer | FusedAdam


def build_optimizer(model: nn.Module, spec: TrainingSpec) -> Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        fused = True if _fused_ok(params) else None
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, fused=fused)
    decoupled = spec.optimizer == "adamw"
    if _fused_ok(params):
        return FusedAdam(params, lr=spec.lr, weight_decay=spec.weight_decay, decoupled_weight_decay=decoupled)
    if decoupled:
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


# torch's default on the CPU is the per-tensor Python loop: for a small student, that loop costs more than
# the student's own forward and backward (docs/BENCHMARKS.md, the MLP job). The fused kernels do the same
# update in one call per step; torch has them for float parameters on the CPU and CUDA.
_FUSED_DEVICES = ("cpu", "cuda")


def _fused_ok(params: list[nn.Parameter]) -> bool:
    if not params or len({(p.device, p.dtype) for p in params}) != 1:
        return False
    return params[0].device.type in _FUSED_DEVICES and params[0].is_floating_point() and not params[0].is_sparse


class PerStepSchedule:
    """Sets each group's lr to peak × factor(step) after every optimizer step.

    A plain setter rather than torch's LambdaLR: it runs every step, and LambdaLR's bookkeeping costs
    as much as a small student's own update. Its state is one integer, so resuming mid-epoch is exact.
    """

    def __init__(self, optimizer: Optimizer, spec: TrainingSpec, *, steps_per_epoch: int, epochs: int):
        self.optimizer, self.spec, self.steps_per_epoch = optimizer, spec, steps_per_epoch
        self.total = max(1, steps_per_epoch * epochs)
        self.peaks = [float(group["lr"]) for group in optimizer.param_groups]
        self.step_count = 0

    def factor(self, step: int) -> float:
        if self.spec.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / self.total))
        if self.spec.schedule == "step":
            return float(self.spec.gamma ** (step // (self.spec.step_size * self.steps_per_epoch)))
        return 1.0

    def step(self) -> None:
        self.step_count += 1
        factor = self.factor(self.step_count)
        for group, peak in zip(self.optimizer.param_groups, self.peaks, strict=True):
            group["lr"] = peak * factor

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, int]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step_count = int(state["step_count"])
        factor = self.factor(self.step_count)
        for group, peak in zip(self.optimizer.param_groups, self.peaks, strict=True):
            group["lr"] = peak * factor


def build_scheduler(optimizer: Optimizer, spec: TrainingSpec, *, steps_per_epoch: int, epochs: int) -> PerStepSchedule:
    """A multiplier of the peak lr, stepped once per optimizer step (so resuming mid-epoch is exact)."""
    return PerStepSchedule(optimizer, spec, steps_per_epoch=steps_per_epoch, epochs=epochs)
