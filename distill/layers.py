"""Which layers a knowledge term may name: the module paths of a network, with their output shapes.

Three sources, the forms of `python -m distill layers` and the layers endpoints of the service:
- a registry architecture (`architecture_layers`): built on the meta device, so listing a large network
  allocates nothing and runs no arithmetic; only shapes flow through the dry run;
- a checkpoint (`checkpoint_layers`): loaded exactly as a job loads its teacher (weights-only reading,
  the same format checks), then one dry run on zeros; an ONNX graph lists its tensor names (what knowledge
  terms name for it). This runs an uploaded model, so the service only ever calls it in a sandboxed probe
  process, never in the API;
- an ONNX student (`student_layers`): converted exactly as a job converts it (distill/onnx), then one dry
  run; its layers are the graph's tensor names. Also only ever run in the probe.

A listing is `{"input_shape": [...], "data": [{"path", "shape", "type"}], "note": str | None}`; `note`
says when the format shows fewer layers than a knowledge term could read (or none at all).

Errors are UserErrors whose `param` is the option they are about (`architecture`, `kwargs`,
`input_shape`, `num_classes`, `format`, `checkpoint`, `student`), which the service maps to its query
parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distill.config import ArchitectureSpec, TeacherFormat
from distill.errors import UserError
from distill.models import STUDENTS, build_model
from distill.models.taps import list_layers

Listing = dict[str, Any]

TORCHSCRIPT_NOTE = (
    "TorchScript teacher: module paths only, without shapes (a scripted graph runs no forward hooks), and "
    "feature and relation knowledge cannot tap it: export it to ONNX (its layers are then named by tensor "
    "name) or upload a state_dict / safetensors file with its architecture for those. Response knowledge "
    "works as is."
)
ONNX_EMPTY_NOTE = "ONNX teacher: no node output of this graph is a per-example tensor, so there is nothing to tap."

# The option each engine error is about, by code first (a shape problem is the input's, whichever object
# the engine blames), then by the engine's own param.
_PARAM_BY_CODE = {
    "shape_mismatch": "input_shape",
    "invalid_kwargs": "kwargs",
    "model_too_large": "kwargs",
    "unknown_architecture": "architecture",
    "missing_architecture": "architecture",
    "architecture_mismatch": "architecture",
    "missing_num_classes": "kwargs",
    "format_mismatch": "format",
}
_PARAM_BY_ENGINE_PARAM = {"teacher": "checkpoint", "teacher.format": "format", "teacher.architecture": "architecture"}


def as_option_error(exc: UserError) -> UserError:
    """The engine's error with `param` naming the option (see the module docstring) instead of a job field."""
    param = _PARAM_BY_CODE.get(exc.code) or _PARAM_BY_ENGINE_PARAM.get(exc.param or "", exc.param)
    return UserError(exc.message, code=exc.code, param=param)


def architecture_layers(arch: ArchitectureSpec, *, input_shape: Sequence[int], num_classes: int) -> Listing:
    """Every module of registry architecture `arch` for examples of `input_shape`, with output shapes.

    The engine's own checks apply (known name and kwargs, the parameter cap, a dry run that must give
    `num_classes` scores), all on the meta device.
    """
    shape = tuple(int(d) for d in input_shape)
    try:
        STUDENTS.check_kwargs(arch.name, arch.kwargs, param="architecture")  # misspelt names: about kwargs
    except UserError as exc:
        raise as_option_error(exc) from None
    try:
        with torch.device("meta"):
            model = build_model(arch, input_shape=shape, num_classes=num_classes, param="architecture")
            layers = list_layers(model, shape)
    except UserError as exc:
        error = as_option_error(exc)
        # A builder refusing the input's shape or class count reports it as a bad argument (names are
        # checked above, so this is about a value); unless kwargs gave it, it came from the option itself.
        for option in ("input_shape", "num_classes"):
            if error.param == "kwargs" and option in error.message and option not in arch.kwargs:
                error.param = option
        raise error from None
    return {"input_shape": list(shape), "data": layers, "note": None}


def checkpoint_layers(
    path: str,
    *,
    format: TeacherFormat | None,
    architecture: ArchitectureSpec | None,
    input_shape: Sequence[int],
) -> Listing:
    """The layers of the checkpoint at `path`, loaded as a teacher is (on the CPU, weights only)."""
    from distill.teachers import load_teacher

    shape = tuple(int(d) for d in input_shape)
    try:
        teacher = load_teacher(
            path, format=format, architecture=architecture, input_shape=shape, num_classes=None, device="cpu"
        )
    except UserError as exc:
        raise as_option_error(exc) from None
    module = teacher.module
    if module is None:  # ONNX: the graph's tensor names, with shapes from one onnxruntime dry run
        try:
            data = teacher.layers(shape)
        except UserError as exc:
            raise as_option_error(exc) from None
        return {"input_shape": list(shape), "data": data, "note": None if data else ONNX_EMPTY_NOTE}
    if isinstance(module, torch.jit.ScriptModule):
        paths = [
            {"path": name, "shape": None, "type": getattr(sub, "original_name", type(sub).__name__)}
            for name, sub in module.named_modules()
            if name
        ]
        return {"input_shape": list(shape), "data": paths, "note": TORCHSCRIPT_NOTE}
    return {"input_shape": list(shape), "data": teacher.layers(shape), "note": None}


def student_layers(path: str, *, input_shape: Sequence[int]) -> Listing:
    """The tensor names of an ONNX student as the engine converts it (what its knowledge terms name), with
    their shapes from one dry run of the converted module. Errors about the graph have `param` 'student'."""
    from distill.onnx import load_onnx_graph

    shape = tuple(int(d) for d in input_shape)
    module = load_onnx_graph(path, param="student")
    try:
        data = list_layers(module, shape)
    except (RuntimeError, ValueError, IndexError) as exc:  # torch refused the input's shape somewhere
        raise UserError(
            f"the ONNX student cannot process inputs of shape {shape}: {' '.join(str(exc).split())[:300]}",
            code="shape_mismatch",
            param="input_shape",
        ) from None
    return {"input_shape": list(shape), "data": data, "note": None}


def format_table(listing: Listing) -> str:
    """The listing for a terminal: one row per layer (path, shape, type), then the note if any."""
    rows = [
        (
            entry["path"],
            "?" if entry["shape"] is None else "(" + ", ".join(map(str, entry["shape"])) + ")",
            entry["type"],
        )
        for entry in listing["data"]
    ]
    header = ("path", "shape", "type")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"input_shape {tuple(listing['input_shape'])}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    if listing.get("note"):
        lines.append(str(listing["note"]))
    return "\n".join(lines)
