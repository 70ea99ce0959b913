"""The loss registry and the one loss signature every distillation term follows (STYLE.md).

A loss reads what it needs from the student's and teacher's `Outputs` (logits, or features keyed by module
path, the torchdistill habit) plus the integer targets, and returns a scalar. Keeping one signature lets
`WeightedSum` combine any terms by name without knowing what each one reads.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from distill.losses.outputs import Outputs
from distill.registry import Registry


class Loss(Protocol):
    """`loss(student, teacher, target) -> scalar`.

    `teacher` is None for terms that need no teacher (plain cross-entropy). `target` is int64 (N,) with -1 on
    unlabeled examples, or None when the whole transfer set is unlabeled.
    """

    def __call__(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor: ...


LOSSES: Registry[Loss] = Registry("loss")
