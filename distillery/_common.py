"""What the sync and the async client share: paths, headers, the retry rule, download targets."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import quote

import httpx

from distillery.errors import DistilleryError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
# A reader of the event stream waits this long for a line; the server sends a keepalive every 15 s.
STREAM_READ_TIMEOUT = 60.0
CHUNK_BYTES = 1 << 20
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')

try:
    __version__ = version("distillery")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0"


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"distillery-client/{__version__}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def url_from_env(url: str | None) -> str:
    return (url or os.environ.get("DISTILLERY_URL") or DEFAULT_URL).rstrip("/")


def key_from_env(api_key: str | None) -> str | None:
    return api_key or os.environ.get("DISTILLERY_API_KEY") or None


def path(*parts: str) -> str:
    """`/v1/jobs/{id}/…` with each id quoted: ids are opaque strings and must never change the route."""
    return "/v1/" + "/".join(quote(part, safe="") for part in parts)


def new_idempotency_key() -> str:
    return f"distillery-{uuid.uuid4().hex}"


def is_retryable(method: str, headers: Mapping[str, str] | None) -> bool:
    """Only what is safe to send twice: reads, and a submission carrying an Idempotency-Key."""
    return method in ("GET", "HEAD") or bool(headers and "Idempotency-Key" in headers)


def retry_delay(attempt: int, response: httpx.Response | None) -> float | None:
    """Seconds to wait before retrying, or None if this answer is final. Retried: no answer at all, and 503
    (the service says the database is away for a moment; its Retry-After is honoured up to 10 s)."""
    if response is None:
        return 0.5 * 2**attempt
    if response.status_code != 503:
        return None
    try:
        return min(float(response.headers.get("Retry-After", "1")), 10.0)
    except ValueError:
        return 1.0


def checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise DistilleryError.from_response(response)
    return response


def etag_sha256(response: httpx.Response) -> str | None:
    """An artifact's ETag is its sha256 (DESIGN §3): the download is checked against it."""
    match = _SHA256.match(response.headers.get("ETag", "").strip())
    return match.group(1) if match else None


def download_target(dest: str | os.PathLike[str], name: str) -> Path:
    """`dest` is a folder (existing, or written with a trailing slash) to put `name` in, or the file itself."""
    if Path(name).name != name or name in ("", ".", ".."):
        raise DistilleryError(None, "invalid_name", f"refusing to write an artifact named {name!r}")
    target = Path(dest)
    if target.is_dir() or str(dest).endswith(("/", os.sep)):
        target.mkdir(parents=True, exist_ok=True)
        return target / name
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def check_digest(name: str, actual: str, *expected: str | None) -> None:
    for want in expected:
        if want and want.lower() != actual:
            raise DistilleryError(
                None, "checksum_mismatch", f"{name}: downloaded sha256 {actual} differs from the expected {want}"
            )
