"""state_dict teachers: weights saved with `torch.save(model.state_dict())`, read with `weights_only=True`."""

from __future__ import annotations

import os

import torch

from distill.config import ArchitectureSpec
from distill.teachers.base import TorchTeacher
from distill.teachers.pickled import read_pickled_weights
from distill.teachers.weights import module_from_weights, require_architecture


def load_state_dict_teacher(
    path: str,
    *,
    architecture: ArchitectureSpec | None,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    device: torch.device,
) -> TorchTeacher:
    """Unwraps {'state_dict': ...} / {'model': ...} and the DataParallel 'module.' prefix, then loads strictly."""
    architecture = require_architecture(architecture, "state_dict")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    state = read_pickled_weights(path, is_zip=is_zip)
    module = module_from_weights(state, architecture=architecture, input_shape=input_shape, num_classes=num_classes)
    return TorchTeacher(module.to(device), format="state_dict", device=device, bytes_on_disk=os.path.getsize(path))
