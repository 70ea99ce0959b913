"""How fast and how small: the two numbers a team distils for, measured the same way for teacher and student."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def cpu_latency_ms(
    fn: Callable[[Tensor], Any], batch: Tensor, *, warmup: int = 3, repeats: int = 20
) -> dict[str, float]:
    """Median and 90th-percentile wall time of `fn(batch)` in milliseconds.

    Warm-up calls are discarded (first calls pay for allocation, lazy init and TorchScript profiling); the
    median resists a noisy shared machine better than the mean. Runs under inference_mode so autograd
    bookkeeping is not timed.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    times_ms: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(batch)
        for _ in range(repeats):
            start = time.perf_counter()
            fn(batch)
            times_ms.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": float(np.median(times_ms)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "batch_size": int(batch.shape[0]),
    }


def file_bytes(path: str | os.PathLike[str]) -> int:
    """Size of a checkpoint on disk: what the student saves over the teacher."""
    return Path(path).stat().st_size
