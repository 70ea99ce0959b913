"""One place that turns every failure into the error envelope, so no client mistake ever reads as a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError

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


def error_param(loc: tuple[int | str, ...] | list[int | str]) -> str | None:
    """pydantic's location → the dotted field path a client sent: ('body', 'knowledge', 'lambda') → knowledge.lambda."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(part) for part in parts) or None


async def app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return envelope(exc.status_code, exc.code, exc.message, exc.param)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return envelope(422, "invalid_request", "the request is invalid")
    first = errors[0]
    param = error_param(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
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


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
