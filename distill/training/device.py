"""Pick the device and the matching autocast: CUDA with bf16 when present, plain float32 on the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch


def resolve_device(requested: str) -> torch.device:
    """'auto' → cuda if available else cpu; 'cuda' without a GPU falls back to cpu rather than failing a job."""
    if requested == "auto" or requested.startswith("cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda" if requested == "auto" else requested)
        return torch.device("cpu")
    return torch.device(requested)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA (no loss scaling needed, unlike fp16); none on the CPU, where autocast is slower."""
    return torch.bfloat16 if device.type == "cuda" else None


def autocast_for(device: torch.device) -> Callable[[], AbstractContextManager[object]]:
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)
