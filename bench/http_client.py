"""A minimal HTTP/1.1 client for the service benchmarks: one keep-alive connection, raw asyncio streams.

Why not httpx: its async client costs a large share of what the endpoint under test does (2.5 ms of CPU
per POST /v1/jobs against 6-8 ms in the API; for GET /v1/jobs/{id}, more than the server), and the clients
share the API's cores, so a benchmark driven by it measures its own clients too (docs/BENCHMARKS.md). Here
a request is its bytes, one write, and a read of the status line, the headers and a Content-Length body.
Only what our API answers is understood: no chunked bodies, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Origin:
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)


def build_request(
    method: str, origin: Origin, path: str, *, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> bytes:
    """The bytes of one request; a body (JSON) gets its Content-Type and Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {origin.host}:{origin.port}", "Accept: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one request on a kept-alive connection; (status code, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError(f"a {value.strip().decode()} body: this client reads Content-Length bodies only")
    return status, await reader.readexactly(length)
