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


def autocast_for(device: torch.device) -> Callable[[], AbstractContextManager[object]]:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); nothing on the CPU, where it is slower."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext
