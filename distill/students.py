"""The one place a job's student network is made: a registry architecture, or an uploaded ONNX graph.

An ONNX student (any framework) is converted to a trainable torch module (distill/onnx), checked against
onnxruntime on the uploaded graph within 1e-4 before anything trains, then either keeps the graph's
weights (`init: weights`) or is re-initialised layer by layer (`init: random`, from the job's seed).
"""

from __future__ import annotations

import torch
from torch import nn

from distill.config import StudentSpec
from distill.errors import UserError
from distill.models import build_model


def build_student(spec: StudentSpec, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Weights come from torch's global generator: the caller seeds it for a repeatable run."""
    if spec.architecture is not None:
        return build_model(spec.architecture, input_shape=input_shape, num_classes=num_classes)
    from distill.onnx import check_against_onnxruntime, load_onnx_graph, reinitialise

    if spec.path is None:
        raise UserError("the engine needs student.path (a local ONNX file)", param="student.path")
    module = load_onnx_graph(spec.path, param="student.path")
    example = torch.randn((4, *input_shape), generator=torch.Generator().manual_seed(0))  # leaves the RNG alone
    try:
        check_against_onnxruntime(module, spec.path, example, param="student.path")
    except (RuntimeError, ValueError, IndexError) as exc:  # torch rejected the data's shape
        raise UserError(
            f"the ONNX student cannot process inputs of shape {tuple(input_shape)}: {' '.join(str(exc).split())[:300]}",
            code="shape_mismatch",
            param="student.path",
        ) from None
    with torch.no_grad():
        module.eval()
        out = module(example)
    if tuple(out.shape) != (4, num_classes):
        raise UserError(
            f"the ONNX student returns outputs of shape {tuple(out.shape[1:])}, expected ({num_classes},) class scores",
            code="shape_mismatch",
            param="student.path",
        )
    module.train()
    if spec.init == "random":
        reinitialise(module)
    return module
