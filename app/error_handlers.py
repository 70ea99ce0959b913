"""One place that turns every failure into the error envelope, so no client mistake ever reads as a 500."""

from __future__ import annotations

import logging
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError
from distill.config import Term

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "file_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}


def envelope(status_code: int, code: str, message: str, param: str | None = None, **kwargs: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "param": param}}, status_code, **kwargs)


def _union_tags() -> frozenset[str]:
    """The `type` values of the knowledge-term union: pydantic puts the chosen one in the error location."""
    union, *_ = get_args(Term)
    return frozenset(str(member.model_fields["type"].default) for member in get_args(union))


_UNION_TAGS = _union_tags()
_LOCATION_ROOTS = ("body", "query", "path", "header", "cookie")


def _is_union_member(part: str, previous: int | str | None) -> bool:
    """A segment pydantic inserts to say which member of a union failed, not a field the client wrote:
    a discriminated union's tag after a list index (`terms`, 1, `feature`), or a plain union's member,
    named by its type (`str`, `list[str]`)."""
    if isinstance(previous, int) and part in _UNION_TAGS:
        return True
    return part in ("str", "int", "float", "bool", "none") or "[" in part


def error_param(loc: tuple[int | str, ...] | list[int | str], *, error_type: str | None = None) -> str | None:
    """pydantic's location → the field path a client sent, in the contract's form: list indexes in brackets,
    union members dropped. ('body', 'knowledge', 'terms', 1, 'feature', 'layers', 0, 'teacher', 'str') →
    knowledge.terms[1].layers[0].teacher; a union's missing or unknown tag names the tag field itself.
    Query, path and header parameters are named as sent (`input_shape`, `Idempotency-Key`)."""
    parts = list(loc)
    in_body = bool(parts) and parts[0] == "body"
    if parts and parts[0] in _LOCATION_ROOTS:
        parts = parts[1:]
    out = ""
    previous: int | str | None = None
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (in_body and _is_union_member(part, previous)):
            out += f".{part}" if out else part
        previous = part
    if error_type in ("union_tag_invalid", "union_tag_not_found") and out:
        out += ".type"
    return out or None


async def app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return envelope(exc.status_code, exc.code, exc.message, exc.param, headers=exc.headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return envelope(422, "invalid_request", "the request is invalid")
    first = errors[0]
    param = error_param(first.get("loc", ()), error_type=first.get("type"))
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "value_error" and "error" in first.get("ctx", {}):
        message = str(first["ctx"]["error"])  # a validator's own sentence, without pydantic's "Value error, "
    if first.get("type") == "json_invalid":
        return envelope(422, "invalid_json", f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
    if first.get("type") == "missing":
        message = f"{param} is required" if param else "a required value is missing"
    return envelope(422, "invalid_request", message, param)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return envelope(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Our bug, not the client's: the traceback goes to the log, the client gets a generic message.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(500, "internal_error", "internal server error; it has been logged")


DATABASE_RETRY_AFTER_SECONDS = 5


async def database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The database is unreachable (down, restarting, the pool exhausted): 503 with Retry-After, not 500.

    Any other database error (a constraint, bad data) is our bug and stays a logged 500."""
    unreachable = isinstance(exc, OperationalError | SQLAlchemyTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    if not unreachable:
        return await internal_error_handler(request, exc)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
    return envelope(
        503,
        "service_unavailable",
        "the database is unavailable; retry shortly",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(SQLAlchemyTimeoutError, database_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
