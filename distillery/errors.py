"""The one exception of the client: what the API's error envelope says, or why no answer came."""

from __future__ import annotations

from typing import Any

import httpx


class DistilleryError(Exception):
    """A non-2xx answer, built from its envelope `{"error": {"code", "message", "param"}}` (DESIGN §3).

    `status` is the HTTP status, or None when no answer came (code `connection_error`) or the client gave up
    waiting (code `timeout`, the subclass `WaitTimeout`).
    """

    def __init__(self, status: int | None, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param

    @property
    def is_client_error(self) -> bool:
        """The request was wrong (4xx): sending it again as is will not help."""
        return self.status is not None and 400 <= self.status < 500

    def __str__(self) -> str:
        # The param is the field the client sent (e.g. knowledge.terms[1].layers[0].teacher); pydantic's
        # messages do not always name it, the service's own ones often do.
        if self.param and self.param not in self.message:
            return f"{self.param}: {self.message}"
        return self.message

    def __repr__(self) -> str:
        fields = f"status={self.status!r}, code={self.code!r}, message={self.message!r}, param={self.param!r}"
        return f"{type(self).__name__}({fields})"

    @classmethod
    def from_response(cls, response: httpx.Response) -> DistilleryError:
        """The response's envelope; a body that is not one (a proxy's HTML page) still gives a readable error."""
        try:
            body: Any = response.json()
            error = body["error"]
            return cls(response.status_code, str(error["code"]), str(error["message"]), error.get("param"))
        except (ValueError, KeyError, TypeError):
            text = response.text.strip()[:300] or response.reason_phrase
            return cls(response.status_code, "http_error", f"HTTP {response.status_code}: {text}")

    @classmethod
    def from_transport(cls, exc: httpx.TransportError, url: httpx.URL | str) -> DistilleryError:
        return cls(None, "connection_error", f"cannot reach {url}: {exc or type(exc).__name__}")


class WaitTimeout(DistilleryError):
    """`wait()` gave up: the job had not finished within the timeout (it goes on running)."""

    def __init__(self, job_id: str, status: str, timeout: float) -> None:
        super().__init__(None, "timeout", f"job {job_id} is still {status} after {timeout:g}s")
        self.job_id = job_id
