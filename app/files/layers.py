"""GET /v1/files/{id}/layers: an uploaded teacher's (or ONNX student's) layers and output shapes, found by the probe.

Listing them means loading the checkpoint and running it once, so it never happens in the API process
(DESIGN §2): the file is looked up here (this tenant's, a teacher), and `python -m distill layers
--checkpoint …` runs in the sandboxed probe (app/probe.py) with read access to that one upload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.architectures.service import check_input_shape, parse_input_shape, parse_kwargs
from app.errors import InvalidRequest
from app.files.service import get_file
from app.probe import ProbeLimits, run_probe
from app.settings import Settings
from distill.errors import UserError
from distill.models import STUDENTS

WEIGHTS_ONLY = ("safetensors", "state_dict")


@dataclass(frozen=True)
class LayersProbe:
    """What the probe needs, read from the database before it runs (it holds no connection meanwhile)."""

    path: Path
    args: list[str]
    # The probe's option → the query parameter the client wrote (or None: about the file itself).
    params: dict[str, str | None]


def plan_file_layers(
    session: Session,
    *,
    tenant: str,
    settings: Settings,
    file_id: str,
    architecture: str | None,
    kwargs: str | None,
    input_shape: str | None,
) -> LayersProbe:
    """Check the request (404 for a file this tenant has not got, 422 naming the query parameter)."""
    file = get_file(session, tenant=tenant, file_id=file_id)
    if file.purpose not in ("teacher", "student"):
        raise InvalidRequest(
            f"file {file_id!r} is a {file.purpose}; layers are listed for models (purpose 'teacher' or 'student')",
            code="wrong_file_purpose",
            param="file_id",
        )
    shape = _input_shape(input_shape, file.meta)
    if file.purpose == "student":
        return _student_plan(settings.upload_path(file.storage_path).resolve(), shape, architecture, kwargs)
    arguments = parse_kwargs(kwargs)
    if architecture is None and arguments:
        raise InvalidRequest("kwargs needs architecture: the name the arguments are for", param="kwargs")
    if architecture is None and file.format in WEIGHTS_ONLY:
        raise InvalidRequest(
            f"a {file.format} file holds weights but no code: give ?architecture=NAME (and kwargs) of the network "
            "they belong to",
            code="missing_architecture",
            param="architecture",
        )
    path = settings.upload_path(file.storage_path).resolve()
    args = ["layers", "--checkpoint", str(path), "--format", file.format, "--input-shape", ",".join(map(str, shape))]
    if architecture is not None:
        if architecture not in STUDENTS:
            raise InvalidRequest(
                f"unknown architecture {architecture!r}; known: {', '.join(STUDENTS.names())}",
                code="unknown_architecture",
                param="architecture",
            )
        args += ["--architecture-json", json.dumps({"name": architecture, "kwargs": arguments})]
    args.append("--json")
    # The name was checked above, so what the probe blames on the architecture (weights that do not fit
    # it, say) is about its kwargs when there are any.
    kwargs_param = "kwargs" if arguments else "architecture"
    return LayersProbe(
        path=path,
        args=args,
        params={
            "input_shape": "input_shape",
            "kwargs": kwargs_param,
            "num_classes": kwargs_param,
            "architecture": kwargs_param,
            "checkpoint": "file_id",
            "format": "file_id",
        },
    )


def _student_plan(path: Path, shape: tuple[int, ...], architecture: str | None, kwargs: str | None) -> LayersProbe:
    """An ONNX student is its own architecture: listed as the engine converts it (`layers --student`)."""
    for name, value in (("architecture", architecture), ("kwargs", kwargs)):
        if value is not None:
            raise InvalidRequest(f"an ONNX student is its own architecture: leave {name} out", param=name)
    args = ["layers", "--student", str(path), "--input-shape", ",".join(map(str, shape)), "--json"]
    return LayersProbe(
        path=path, args=args, params={"input_shape": "input_shape", "student": "file_id", "teacher": "file_id"}
    )


def run_file_layers(plan: LayersProbe, *, settings: Settings) -> dict[str, Any]:
    """Run the probe (blocking: call it from a thread); its UserError becomes a 422 naming the query param."""
    try:
        return run_probe(plan.args, limits=ProbeLimits.from_settings(settings), inputs=[plan.path])
    except UserError as exc:
        # A timeout or a resource limit has no param: the model as a whole did not fit the probe.
        param = plan.params.get(exc.param) if exc.param is not None else None
        raise InvalidRequest(exc.message, code=exc.code, param=param) from None


def _input_shape(text: str | None, meta: dict[str, Any]) -> tuple[int, ...]:
    if text is not None:
        return parse_input_shape(text)
    recorded = meta.get("input_shape")
    if isinstance(recorded, list) and recorded and all(isinstance(d, int) for d in recorded):
        shape = tuple(recorded)
        check_input_shape(shape)
        return shape
    raise InvalidRequest(
        "input_shape is required for this file (its upload records none): give ?input_shape=C,H,W, the shape "
        "of one example without the batch dim",
        param="input_shape",
    )
