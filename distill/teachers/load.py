"""`load_teacher`: detect, load, and check the teacher against the data before any training starts.

Every check that can fail on a user's files runs here, at load time, with a message that names the fix:
an unknown or unsafe file, a format that is not what the spec says, weights that do not fit the
architecture, a teacher that rejects the data's example shape, or one that predicts another number of
classes than the labels have.
"""

from __future__ import annotations

import torch

from distill.config import ArchitectureSpec, TeacherFormat
from distill.errors import UserError
from distill.teachers.base import Teacher, resolve_device
from distill.teachers.detect import detect_format


def load_teacher(
    path: str,
    *,
    format: TeacherFormat | None,
    architecture: ArchitectureSpec | None,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    device: str | torch.device = "cpu",
) -> Teacher:
    """Load the checkpoint at `path` as a frozen teacher on `device` and dry-run it on (2, *input_shape).

    `input_shape` is one example's shape from the data (no batch dim). `num_classes` is the label count
    when the data is labeled: the teacher must predict exactly that many classes; None skips the check
    (for state_dict/safetensors teachers the class count is then read off the weights, or from
    `architecture.kwargs['num_classes']`).
    """
    detected = detect_format(path)  # always: it is also what refuses unsafe pickles
    if format is not None and format != detected:
        raise UserError(
            f"teacher.format is {format!r} but the file is {detected!r}; omit teacher.format to use the "
            "detected one, or upload the intended file.",
            code="format_mismatch",
            param="teacher.format",
        )
    target = resolve_device(device)
    input_shape = tuple(int(d) for d in input_shape)
    teacher = _load(
        detected, path, architecture=architecture, input_shape=input_shape, num_classes=num_classes, device=target
    )

    outputs = teacher.output_size(input_shape)
    if num_classes is not None and outputs != num_classes:
        raise UserError(
            f"the teacher outputs {outputs} logits per example but the data has {num_classes} classes; "
            "use a teacher trained on these classes or a dataset with its labels.",
            code="shape_mismatch",
            param="teacher",
        )
    teacher.input_shape = input_shape
    teacher.num_classes = outputs
    return teacher


def _load(
    format: TeacherFormat,
    path: str,
    *,
    architecture: ArchitectureSpec | None,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    device: torch.device,
) -> Teacher:
    # Imported per format so a job that never meets ONNX never imports onnxruntime.
    if format == "torchscript":
        from distill.teachers.torchscript import load_torchscript

        return load_torchscript(path, device=device)
    if format == "onnx":
        from distill.teachers.onnx_runtime import OnnxTeacher

        return OnnxTeacher(path, device=device)
    if format == "safetensors":
        from distill.teachers.safetensors_weights import load_safetensors_teacher

        return load_safetensors_teacher(
            path, architecture=architecture, input_shape=input_shape, num_classes=num_classes, device=device
        )
    from distill.teachers.state_dict import load_state_dict_teacher

    return load_state_dict_teacher(
        path, architecture=architecture, input_shape=input_shape, num_classes=num_classes, device=device
    )
