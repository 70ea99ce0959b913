"""Pick the device and the matching autocast (CUDA with bf16 when present, plain float32 on the CPU), and the
memory layout convolutions run fastest in there."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn


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


def conv_memory_format(module: nn.Module, device: torch.device) -> torch.memory_format:
    """channels_last for a network with 2-D convolutions on the CPU, else torch's default layout.

    oneDNN's CPU convolutions run NHWC natively; in NCHW every convolution converts its input and output.
    Measured on the conv job of docs/BENCHMARKS.md: the conv teacher's pass takes half the time, the
    4,266-parameter conv student trains 20 % faster. Values agree with NCHW to float32 rounding (7.6e-6
    on the teacher's logits). ScriptModules keep their layout (their graph may assume one)."""
    if device.type != "cpu" or isinstance(module, torch.jit.ScriptModule):
        return torch.contiguous_format
    if any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return torch.channels_last
    return torch.contiguous_format


def in_format(x: Tensor, memory_format: torch.memory_format) -> Tensor:
    """x laid out as `memory_format` (only 4-D tensors have a channels_last layout)."""
    if memory_format is torch.contiguous_format or x.dim() != 4:
        return x
    return x.contiguous(memory_format=memory_format)


def set_memory_format(module: nn.Module, memory_format: torch.memory_format) -> None:
    """Lay the module's 4-D parameters and buffers out as `memory_format` (torch's stubs lack the keyword)."""
    module.to(memory_format=memory_format)  # type: ignore[call-overload]
