"""Errors the engine raises, and the exit codes the command maps them to.

A `UserError` is the caller's mistake (bad data, a shape mismatch, a diverged loss): its message is shown
to the user as is. Anything else escaping the engine is our bug and is reported as `internal_error`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_CANCELLED = 3


class DistillError(Exception):
    """Base class: carries a machine-readable `code`, a human `message` and the offending `param`."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "param": self.param}


class UserError(DistillError):
    """The job cannot run as specified; the message says what to change."""

    code = "invalid_job"


class Cancelled(Exception):
    """The run was asked to stop (SIGTERM); a checkpoint was written before raising."""
