"""Distillation losses: one signature `loss(student, teacher, target) -> scalar`, one registry `LOSSES`."""

from distill.losses.base import LOSSES, Loss
from distill.losses.outputs import Outputs
from distill.losses.response import HardLabelLoss, SoftTargetLoss
from distill.losses.weighted import WeightedSum, build_response_loss, build_student_only_loss

__all__ = [
    "LOSSES",
    "HardLabelLoss",
    "Loss",
    "Outputs",
    "SoftTargetLoss",
    "WeightedSum",
    "build_response_loss",
    "build_student_only_loss",
]
