"""One attempt at delivering a webhook: POST the signed body, follow a few redirects, say what happened.

Redirects are followed here rather than by httpx, so that each target is checked by the address guard
before anything is sent to it, and so that the body is POSTed again (a webhook is a POST whatever the
status; browsers' 301/302 → GET rewrite would drop the event). The connection itself is guarded too
(ssrf.GuardedTransport). The response body is never read: only its status matters, and a receiver must not
be able to make us download anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from app.webhooks.ssrf import GuardedTransport, IPNetwork, UnsafeUrl, check_url

USER_AGENT = "Distillery-Webhooks/1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Attempt:
    status_code: int | None  # None: no response (refused, unreachable, timed out)
    error: str | None  # None: delivered (a 2xx)

    @property
    def delivered(self) -> bool:
        return self.error is None


def make_client(*, allowed: Sequence[IPNetwork], timeout: float) -> httpx.Client:
    """The dispatcher's client: guarded connections, no redirects of its own, no environment proxies."""
    return httpx.Client(
        transport=GuardedTransport(allowed=allowed),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def post(
    client: httpx.Client,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    allowed: Sequence[IPNetwork],
    max_redirects: int,
) -> Attempt:
    """POST `body` to `url`; a 2xx is delivered, anything else is an Attempt with the reason."""
    for _ in range(max_redirects + 1):
        try:
            with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                location = response.headers.get("location")
        except httpx.HTTPError as exc:
            return Attempt(None, _short(f"{type(exc).__name__}: {exc}"))
        if 200 <= status < 300:
            return Attempt(status, None)
        if status not in REDIRECT_STATUSES or not location:
            return Attempt(status, f"HTTP {status}")
        target = urljoin(url, location)
        try:
            check_url(target, allowed)
        except UnsafeUrl as exc:
            return Attempt(status, _short(f"redirect to {target} refused: {exc}"))
        url = target
    return Attempt(status, f"more than {max_redirects} redirects")


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
