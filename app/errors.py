"""The one error base class of the service. Services raise these; `app.error_handlers` renders them.

Every non-2xx response is the envelope `{"error": {"code", "message", "param"}}` (DESIGN §2, Errors).
"""

from __future__ import annotations

from typing import ClassVar

from distill.errors import UserError


class AppError(Exception):
    """A failure the client can act on: an HTTP status, a machine-readable code, a message, the field at fault."""

    status_code: ClassVar[int] = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "param": self.param}


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
