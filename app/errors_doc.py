"""The error envelope as an OpenAPI schema, so /docs shows what every non-2xx body looks like."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, invalid_request, idempotency_conflict.")
    message: str = Field(description="What went wrong and, where possible, how to fix it.")
    param: str | None = Field(None, description="The offending field as a dotted path, e.g. knowledge.temperature.")


class ErrorEnvelope(BaseModel):
    error: ErrorBody


_DESCRIPTIONS = {
    401: "No valid API key: send `Authorization: Bearer <key>`",
    404: "Not found (or owned by another tenant)",
    409: "Conflict with the object's current state",
    413: "The upload or body is larger than the limit, or the tenant's storage is full",
    415: "Not a multipart/form-data body",
    429: "Too many jobs queued or running for this tenant (see Retry-After)",
    416: "The Range header is malformed, asks for too many ranges, or for none inside the file",
    422: "Invalid request: `param` names the field",
    503: "A dependency is down",
}


def error_responses(*status_codes: int, validation: bool = True) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status documented with the envelope. 422 is included unless
    `validation=False` (a route without parameters), replacing FastAPI's own HTTPValidationError schema."""
    codes = sorted({*status_codes, 422} if validation else set(status_codes))
    return {code: {"model": ErrorEnvelope, "description": _DESCRIPTIONS.get(code, "Error")} for code in codes}


def openapi_with_bearer_auth(app: Any) -> dict[str, Any]:
    """FastAPI's schema, plus the bearer-key scheme on every /v1 operation (the tenant dependency reads the
    header itself, so FastAPI does not know it is auth). Built once and cached, as FastAPI does."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "distillery keys create --tenant NAME"}
        }
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
    return dict(app.openapi_schema)
