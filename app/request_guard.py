"""The request guard: what every request must be before routing, so no client value reaches the database, numpy
or torch unchecked (docs/RELIABILITY.md, "Hostile inputs").

- Path and query parameters: no control characters (Postgres refuses NUL in text, which used to be a 500)
  and at most `max_param_chars`; a failure is a 422 naming the parameter as the client sent it.
- `Idempotency-Key`: printable.
- JSON bodies: at most `max_json_body_bytes` (413 before parsing), parsed strictly: bare NaN / Infinity
  and numbers beyond float range (`1e999`, which Python reads as inf) are `invalid_json`, as is nesting
  deeper than `max_json_depth`; a string with NUL or a lone surrogate (neither can be stored) is a 422
  naming its field. The body is then handed on unchanged, and FastAPI parses it as before.

Multipart uploads are streamed (app/files/upload.py) and pass through untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Router, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import envelope
from app.settings import Settings

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHECKED_HEADERS = ("idempotency-key", "last-event-id")
_READ_HEADERS = frozenset(name.encode() for name in (*_CHECKED_HEADERS, "content-type", "content-length"))
# C0 controls and DEL (app.files.upload.has_control_chars), as one regex: the guard runs on every request.
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")


class Refused(Exception):
    def __init__(self, status_code: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.code, self.message, self.param = status_code, code, message, param


class RequestGuard:
    """Pure ASGI middleware (a BaseHTTPMiddleware would buffer streamed uploads and downloads)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, router: Router) -> None:
        self.app, self.settings, self.router = app, settings, router
        self._patterns: list[re.Pattern[str]] | None = None  # built on the first request: routes come later

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_params(scope)
            headers = _read_headers(scope)
            self._check_headers(headers)
            if scope["method"] in _BODY_METHODS and _is_json(headers.get("content-type")):
                body = await self._read_body(receive, headers.get("content-length"))
                if body:
                    check_json_body(body, max_depth=self.settings.max_json_depth)
                receive = _replay(body, receive)
        except Refused as refused:
            response = envelope(refused.status_code, refused.code, refused.message, refused.param)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_params(self, scope: Scope) -> None:
        limit = self.settings.max_param_chars
        path = scope.get("path", "")
        # Path parameters are parts of the path: when it is short and clean, so are they, and the routes need
        # not be matched here (the common case, and most of the guard's cost when it was done every time).
        if len(path) > limit or _CONTROL_CHARS.search(path):
            if self._patterns is None:
                self._patterns = route_patterns(self.router.routes)
            for name, value in _path_params(self._patterns, path).items():
                _check_value("path", name, value, limit)
        query = scope.get("query_string", b"").decode("latin-1")
        for name, value in parse_qsl(query, keep_blank_values=True) if query else ():
            if _CONTROL_CHARS.search(name):
                raise Refused(422, "invalid_request", "a query parameter name contains control characters")
            _check_value("query", name, value, limit)

    def _check_headers(self, headers: dict[str, str]) -> None:
        for name in _CHECKED_HEADERS:
            value = headers.get(name)
            if value is not None and (_CONTROL_CHARS.search(value) or len(value) > self.settings.max_param_chars):
                sent = "Idempotency-Key" if name == "idempotency-key" else "Last-Event-ID"
                raise Refused(422, "invalid_request", f"header {sent} contains control characters or is too long", sent)

    async def _read_body(self, receive: Receive, content_length: str | None) -> bytes:
        limit = self.settings.max_json_body_bytes
        too_large = Refused(413, "body_too_large", f"the JSON body is larger than the limit of {limit:,} bytes")
        if content_length is not None and content_length.strip().isdigit() and int(content_length) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _read_headers(scope: Scope) -> dict[str, str]:
    """The headers the guard looks at, by lower-case name; the others are not decoded."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in ((k.lower(), v) for k, v in scope.get("headers", []))
        if name in _READ_HEADERS
    }


def _check_value(where: str, name: str, value: str, limit: int) -> None:
    if _CONTROL_CHARS.search(value):
        raise Refused(422, "invalid_request", f"{where} parameter {name!r} contains control characters", name)
    if len(value) > limit:
        raise Refused(422, "invalid_request", f"{where} parameter {name!r} is longer than {limit:,} characters", name)


def _path_params(patterns: list[re.Pattern[str]], path: str) -> dict[str, str]:
    """The path parameters of the first route whose path matches (none if no route does: that is a 404)."""
    for pattern in patterns:
        match = pattern.match(path)
        if match is not None:
            return match.groupdict()
    return {}


def route_patterns(routes: Sequence[Any], prefix: str = "") -> list[re.Pattern[str]]:
    """Path regexes of every route, included routers flattened (FastAPI wraps them; their routes carry the
    full path already, plus any prefix given at include time)."""
    out: list[re.Pattern[str]] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            out += route_patterns(included.routes, prefix + str(getattr(context, "prefix", "") or ""))
        elif isinstance(getattr(route, "path", None), str) and "{" in route.path:
            out.append(compile_path(prefix + route.path)[0])
    return out


def _is_json(content_type: str | None) -> bool:
    """FastAPI parses a body as JSON when it says so, or says nothing at all."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (write a number, or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is beyond the range of a float")
    return value


def check_json_body(body: bytes, *, max_depth: int) -> None:
    """Refuse what json.loads accepts but JSON (and Postgres) does not, then scan the parsed value."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise Refused(422, "invalid_json", f"the body is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the two refusals above, 4300+ digit ints
        raise Refused(422, "invalid_json", f"the body is not valid JSON: {exc}") from None
    _scan(value, max_depth=max_depth)


def _scan(value: Any, *, max_depth: int) -> None:
    """Depth of nesting, and strings that cannot be stored (NUL, lone surrogates), without recursion."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise Refused(422, "invalid_json", f"the body is nested deeper than {max_depth} levels", path or None)
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    _check_string(key, path or None)
                    child_path = f"{path}.{key}" if path else key
                else:
                    child_path = f"{path}[{key}]"
                stack.append((child, child_path, depth + 1))
        elif isinstance(item, str):
            _check_string(item, path or None)


def _check_string(text: str, path: str | None) -> None:
    if "\x00" in text:
        raise Refused(422, "invalid_request", "strings may not contain NUL (\\u0000)", path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(422, "invalid_request", "strings may not contain lone UTF-16 surrogates", path) from None
