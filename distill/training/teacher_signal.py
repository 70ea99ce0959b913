"""Where a batch's teacher outputs come from: a cache computed once (offline KD) or the live teacher.

Offline mode with a frozen teacher and un-augmented inputs sees the same teacher output for an example
every epoch, so computing it once and indexing it costs one teacher pass instead of one per epoch. The
cache holds the logits and, when they fit `budget_bytes`, the tapped feature maps too; otherwise the
teacher runs live every step (the runner's events say which, and why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.outputs import Outputs


class TeacherLike(Protocol):
    def logits(self, x: Tensor) -> Tensor: ...

    def outputs(self, x: Tensor, paths: Sequence[str]) -> Outputs: ...


class TeacherSignal(Protocol):
    def __call__(self, indices: Tensor, x: Tensor) -> Outputs: ...


class CachedOutputs:
    def __init__(self, outputs: Outputs, *, temperatures: Sequence[float] = ()) -> None:
        self.outputs = outputs  # logits (N, C) and features (N, ...) for the whole transfer set, float32, CPU
        # The soft terms' targets log_softmax(logits / T), once for all N instead of once per step.
        self.log_probs = {float(t): F.log_softmax(outputs.logits.float() / t, dim=-1) for t in temperatures}

    def __call__(self, indices: Tensor, x: Tensor) -> Outputs:
        device = x.device
        return Outputs(
            self.outputs.logits[indices].to(device, non_blocking=True),
            {p: f[indices].to(device, non_blocking=True) for p, f in self.outputs.features.items()},
            {t: lp[indices].to(device, non_blocking=True) for t, lp in self.log_probs.items()},
        )


class LiveTeacher:
    def __init__(self, teacher: TeacherLike, paths: Sequence[str] = ()) -> None:
        self.teacher, self.paths = teacher, list(paths)

    def __call__(self, indices: Tensor, x: Tensor) -> Outputs:
        return self.teacher.outputs(x, self.paths)


# Batches of the one-time teacher pass. 1,024 made a conv teacher's activations ~100 MB each, above glibc's
# mmap threshold, so every batch mapped fresh pages (700k minor faults on the conv job); 256 keeps them in
# the reused heap (with distill/startup.py's allocator settings) and costs an MLP teacher nothing.
EXTRACT_BATCH = 256


@torch.inference_mode()
def teacher_logits_for(teacher: TeacherLike, x: Tensor, *, batch_size: int = EXTRACT_BATCH) -> Tensor:
    """Teacher logits for a whole array, batched to bound memory; (N, C) float32 on the CPU."""
    chunks = [teacher.logits(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(chunks)


@torch.inference_mode()
def teacher_outputs_for(
    teacher: TeacherLike, x: Tensor, paths: Sequence[str], *, batch_size: int = EXTRACT_BATCH
) -> Outputs:
    """Logits and tapped features for a whole array, batched; float32 on the CPU."""
    chunks = [teacher.outputs(x[i : i + batch_size], paths) for i in range(0, len(x), batch_size)]
    return Outputs(
        torch.cat([c.logits.float().cpu() for c in chunks]),
        {p: torch.cat([c.features[p].float().cpu() for c in chunks]) for p in paths},
    )


def feature_cache_bytes(n: int, shapes: Sequence[Sequence[int]]) -> int:
    """float32 bytes of caching features of these per-example shapes for n examples."""
    return 4 * n * sum(math.prod(shape) for shape in shapes)


def should_cache(*, cache_teacher: bool | None, augment: str, mode: str) -> bool:
    """Cache unless the inputs change per step (augmentation) or the teacher itself trains (online)."""
    cacheable = augment == "none" and mode == "offline"
    if cache_teacher is None:
        return cacheable
    return cache_teacher and cacheable
