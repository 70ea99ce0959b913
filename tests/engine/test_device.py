"""Device choice. No GPU here: CUDA's presence is faked, which is all `resolve_device` looks at."""

from __future__ import annotations

import contextlib

import pytest
import torch

from distill.training.device import autocast_dtype, autocast_for, resolve_device


def test_auto_is_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cpu")  # a GPU job on a CPU machine runs rather than fails
    assert isinstance(autocast_for(torch.device("cpu"))(), contextlib.nullcontext)


def test_auto_picks_cuda_with_bf16_autocast_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")
    assert autocast_dtype(torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype(torch.device("cpu")) is None
