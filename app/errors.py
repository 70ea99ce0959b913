"""The one error base class of the service. Services raise these; `app.error_handlers` renders them.

Every non-2xx response is the envelope `{"error": {"code", "message", "param"}}` (DESIGN §2, Errors).
"""

from __future__ import annotations

from typing import ClassVar

from distill.errors import DistillError, UserError


class AppError(DistillError):
    """A failure the client can act on: an HTTP status on top of the engine's (code, message, param) triple."""

    status_code: ClassVar[int] = 400
    code = "bad_request"
    # Response headers that go with the error (WWW-Authenticate, Retry-After).
    headers: dict[str, str] | None = None


class Unauthorized(AppError):
    """No API key, or one that is unknown or revoked (DESIGN §3)."""

    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 (never mutated)


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class InvalidRequest(AppError):
    """The request is well-formed but cannot be accepted (a missing file, a spec the engine refuses)."""

    status_code = 422
    code = "invalid_request"

    @classmethod
    def from_user_error(cls, error: UserError, *, param: str | None = None) -> InvalidRequest:
        """Wrap the engine's UserError, keeping its code and message; `param` overrides the engine's field."""
        return cls(error.message, code=error.code, param=param if param is not None else error.param)


class PayloadTooLarge(AppError):
    status_code = 413
    code = "file_too_large"


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"


class TooManyRequests(AppError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message, code=code, param=param)
        self.headers = {"Retry-After": str(retry_after)}
