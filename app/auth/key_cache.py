"""Recently verified API keys, per API process: most requests then need no database round trip for auth.

Polling a job is the API's hottest path, and looking the key up was half its work (a thread hop, a
connection and a query of its own before the job's). A key verified in the last `key_cache_seconds` is
trusted without a lookup, so a revoked key stops working within that many seconds (default 5) in every
API process. Failures are never cached: a key created a moment ago works at once.
"""

from __future__ import annotations

import hashlib
import threading
import time


class KeyCache:
    def __init__(self, ttl_seconds: float, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[str, float]] = {}  # sha256(Authorization) -> (tenant, expires)
        self._lock = threading.Lock()

    @staticmethod
    def _key(authorization: str) -> bytes:
        return hashlib.sha256(authorization.encode("utf-8", "surrogatepass")).digest()

    def tenant(self, authorization: str | None) -> str | None:
        """The tenant of a header verified within the TTL, else None (look it up)."""
        if not authorization or self.ttl <= 0:
            return None
        entry = self._entries.get(self._key(authorization))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def remember(self, authorization: str, tenant: str) -> None:
        if self.ttl <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._entries) >= self.max_entries:  # drop the expired ones, else start over
                self._entries = {k: v for k, v in self._entries.items() if v[1] >= now}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[self._key(authorization)] = (tenant, now + self.ttl)
