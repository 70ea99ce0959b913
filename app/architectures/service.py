"""The student registry over HTTP: what architectures exist, and their layers for a given input.

Building a registry architecture runs only our own code, so it happens in the API process, on the meta
device: shapes flow through the dry run, and no memory is allocated whatever the kwargs ask for (the
engine's parameter cap still applies). Uploaded models are another matter: see app/probe.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

from app.errors import InvalidRequest, NotFound
from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.models import STUDENTS

# Caps on a listing's input: one example of at most MAX_INPUT_ELEMENTS values in up to MAX_INPUT_DIMS
# dimensions, so a probe's dry run (on the CPU) stays small however the query is written.
MAX_INPUT_DIMS = 4
MAX_INPUT_SIDE = 4096
MAX_INPUT_ELEMENTS = 1 << 24
MAX_KWARGS_CHARS = 4096
_REQUIRED = "<required>"


def list_architectures() -> list[dict[str, Any]]:
    out = []
    for entry in STUDENTS.describe():
        params = entry["params"]
        out.append(
            {
                "name": entry["name"],
                "description": entry["description"],
                "parameters": {k: None if v == _REQUIRED else v for k, v in params.items()},
                "required": [k for k, v in params.items() if v == _REQUIRED],
            }
        )
    return out


def architecture_layers(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The layer listing of registry architecture `name`; 404 for an unknown name, 422 naming the query param."""
    from distill.layers import architecture_layers as listing

    if name not in STUDENTS:
        raise NotFound(
            f"unknown architecture {name!r}; known: {', '.join(STUDENTS.names())}",
            code="unknown_architecture",
            param="name",
        )
    try:
        return listing(ArchitectureSpec(name=name, kwargs=kwargs), input_shape=input_shape, num_classes=num_classes)
    except UserError as exc:
        raise InvalidRequest.from_user_error(exc, param=exc.param if exc.param != "architecture" else "name") from None


def parse_input_shape(text: str, *, param: str = "input_shape") -> tuple[int, ...]:
    """`C,H,W` (or `F`, up to MAX_INPUT_DIMS values) → a tuple; 422 naming `param` for anything else."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidRequest(
            f"{param} must be positive integers separated by commas, e.g. 1,28,28; got {text!r}", param=param
        ) from None
    check_input_shape(shape, param=param)
    return shape


def check_input_shape(shape: tuple[int, ...], *, param: str = "input_shape") -> None:
    if not 1 <= len(shape) <= MAX_INPUT_DIMS or any(not 1 <= d <= MAX_INPUT_SIDE for d in shape):
        raise InvalidRequest(
            f"{param} must have 1 to {MAX_INPUT_DIMS} dimensions of 1 to {MAX_INPUT_SIDE} each, got {list(shape)}",
            param=param,
        )
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise InvalidRequest(
            f"{param} {list(shape)} has {math.prod(shape):,} values per example; at most {MAX_INPUT_ELEMENTS:,}",
            param=param,
        )


def parse_kwargs(text: str | None, *, param: str = "kwargs") -> dict[str, Any]:
    """A JSON object of builder arguments (as in `architecture.kwargs` of a job); {} when absent."""
    if text is None or text == "":
        return {}
    if len(text) > MAX_KWARGS_CHARS:
        raise InvalidRequest(f"{param} may have at most {MAX_KWARGS_CHARS} characters", param=param)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest(
            f'{param} must be a JSON object, e.g. {{"hidden": [64]}}; got {text!r}', param=param
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f'{param} must be a JSON object, e.g. {{"hidden": [64]}}; got {text!r}', param=param)
    return value
