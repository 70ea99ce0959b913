"""safetensors teachers: a JSON header plus raw tensor bytes, nothing executable; the code comes from
`teacher.architecture`."""

from __future__ import annotations

import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.teachers.base import TorchTeacher, one_line
from distill.teachers.weights import module_from_weights, require_architecture


def load_safetensors_teacher(
    path: str,
    *,
    architecture: ArchitectureSpec | None,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    device: torch.device,
) -> TorchTeacher:
    architecture = require_architecture(architecture, "safetensors")
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(
            f"the safetensors teacher could not be read: {one_line(exc)}", code="corrupt_checkpoint", param="teacher"
        ) from None
    module = module_from_weights(state, architecture=architecture, input_shape=input_shape, num_classes=num_classes)
    return TorchTeacher(module.to(device), format="safetensors", device=device, bytes_on_disk=os.path.getsize(path))
