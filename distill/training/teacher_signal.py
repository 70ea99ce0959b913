"""Where a batch's teacher logits come from: a cache computed once (offline KD) or the live teacher.

Offline mode with a frozen teacher and un-augmented inputs sees the same teacher output for an example
every epoch, so computing it once and indexing it costs one teacher pass instead of one per epoch.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class TeacherLike(Protocol):
    def logits(self, x: Tensor) -> Tensor: ...


class TeacherSignal(Protocol):
    def __call__(self, indices: Tensor, x: Tensor) -> Tensor: ...


class CachedLogits:
    def __init__(self, logits: Tensor) -> None:
        self.logits = logits  # (N, C) for the whole transfer set, float32

    def __call__(self, indices: Tensor, x: Tensor) -> Tensor:
        return self.logits[indices].to(x.device, non_blocking=True)


class LiveTeacher:
    def __init__(self, teacher: TeacherLike) -> None:
        self.teacher = teacher

    def __call__(self, indices: Tensor, x: Tensor) -> Tensor:
        return self.teacher.logits(x).to(x.device)


@torch.inference_mode()
def teacher_logits_for(teacher: TeacherLike, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Teacher logits for a whole array, batched to bound memory; (N, C) float32 on the CPU."""
    chunks = [teacher.logits(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(chunks)


def should_cache(*, cache_teacher: bool | None, augment: str, mode: str) -> bool:
    """Cache unless the inputs change per step (augmentation) or the teacher itself trains (online)."""
    cacheable = augment == "none" and mode == "offline"
    if cache_teacher is None:
        return cacheable
    return cache_teacher and cacheable
